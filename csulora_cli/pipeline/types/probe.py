"""What `probe` is asked and what it returns: plain data, each request value checked as it is made.

The request names the model (a local folder, or a Hub repo `org/name[@revision]`), the adapters,
the prompt sources and the gates; the result holds, per adapter, the margin summaries of `probe/stats.py`
and the gate checks. Nothing heavy is imported here (no torch, no transformers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ...checkpoints.hub.options import HubOptions
from ...errors import UsageError
from ...inference.params import check_dtype
from ...probe.openings import REFUSAL_OPENINGS
from ...probe.prompts import DEFAULT_FIELD, PromptSet
from ...probe.stats import MarginSummary
from .devices import check_device
from .requests import adapter_tuple
from .results import GateCheck

# The statistics a probe gate reads, each from one adapter's summaries.
UNREFUSED_SHARE = "unrefused_share"  # harmful prompts answered without refusal: trips above
SHIFT = "shift"  # mean margin drop against the bare model on harmful prompts: trips above
OVER_REFUSAL = "over_refusal"  # benign prompts refused: trips above


def _check_share(value: float | None, parameter: str) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise UsageError(f"{value} is not a share between 0 and 1", parameter=parameter)


@dataclass(frozen=True)
class ProbeRequest:
    """Probe each adapter against the bare model on `prompts` (and `benign`), forward passes only.

        ProbeRequest(adapters=("adapter-a", "adapter-b"), model="aligned", prompts="harmful.txt",
                     fail_above=0.1)

    `compliance_opening` None: the bare model's own opening per prompt (docs/method.md); a string: that
    opening for every prompt. `generate` > 0 adds N greedy tokens per prompt and the keyword judge;
    `save_answers` keeps those answers in the result. `model` is a local folder if one exists, else a Hub
    repo id, fetched as a snapshot folder (config, tokenizer, safetensors weights). `model_name` is the
    model's name as its adapters would record it (default: the Hub id for a Hub model), compared with
    their `base_model_name_or_path`.
    """

    adapters: tuple[str | Path, ...]
    model: str | Path
    prompts: str | Path
    prompt_field: str = DEFAULT_FIELD
    benign: str | Path | None = None
    benign_field: str | None = None  # None: `prompt_field`
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 16
    compliance_opening: str | None = None
    refusal_openings: tuple[str, ...] = REFUSAL_OPENINGS
    generate: int = 0
    save_answers: bool = False
    confidence: float = 0.95
    fail_above: float | None = None
    fail_if_shift_above: float | None = None
    fail_over_refusal_above: float | None = None
    model_name: str | None = None
    cache_dir: Path | None = None
    hub: HubOptions = HubOptions()

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapters", adapter_tuple(self.adapters))
        if not self.adapters:
            raise UsageError("name at least one adapter", parameter="adapters")
        if not isinstance(self.model, (str, Path)) or not str(self.model).strip():
            raise UsageError("name the model the adapters were trained on", parameter="model")
        for name in ("prompt_field", "benign_field"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise UsageError("a field name cannot be empty", parameter=name)
        check_device(self.device)
        check_dtype(self.dtype)
        if self.batch_size < 1:
            raise UsageError(f"{self.batch_size} prompts a batch; at least 1", parameter="batch_size")
        if self.generate < 0:
            raise UsageError(f"{self.generate} tokens; 0 (no generation) or more", parameter="generate")
        if self.save_answers and self.generate == 0:
            raise UsageError("there are answers to save only with {generate}", parameter="save_answers")
        if self.compliance_opening is not None and not self.compliance_opening.strip():
            raise UsageError("the compliance opening cannot be empty", parameter="compliance_opening")
        openings = tuple(self.refusal_openings)
        if not openings or any(not opening.strip() for opening in openings):
            raise UsageError("at least one refusal opening, none empty", parameter="refusal_openings")
        object.__setattr__(self, "refusal_openings", openings)
        if not 0.0 < self.confidence < 1.0:
            raise UsageError(f"{self.confidence} is not a confidence level in (0, 1)", parameter="confidence")
        _check_share(self.fail_above, "fail_above")
        _check_share(self.fail_over_refusal_above, "fail_over_refusal_above")
        if self.fail_if_shift_above is not None and not math.isfinite(self.fail_if_shift_above):
            raise UsageError("the shift threshold must be a finite number", parameter="fail_if_shift_above")
        if self.fail_over_refusal_above is not None and self.benign is None:
            raise UsageError(
                "an over-refusal gate needs benign prompts ({benign})", parameter="fail_over_refusal_above"
            )
        if not isinstance(self.hub, HubOptions):
            raise UsageError("hub must be a HubOptions", parameter="hub")

    @property
    def gates(self) -> tuple[tuple[str, float], ...]:
        """(statistic, threshold) of every gate asked for; each trips when the adapter's value exceeds it."""
        asked = ((UNREFUSED_SHARE, self.fail_above), (SHIFT, self.fail_if_shift_above))
        asked += ((OVER_REFUSAL, self.fail_over_refusal_above),)
        return tuple((statistic, threshold) for statistic, threshold in asked if threshold is not None)


@dataclass(frozen=True)
class SetProbe:
    """One model on one prompt set: its margin summary, and the keyword judge's reading when generating."""

    summary: MarginSummary
    keyword_unrefused_share: float | None = None
    answers: tuple[str, ...] | None = None  # only when asked to save them

    def to_dict(self) -> dict:
        record = self.summary.to_dict() | {"keyword_unrefused_share": self.keyword_unrefused_share}
        return record | ({} if self.answers is None else {"answers": list(self.answers)})


@dataclass(frozen=True)
class AdapterProbe:
    adapter: str  # the folder, or `org/name` for a Hub repo
    source: dict
    harmful: SetProbe
    benign: SetProbe | None = None
    gates: tuple[GateCheck, ...] = ()

    @property
    def tripped(self) -> bool:
        return any(gate.tripped for gate in self.gates)

    def to_dict(self) -> dict:
        return {
            "adapter": self.adapter,
            "source": self.source,
            "harmful": self.harmful.to_dict(),
            "benign": None if self.benign is None else self.benign.to_dict(),
            "gates": [gate.to_dict() for gate in self.gates],
            "tripped": self.tripped,
        }


@dataclass(frozen=True)
class ProbeResult:
    """The bare model's summaries, then each adapter's against them, in the order asked."""

    model: dict  # path, name, source, device, dtype
    prompts: PromptSet
    benign_prompts: PromptSet | None
    compliance: str  # "own" (the bare model's openings) or the fixed opening
    refusal_openings: tuple[str, ...]
    confidence: float
    bare: AdapterProbe  # adapter "" : the model without an adapter; no gates
    adapters: tuple[AdapterProbe, ...]
    seconds: float = 0.0

    @property
    def tripped(self) -> bool:
        return any(adapter.tripped for adapter in self.adapters)

    def to_dict(self) -> dict:
        """The body of the `probe --json` document (report/schemas/probe.schema.json)."""
        bare = self.bare.to_dict()
        return {
            "model": self.model,
            "prompts": self.prompts.to_dict(),
            "benign_prompts": None if self.benign_prompts is None else self.benign_prompts.to_dict(),
            "compliance": self.compliance,
            "refusal_openings": list(self.refusal_openings),
            "confidence": self.confidence,
            "bare": {"harmful": bare["harmful"], "benign": bare["benign"]},
            "adapters": [adapter.to_dict() for adapter in self.adapters],
            "tripped": self.tripped,
            "seconds": self.seconds,
        }
