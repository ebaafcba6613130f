"""What a correction did to one module, measured from factors (docs/method.md section 6).

Energies of dW, the corrected update and their difference, the aligned share and the direction
classes; every figure is a Frobenius product of (m, r)-sized factors, never an (m, n) matrix.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..subspace.estimate import SelectedSubspace
from .decompose import LowRankUpdate, aligned_fractions, cosine_of, frobenius_dot, two_sided_aligned_fractions
from .figures import CorrectionFigures, DirectionCounts
from .methods.base import CorrectedFactors


def classify_directions(aligned: torch.Tensor, mask: torch.Tensor, eps: float) -> DirectionCounts:
    """docs/method.md section 3: fully aligned if o_i <= eps, off-subspace if a_i <= eps, else partial."""
    aligned = aligned[mask]
    off = 1.0 - aligned
    fully = off <= eps
    outside = (aligned <= eps) & ~fully
    return DirectionCounts(
        aligned=int(fully.sum()),
        partial=int((~fully & ~outside).sum()),
        off=int(outside.sum()),
    )


def measure_factors(
    update: LowRankUpdate, corrected: CorrectedFactors, subspace: SelectedSubspace, eps: float, two_sided: bool = False
) -> CorrectionFigures:
    """`measure_correction` for a method that may also change A or the rank: X* = s B' A'.

    With A unchanged this is `measure_correction` itself. Otherwise the energies are traces of (r', r')
    Gram products: ||s B' A'||^2 = s^2 tr((B'^T B') (A' A'^T)) and <dW, X*> = s^2 tr((B^T B') (A' A^T)),
    so still no (m, n) matrix. `removed_energy` is ||dW - X*||^2: for a method that adds to the update
    (readd) it is the energy added.
    """
    if corrected.lora_a is update.lora_a:
        return measure_correction(update, corrected.lora_b, subspace, eps, two_sided)
    scale_squared = update.scale**2
    b, a = update.lora_b.to(torch.float64), update.lora_a.to(torch.float64)
    new_b, new_a = corrected.lora_b.to(torch.float64), corrected.lora_a.to(torch.float64)
    original = measure_correction(update, update.lora_b, subspace, eps, two_sided)
    corrected_energy = scale_squared * float(((new_b.T @ new_b) * (new_a @ new_a.T)).sum())
    inner = scale_squared * float(((b.T @ new_b) * (a @ new_a.T)).sum())
    removed_energy = max(0.0, original.update_energy + corrected_energy - 2.0 * inner)
    return replace(
        original,
        corrected_energy=corrected_energy,
        removed_energy=removed_energy,
        cosine=cosine_of(inner, original.update_energy, corrected_energy),
    )


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
    update_energy = frobenius_dot(original, original)
    corrected_energy = frobenius_dot(corrected, corrected)
    removed = original - corrected
    removed_energy = frobenius_dot(removed, removed)
    if subspace.rank and two_sided:
        inside = update.scale * (subspace.basis.T @ update.lora_b) @ (update.lora_a @ subspace.right)
        aligned_energy = frobenius_dot(inside, inside)
    elif subspace.rank:
        inside = subspace.basis.T @ original
        aligned_energy = frobenius_dot(inside, inside)
    else:
        aligned_energy = 0.0
    cosine = cosine_of(frobenius_dot(original, corrected), update_energy, corrected_energy)
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
