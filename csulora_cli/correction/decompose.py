"""Decomposing a LoRA update into its directions (docs/method.md section 3), and the thin products on them.

Pure numerics: factors in, factors out; never an (m, m) or (m, n) matrix. The rules that turn a
decomposition into a new `B` live one per file in `methods/`; the report's figures in `measures.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..subspace import linalg
from ..subspace.estimate import SelectedSubspace


@dataclass(frozen=True)
class LowRankUpdate:
    """Thin SVD of dW = s * B @ A, computed from the factors (docs/method.md section 3).

    lora_b: (m, r) and lora_a: (r, n) in compute dtype; left: (m, p) the u_i; sigma: (p,);
    right: (n, p) the v_i; row_factor: (p', r) with A = row_factor^T @ q^T, so ||X A||_F = ||X row_factor^T||_F
    for any X: (m, r).
    """

    lora_b: torch.Tensor
    lora_a: torch.Tensor
    scale: float
    left: torch.Tensor
    sigma: torch.Tensor
    right: torch.Tensor
    row_factor: torch.Tensor

    def nonzero_directions(self) -> torch.Tensor:
        """Mask of the directions that carry energy; the others are arbitrary completions of the SVD."""
        if self.sigma.numel() == 0:
            return torch.zeros(0, dtype=torch.bool, device=self.sigma.device)
        size = max(self.lora_b.shape[0], self.lora_a.shape[1])
        tolerance = size * torch.finfo(self.sigma.dtype).eps * self.sigma.max()
        return self.sigma > tolerance


def decompose_update(lora_b: torch.Tensor, lora_a: torch.Tensor, scale: float) -> LowRankUpdate:
    """QR of A^T, then SVD of the (m, r) matrix s * B @ R^T: O((m + n) r^2)."""
    q, r_factor = linalg.qr(lora_a.T)  # A^T = Q R, so A = R^T Q^T
    projected = scale * (lora_b @ r_factor.T)  # (m, p')
    left, sigma, right_small_t = linalg.svd(projected)
    right = q @ right_small_t.T
    return LowRankUpdate(lora_b, lora_a, scale, left, sigma, right, r_factor)


def apply_projector(basis: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """P @ matrix with P = basis @ basis^T, never formed: basis @ (basis^T @ matrix)."""
    if basis.shape[1] == 0:
        return torch.zeros_like(matrix)
    return basis @ (basis.T @ matrix)


def scaled_directions(update: LowRankUpdate, factors: torch.Tensor) -> torch.Tensor:
    """U diag(factors) U^T B: (m, r), each direction u_i of the update scaled by its factor, B-side."""
    return update.left @ (factors[:, None] * (update.left.T @ update.lora_b))


def aligned_fractions(update: LowRankUpdate, basis: torch.Tensor) -> torch.Tensor:
    """a_i = ||U_k^T u_i||^2 per direction, clamped to [0, 1] against round-off."""
    if basis.shape[1] == 0:
        return torch.zeros_like(update.sigma)
    return (basis.T @ update.left).square().sum(dim=0).clamp(0.0, 1.0)


def two_sided_aligned_fractions(update: LowRankUpdate, subspace: SelectedSubspace) -> torch.Tensor:
    """a_i = ||U_k^T u_i||^2 ||W_k^T v_i||^2: the share of u_i v_i^T inside {P_out X P_in}."""
    if subspace.rank == 0:
        return torch.zeros_like(update.sigma)
    input_side = (subspace.right.T @ update.right).square().sum(dim=0).clamp(0.0, 1.0)
    return aligned_fractions(update, subspace.basis) * input_side


def update_cosine(update: LowRankUpdate, other_b: torch.Tensor) -> float:
    """Cosine similarity of the flattened B A and B' A, from (m, p') factors (the scale cancels)."""
    original = update.lora_b @ update.row_factor.T
    other = other_b @ update.row_factor.T
    return cosine_of(frobenius_dot(original, other), frobenius_dot(original, original), frobenius_dot(other, other))


def cosine_of(inner: float, left_energy: float, right_energy: float) -> float:
    norms = left_energy**0.5 * right_energy**0.5  # not sqrt(a * b): the product can under/overflow
    if norms > 0.0:
        return max(-1.0, min(1.0, inner / norms))
    # Both zero: nothing changed. One zero: the update was removed entirely.
    return 1.0 if left_energy == right_energy else 0.0


def frobenius_dot(left: torch.Tensor, right: torch.Tensor) -> float:
    return float((left.to(torch.float64) * right.to(torch.float64)).sum())
