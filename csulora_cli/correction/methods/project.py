"""Hard projection onto the safety subspace: B' = P B (the lambda -> inf, eps = 0 limit of CSULoRA)."""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate, apply_projector
from ..params import CorrectionParams
from . import two_sided
from .base import CorrectionMethod


class HardProjection(CorrectionMethod):
    reference_url = "https://arxiv.org/abs/2605.30640"

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        if params.two_sided:
            return two_sided.projected_b(update, subspace)
        return apply_projector(subspace.basis, update.lora_b)
