"""The complement of CSULoRA (docs/method.md section 4 with the roles of P and I - P exchanged).

X* = argmin_X 1/2 ||X - dW||^2 + lambda/2 sum_i w_i ||P X v_i||^2 with w_i = a_i (0 for off-subspace
directions): the off-subspace part of each direction is kept, the in-subspace part scaled by
g_i = 1 / (1 + lambda a_i). It tests the hypothesis that an attack writes *inside* the safety subspace.
"""

from __future__ import annotations

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
from .csulora import attenuation_factors


class InsideAttenuation(CorrectionMethod):
    def parameters(self, params: CorrectionParams) -> dict:
        return penalty_parameters(params)

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        if params.two_sided:
            # X_i = (I - Pi) D_i + g_i Pi D_i = D_i - (1 - g_i) Pi D_i.
            inside = two_sided_aligned_fractions(update, subspace)
            factors = attenuation_factors(1.0 - inside, params.lambda_, params.eps)
            return two_sided.attenuated_b(update, subspace, torch.ones_like(factors), factors - 1.0)
        # The section 4 rule applied to o_i := a_i gives w_i = a_i, and 0 where a_i <= eps.
        aligned = aligned_fractions(update, subspace.basis)
        factors = attenuation_factors(1.0 - aligned, params.lambda_, params.eps)
        # B' = T B with T = (I - P) + P U G U^T, i.e. B - P (B - G'), G' = U G U^T B: two thin products.
        kept = scaled_directions(update, factors)
        return update.lora_b - apply_projector(subspace.basis, update.lora_b - kept)
