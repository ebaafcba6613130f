"""The knobs of a correction: plain data, checked when made (the methods themselves are registered in
`methods/__init__.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

SAFELORA_SELECTIONS = ("number", "threshold")


@dataclass(frozen=True)
class CorrectionParams:
    """The knobs of a correction (docs/method.md section 4); each method reads the ones it uses."""

    lambda_: float = 3.0
    eps: float = 0.05
    # Safe LoRA's module selection (docs/method.md section 5), with the reference implementation's defaults.
    safelora_select: str = "number"
    safelora_threshold: float = 0.5
    safelora_layers: int = 10
    # The layer count as a share of the adapter's modules (ceil(share * modules)); replaces safelora_layers.
    safelora_share: float | None = None
    # scale and readd: the factor on the adapter (scale) or on the re-added alignment (readd).
    alpha: float = 0.5
    # merge-safety: the safety adapter (a folder or Hub repo) and, on the selected modules,
    # dW' = (1 - w) dW + w dW_safety.
    safety_adapter: str | None = None
    safety_weight: float = 0.5
    # readd: also on every module of the subspace folder the adapter does not target (added to the adapter).
    readd_everywhere: bool = False
    # The subspace of matrices P_out X P_in instead of P X (docs/method.md section 5).
    two_sided: bool = False

    def __post_init__(self) -> None:
        if not self.lambda_ >= 0.0:  # also refuses NaN
            raise UsageError(f"must be >= 0, got {self.lambda_}", parameter="lambda_")
        if not 0.0 <= self.eps <= 1.0:
            raise UsageError(f"must be in [0, 1], got {self.eps}", parameter="eps")
        if self.safelora_select not in SAFELORA_SELECTIONS:
            choices = " or ".join(SAFELORA_SELECTIONS)
            raise UsageError(f"choose {choices}, got {self.safelora_select!r}", parameter="safelora_select")
        if not -1.0 <= self.safelora_threshold <= 1.0:  # a cosine similarity; also refuses NaN
            raise UsageError(f"must be in [-1, 1], got {self.safelora_threshold}", parameter="safelora_threshold")
        if self.safelora_layers < 0:
            raise UsageError(f"must be at least 0, got {self.safelora_layers}", parameter="safelora_layers")
        if self.safelora_share is not None and not 0.0 < self.safelora_share <= 1.0:
            raise UsageError(f"must be in (0, 1], got {self.safelora_share}", parameter="safelora_share")
        if not 0.0 <= self.alpha < float("inf"):
            raise UsageError(f"must be a finite number >= 0, got {self.alpha}", parameter="alpha")
        if not 0.0 <= self.safety_weight <= 1.0:
            raise UsageError(f"must be in [0, 1], got {self.safety_weight}", parameter="safety_weight")
