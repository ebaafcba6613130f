"""Two-sided forms of csulora, project and csulora-inside (`--two-sided`; docs/method.md section 5).

The subspace becomes {P_out X P_in} with P_out = U_k U_k^T and P_in = W_k W_k^T (V's right singular
vectors); Pi(X) = P_out X P_in is an orthogonal projector on (m, n) matrices. Each direction
D_i = sigma_i u_i v_i^T is corrected as in docs/method.md section 4 with Pi in place of P, so every target is

    X* = U diag(alpha) U^T dW + P_out U diag(beta) U^T dW P_in

and, with only B free, B' = X* A^T (A A^T)^+ / s (least_squares.py).
"""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate, apply_projector
from ..least_squares import gram_pinv, input_side_b, row_space_b


def projected_b(update: LowRankUpdate, subspace: SelectedSubspace) -> torch.Tensor:
    """X* = P_out dW P_in: B' = P_out B (A W)(A W)^T (A A^T)^+."""
    pinv = gram_pinv(update.lora_a)
    return apply_projector(subspace.basis, input_side_b(update.lora_b, update.lora_a, subspace.right, pinv))


def attenuated_b(
    update: LowRankUpdate, subspace: SelectedSubspace, direct: torch.Tensor, inside: torch.Tensor
) -> torch.Tensor:
    """B' of X* = U diag(direct) U^T dW + P_out U diag(inside) U^T dW P_in."""
    pinv = gram_pinv(update.lora_a)
    left = update.left
    whole = left @ (direct[:, None] * (left.T @ row_space_b(update.lora_b, update.lora_a, pinv)))
    within = left @ (inside[:, None] * (left.T @ input_side_b(update.lora_b, update.lora_a, subspace.right, pinv)))
    return whole + apply_projector(subspace.basis, within)
