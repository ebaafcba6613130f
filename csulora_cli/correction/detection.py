"""Detection sums of one module (docs/method.md section 9): where an adapter's update sits against the
alignment displacement, for a gate that flags adapters trained on harmful data.

Pure math on the factors and a stored basis, no I/O and never an (m, n) matrix. The sums add across
modules; the statistics that divide them, and what a gate offers, are `statistics.py`.
"""

from __future__ import annotations

import torch

from ..errors import CsuloraError
from ..subspace.estimate import SelectedSubspace
from .decompose import LowRankUpdate, frobenius_dot
from .statistics import DetectionEnergies


def detection_energies(
    update: LowRankUpdate,
    subspace: SelectedSubspace,
    triplets: SelectedSubspace | None = None,
    two_sided: bool = False,
) -> DetectionEnergies:
    """The sums of docs/method.md section 9 for one module, from (m, r), (r, n) and (m, k), (n, k) factors.

    `subspace` holds the k columns the in-subspace statistics use (as `correct` selects them); `triplets`
    the singular triplets of V that `displacement_inner` and `reversing_energy` use, by default the same
    k. Pass every stored triplet (`SubspaceBasis.select(1.0, max_rank)`): V_K is then as close to V as the
    store allows, and the reversal's truncation error is at most sqrt(1 - captured share) (section 9).
    """
    triplets = subspace if triplets is None else triplets
    m, n = update.lora_b.shape[0], update.lora_a.shape[1]
    k = subspace.rank
    if two_sided and k and subspace.right is None:
        raise CsuloraError(
            "the basis holds no right singular vectors (written by an older csulora), which {two_sided} needs",
            parameter="two_sided",
            hint="re-run estimate-subspace into a new folder",
        )
    # ||X A||_F = ||X R^T||_F for any X: (m, r), because A = R^T Q^T with Q orthonormal (section 3).
    update_matrix = update.scale * (update.lora_b @ update.row_factor.T)  # (m, p)
    update_energy = frobenius_dot(update_matrix, update_matrix)
    if k == 0:
        inside = weighted = chance = chance_weighted = 0.0
    else:
        if two_sided:
            # Row j: u_j^T dW P_in, through the (k, r) x (r, k) product; ||. W_k^T|| = ||.|| for orthonormal W_k.
            rows = update.scale * (subspace.basis.T @ update.lora_b) @ (update.lora_a @ subspace.right)
            side_chance = k / n
        else:
            rows = subspace.basis.T @ update_matrix  # (k, p): u_j^T dW in A's row coordinates
            side_chance = 1.0
        per_direction = rows.to(torch.float64).square().sum(dim=1)
        inside = float(per_direction.sum())
        spectrum = subspace.singular_values.to(per_direction).square()
        weighted = float((spectrum * per_direction).sum() / spectrum.sum()) if float(spectrum.sum()) > 0 else 0.0
        # A random update with dW's singular values and Haar-distributed singular vectors has E ||u^T dW||^2
        # = ||dW||^2 / m along any unit u, and E ||dW w||^2 = ||dW||^2 / n along any unit w (section 9).
        chance = k / m * side_chance * update_energy
        chance_weighted = side_chance * update_energy / m
    inner, reversing = signed_sums(update, triplets)
    return DetectionEnergies(
        update_energy=update_energy,
        inside_energy=min(inside, update_energy),
        chance_inside_energy=chance,
        weighted_inside_energy=min(weighted, update_energy),
        chance_weighted_energy=chance_weighted,
        displacement_energy=subspace.total_energy,
        captured_displacement_energy=float(triplets.singular_values.double().square().sum()),
        displacement_inner=inner,
        reversing_energy=reversing,
    )


def displacement_coefficients(update: LowRankUpdate, triplets: SelectedSubspace) -> torch.Tensor | None:
    """c_j = <dW, u_j w_j^T> = u_j^T dW w_j = s (U^T B)_j . (A W)_{:, j}, shape (K,); None without right vectors."""
    if triplets.right is None:
        return None
    if triplets.rank == 0:
        return update.lora_b.new_zeros(0, dtype=torch.float64)
    out_side = (triplets.basis.T @ update.lora_b).to(torch.float64)  # (K, r)
    in_side = (update.lora_a @ triplets.right).to(torch.float64)  # (r, K)
    return update.scale * (out_side * in_side.T).sum(dim=1)


def signed_sums(update: LowRankUpdate, triplets: SelectedSubspace) -> tuple[float | None, float | None]:
    """(<dW, V_K>, sum_j min(c_j, 0)^2) over the triplets: V_K = sum_j S_j u_j w_j^T."""
    coefficients = displacement_coefficients(update, triplets)
    if coefficients is None:
        return None, None
    values = triplets.singular_values.to(coefficients)
    return float((values * coefficients).sum()), float(coefficients.clamp(max=0.0).square().sum())
