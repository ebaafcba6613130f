"""What every correction method provides; one method per file beside this one.

A method subclasses `CorrectionMethod`, sets whatever differs from the defaults below, and implements
`corrected_b` (and `parameters` unless it reads only `two_sided`). A method that also rewrites A, or adds
rank, implements `corrected_factors` instead. Its name, summary and whether it has a two-sided form are its
entry in the registry (`__init__.py`), which the command line reads without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate
from ..params import CorrectionParams
from . import MethodEntry


@dataclass(frozen=True)
class CorrectedFactors:
    """The corrected module: s * lora_b @ lora_a, with s the module's own LoRA scale (unchanged).

    lora_b: (m, r'), lora_a: (r', n) in the compute dtype; r' = r unless the method adds rank (readd,
    merge-safety), in which case the first r columns of B' pair with the first r rows of A'.
    """

    lora_b: torch.Tensor
    lora_a: torch.Tensor

    @property
    def rank(self) -> int:
        return self.lora_a.shape[0]


@dataclass(frozen=True)
class CompanionUpdate:
    """Another adapter's update of the same module (merge-safety's safety adapter): s * lora_b @ lora_a."""

    lora_b: torch.Tensor  # (m, r_s), compute dtype
    lora_a: torch.Tensor  # (r_s, n)
    scale: float


class CorrectionMethod:
    """Turns one module's update into a corrected one. Most methods change only `B`
    (docs/method.md section 1); those that change A or the rank say so below."""

    reference_url: str = ""  # the paper the method comes from; empty for csulora's own variants
    # True when whether a module is rewritten depends on every module of the adapter (Safe LoRA): the
    # caller then computes every candidate `corrected_b` and its `similarity` first, and asks `select`
    # which ones to write. Only such methods define `similarity`, `note` and `select`.
    selects_modules: bool = False
    # False for a method that never changes B (`none`): the adapter is copied and only measured.
    rewrites_b: bool = True
    # Whether it reads V's right singular vectors (`SelectedSubspace.right`) even when one-sided.
    needs_right_vectors: bool = False
    # True when the output's rank differs from the input's (the adapter file is then rewritten, not patched).
    adds_rank: bool = False
    # True when it reads a second adapter's update of each module (`CompanionUpdate`).
    needs_companion: bool = False
    # False for a method whose rule ignores the subspace (scale): it applies where the subspace is empty too.
    reads_subspace: bool = True

    def __init__(self, entry: MethodEntry):
        self.entry = entry

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def summary(self) -> str:
        return self.entry.summary

    @property
    def supports_two_sided(self) -> bool:
        return self.entry.two_sided

    def parameters(self, params: CorrectionParams) -> dict:
        """The parameters this method actually uses, for the report."""
        return {"two_sided": True} if params.two_sided else {}

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        """B': (m, r) in the compute dtype, with s * B' @ A the corrected update."""
        raise NotImplementedError

    def corrected_factors(
        self,
        update: LowRankUpdate,
        subspace: SelectedSubspace,
        params: CorrectionParams,
        companion: CompanionUpdate | None = None,
    ) -> CorrectedFactors:
        """(B', A'): by default B' from `corrected_b` and A as it was."""
        return CorrectedFactors(self.corrected_b(update, subspace, params), update.lora_a)


def penalty_parameters(params: CorrectionParams) -> dict:
    """The report's parameters of the penalty methods (csulora and its complement)."""
    return {"lambda": params.lambda_, "eps": params.eps} | ({"two_sided": True} if params.two_sided else {})
