"""What every correction method provides; one method per file beside this one."""

from __future__ import annotations

from typing import Protocol

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate
from ..params import CorrectionParams


class CorrectionMethod(Protocol):
    """Turns one module's update into a corrected `B'` (only `B` ever changes: docs/method.md section 1)."""

    name: str
    summary: str
    reference_url: str
    # True when whether a module is rewritten depends on every module of the adapter (Safe LoRA): the
    # caller then computes every candidate `corrected_b` and its `similarity` first, and asks `select`
    # which ones to write. Only such methods define `similarity` and `select`.
    selects_modules: bool
    # Whether `--two-sided` has a meaning for the method (a usage error otherwise).
    supports_two_sided: bool
    # False for a method that never changes B (`none`): the adapter is copied and only measured.
    rewrites_b: bool
    # Whether it reads V's right singular vectors (`SelectedSubspace.right`) even when one-sided.
    needs_right_vectors: bool

    def parameters(self, params: CorrectionParams) -> dict:
        """The parameters this method actually uses, for the report."""
        ...

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        """B': (m, r) in the compute dtype, with s * B' @ A the corrected update."""
        ...
