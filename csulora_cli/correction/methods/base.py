"""What every correction method provides; one method per file beside this one.

A method subclasses `CorrectionMethod`, sets whatever differs from the defaults below, and implements
`corrected_b` (and `parameters` unless it reads only `two_sided`). Its name, summary and whether it has a
two-sided form are its entry in the registry (`__init__.py`), which the command line reads without torch.
"""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate
from ..params import CorrectionParams
from . import MethodEntry


class CorrectionMethod:
    """Turns one module's update into a corrected `B'` (only `B` ever changes: docs/method.md section 1)."""

    reference_url: str = ""  # the paper the method comes from; empty for csulora's own variants
    # True when whether a module is rewritten depends on every module of the adapter (Safe LoRA): the
    # caller then computes every candidate `corrected_b` and its `similarity` first, and asks `select`
    # which ones to write. Only such methods define `similarity`, `note` and `select`.
    selects_modules: bool = False
    # False for a method that never changes B (`none`): the adapter is copied and only measured.
    rewrites_b: bool = True
    # Whether it reads V's right singular vectors (`SelectedSubspace.right`) even when one-sided.
    needs_right_vectors: bool = False

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


def penalty_parameters(params: CorrectionParams) -> dict:
    """The report's parameters of the penalty methods (csulora and its complement)."""
    return {"lambda": params.lambda_, "eps": params.eps} | ({"two_sided": True} if params.two_sided else {})
