"""Hard projection onto the safety subspace: B' = P B (the lambda -> inf, eps = 0 limit of CSULoRA)."""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate, apply_projector
from ..params import CorrectionParams
from . import two_sided


class HardProjection:
    name = "project"
    summary = "keep only the part of the update inside the safety subspace"
    reference_url = "https://arxiv.org/abs/2605.30640"
    selects_modules = False
    supports_two_sided = True
    rewrites_b = True
    needs_right_vectors = False

    def parameters(self, params: CorrectionParams) -> dict:
        return {"two_sided": True} if params.two_sided else {}

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        if params.two_sided:
            return two_sided.projected_b(update, subspace)
        return apply_projector(subspace.basis, update.lora_b)
