"""Sign-aware penalty: attenuate what an update writes *against* the alignment displacement.

V = sum_j S_j u_j w_j^T. The update's coefficient along V's own direction j is c_j = <dW, u_j w_j^T>;
c_j < 0 undoes what alignment wrote. With only B free (X = s B' A),

    B' = argmin 1/2 ||s B' A - dW||^2 + lambda/2 sum_{j <= k, c_j < 0} <s B' A, u_j w_j^T>^2

has the closed form B' = B - sum_{c_j < 0} beta_j u_j h_j^T with h_j = (A A^T)^+ A w_j,
beta_j = lambda c_j / (s (1 + lambda gamma_j)) and gamma_j = ||Pi_A w_j||^2; each penalised coefficient
becomes c_j / (1 + lambda gamma_j), and the part of dW that agrees with V (c_j >= 0) is untouched.
"""

from __future__ import annotations

import math

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate
from ..least_squares import gram_pinv
from ..params import CorrectionParams
from .base import CorrectionMethod

# gamma_j below this is a direction A cannot reach (then c_j = 0 too): nothing to attenuate.
UNREACHABLE = 1e-12


def alignment_coefficients(update: LowRankUpdate, subspace: SelectedSubspace) -> torch.Tensor:
    """c_j = u_j^T dW w_j = s (U_k^T B)(A W_k) on the diagonal: (k,)."""
    along_b = subspace.basis.T @ update.lora_b  # (k, r)
    along_a = update.lora_a @ subspace.right  # (r, k)
    return update.scale * (along_b * along_a.T).sum(dim=1)


def penalty_coefficients(coefficients: torch.Tensor, reach: torch.Tensor, lambda_: float) -> torch.Tensor:
    """lambda c_j / (1 + lambda gamma_j) for c_j < 0, else 0; the lambda -> inf limit is c_j / gamma_j."""
    penalised = (coefficients < 0) & (reach > UNREACHABLE)
    safe_reach = torch.where(penalised, reach, torch.ones_like(reach))
    if math.isinf(lambda_):
        removed = coefficients / safe_reach
    else:
        removed = lambda_ * coefficients / (1.0 + lambda_ * safe_reach)
    return torch.where(penalised, removed, torch.zeros_like(removed))


class SignAwarePenalty(CorrectionMethod):
    needs_right_vectors = True

    def parameters(self, params: CorrectionParams) -> dict:
        return {"lambda": params.lambda_}

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        if subspace.rank == 0 or update.scale == 0.0:
            return update.lora_b
        coefficients = alignment_coefficients(update, subspace)
        targets = gram_pinv(update.lora_a) @ (update.lora_a @ subspace.right)  # h_j: (r, k)
        reach = (update.lora_a @ subspace.right * targets).sum(dim=0)  # gamma_j = (A w_j)^T h_j
        removed = penalty_coefficients(coefficients, reach, params.lambda_) / update.scale
        return update.lora_b - subspace.basis @ (removed[:, None] * targets.T)
