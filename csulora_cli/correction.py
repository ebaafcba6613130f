"""Decomposing a LoRA update and measuring a correction (METHOD.md sections 3, 4 and 6).

Pure numerics: factors in, factors and figures out; never an (m, m) or (m, n) matrix. The rules that
turn a decomposition into a new `B` live one per file in `methods/`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import linalg
from .subspace import SelectedSubspace


@dataclass(frozen=True)
class CorrectionParams:
    """The knobs of a correction (METHOD.md section 4); each method reads the ones it uses."""

    lambda_: float = 3.0
    eps: float = 0.05
    # Safe LoRA's module selection (METHOD.md section 7), with the reference implementation's defaults.
    safelora_select: str = "number"
    safelora_threshold: float = 0.5
    safelora_layers: int = 10
    # The subspace of matrices P_out X P_in instead of P X (docs/method.md section 5).
    two_sided: bool = False


@dataclass(frozen=True)
class LowRankUpdate:
    """Thin SVD of dW = s * B @ A, computed from the factors (METHOD.md section 3).

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


@dataclass(frozen=True)
class DirectionCounts:
    aligned: int
    partial: int
    off: int


def classify_directions(aligned: torch.Tensor, mask: torch.Tensor, eps: float) -> DirectionCounts:
    """METHOD.md section 3: fully aligned if o_i <= eps, off-subspace if a_i <= eps, else partial."""
    aligned = aligned[mask]
    off = 1.0 - aligned
    fully = off <= eps
    outside = (aligned <= eps) & ~fully
    return DirectionCounts(
        aligned=int(fully.sum()),
        partial=int((~fully & ~outside).sum()),
        off=int(outside.sum()),
    )


@dataclass(frozen=True)
class CorrectionFigures:
    """METHOD.md section 6, for one module; energies are absolute, fractions relative to ||dW||^2."""

    update_energy: float
    corrected_energy: float
    removed_energy: float
    aligned_energy: float
    cosine: float
    directions: DirectionCounts

    @property
    def attenuation_fraction(self) -> float:
        return _fraction(self.removed_energy, self.update_energy)

    @property
    def aligned_fraction(self) -> float:
        return _fraction(self.aligned_energy, self.update_energy)

    @property
    def off_subspace_fraction(self) -> float:
        return 0.0 if self.update_energy == 0.0 else max(0.0, 1.0 - self.aligned_fraction)


def _fraction(part: float, whole: float) -> float:
    return 0.0 if whole == 0.0 else part / whole


def measure_correction(
    update: LowRankUpdate, corrected_b: torch.Tensor, subspace: SelectedSubspace, eps: float, two_sided: bool = False
) -> CorrectionFigures:
    """Energies of dW, X* = s B' A and their difference from (m, r) factors only.

    For any X: (m, r), ||X A||_F = ||X R^T||_F because Q has orthonormal columns, so every figure is a
    Frobenius product of (m, p') matrices. `two_sided` measures the aligned energy and the direction
    classes against {P_out X P_in}: ||P_out dW P_in|| = ||(U_k^T s B)(A W_k)||, a (k, k) product.
    """
    original = update.scale * (update.lora_b @ update.row_factor.T)
    corrected = update.scale * (corrected_b @ update.row_factor.T)
    update_energy = _dot(original, original)
    corrected_energy = _dot(corrected, corrected)
    removed_energy = _dot(original - corrected, original - corrected)
    if subspace.rank and two_sided:
        inside = update.scale * (subspace.basis.T @ update.lora_b) @ (update.lora_a @ subspace.right)
        aligned_energy = _dot(inside, inside)
    elif subspace.rank:
        aligned_energy = _dot(subspace.basis.T @ original, subspace.basis.T @ original)
    else:
        aligned_energy = 0.0
    cosine = _cosine(_dot(original, corrected), update_energy, corrected_energy)
    if two_sided:
        fractions = two_sided_aligned_fractions(update, subspace)
    else:
        fractions = aligned_fractions(update, subspace.basis)
    counts = classify_directions(fractions, update.nonzero_directions(), eps)
    return CorrectionFigures(
        update_energy=update_energy,
        corrected_energy=corrected_energy,
        removed_energy=removed_energy,
        aligned_energy=min(aligned_energy, update_energy),
        cosine=cosine,
        directions=counts,
    )


def update_cosine(update: LowRankUpdate, other_b: torch.Tensor) -> float:
    """Cosine similarity of the flattened B A and B' A, from (m, p') factors (the scale cancels)."""
    original = update.lora_b @ update.row_factor.T
    other = other_b @ update.row_factor.T
    return _cosine(_dot(original, other), _dot(original, original), _dot(other, other))


def _cosine(inner: float, left_energy: float, right_energy: float) -> float:
    norms = left_energy**0.5 * right_energy**0.5  # not sqrt(a * b): the product can under/overflow
    if norms > 0.0:
        return max(-1.0, min(1.0, inner / norms))
    # Both zero: nothing changed. One zero: the update was removed entirely.
    return 1.0 if left_energy == right_energy else 0.0


def _dot(left: torch.Tensor, right: torch.Tensor) -> float:
    return float((left.to(torch.float64) * right.to(torch.float64)).sum())
