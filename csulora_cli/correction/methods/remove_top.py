"""Remove what the update writes along the subspace's top k directions: B' = (I - P_k) B.

The complement of `project`: on the real benchmark the attack sits in the top output directions of the
alignment's change (docs/method.md section 11), which csulora keeps. `--rank k` sets k. On a
refusal-direction folder (one column per residual-stream writer) it is B' = (I - r r^T) B.
"""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate, apply_projector
from ..params import CorrectionParams
from .base import CorrectionMethod


class RemoveTopDirections(CorrectionMethod):
    def parameters(self, params: CorrectionParams) -> dict:
        return {}  # k is the subspace's own (`--rank`), recorded with it

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        return update.lora_b - apply_projector(subspace.basis, update.lora_b)
