"""CSULoRA: the closest safe update (arXiv 2605.30640; docs/method.md section 4).

X* = argmin_X 1/2 ||X - dW||^2 + lambda/2 sum_i w_i ||(I - P) X v_i||^2, solved in closed form per
direction: the in-subspace part of each direction is kept, the rest scaled by f_i = 1 / (1 + lambda w_i).
"""

from __future__ import annotations

import math

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import (
    LowRankUpdate,
    aligned_fractions,
    apply_projector,
    scaled_directions,
    two_sided_aligned_fractions,
)
from ..params import CorrectionParams
from . import two_sided
from .base import CorrectionMethod, penalty_parameters


def attenuation_factors(aligned: torch.Tensor, lambda_: float, eps: float) -> torch.Tensor:
    """f_i = 1 / (1 + lambda w_i), with w_i = 0 for fully aligned directions (o_i <= eps), else o_i."""
    off = 1.0 - aligned
    weight = torch.where(off <= eps, torch.zeros_like(off), off)
    if math.isinf(lambda_):
        # The lambda -> inf limit: penalised directions lose their off-subspace part entirely.
        return torch.where(weight > 0, torch.zeros_like(weight), torch.ones_like(weight))
    return 1.0 / (1.0 + lambda_ * weight)


class ClosestSafeUpdate(CorrectionMethod):
    reference_url = "https://arxiv.org/abs/2605.30640"

    def parameters(self, params: CorrectionParams) -> dict:
        return penalty_parameters(params)

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        if params.two_sided:
            # X_i = Pi D_i + f_i (I - Pi) D_i = f_i D_i + (1 - f_i) Pi D_i.
            factors = attenuation_factors(two_sided_aligned_fractions(update, subspace), params.lambda_, params.eps)
            return two_sided.attenuated_b(update, subspace, factors, 1.0 - factors)
        # B' = P B + (I - P) U F U^T B, rewritten as G + P (B - G) with G = U F U^T B: two thin products.
        factors = attenuation_factors(aligned_fractions(update, subspace.basis), params.lambda_, params.eps)
        kept = scaled_directions(update, factors)
        return kept + apply_projector(subspace.basis, update.lora_b - kept)
