"""The detection statistics (docs/method.md section 9) against a dense float64 reference.

The reference forms dW, V, P and V's truncated SVD explicitly; the library works from factors only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from csulora_cli.correction.decompose import decompose_update
from csulora_cli.correction.detection import detection_energies
from csulora_cli.correction.statistics import (
    STATISTICS,
    AdapterDetection,
    DetectionEnergies,
    ModuleDetection,
    enrichment,
    off_share,
    reversal,
    reversing_share,
    weighted_enrichment,
)
from csulora_cli.errors import CsuloraError
from csulora_cli.subspace.estimate import EstimationParams, SelectedSubspace, estimate_basis

DTYPE = torch.float64
# Relative to the figure's scale: float64 round-off on 30 x 30 problems is ~1e-14.
TOLERANCE = 1e-10
SETTINGS = settings(max_examples=60, deadline=None, database=None)

pytestmark = pytest.mark.usefixtures("single_thread")


@dataclass(frozen=True)
class Problem:
    lora_b: torch.Tensor  # (m, r)
    lora_a: torch.Tensor  # (r, n)
    scale: float
    displacement: torch.Tensor  # V: (m, n)
    subspace: SelectedSubspace  # the k columns of the in-subspace statistics
    triplets: SelectedSubspace  # every triplet of V the exact SVD gives

    @property
    def update(self) -> torch.Tensor:
        return self.scale * self.lora_b @ self.lora_a

    def energies(self, two_sided: bool = False, triplets: SelectedSubspace | None = None) -> DetectionEnergies:
        update = decompose_update(self.lora_b, self.lora_a, self.scale)
        return detection_energies(update, self.subspace, self.triplets if triplets is None else triplets, two_sided)


def build_problem(m: int, n: int, r: int, k: int, seed: int, scale: float, displacement_rank: int) -> Problem:
    generator = torch.Generator().manual_seed(seed)
    displacement = torch.randn(m, displacement_rank, generator=generator, dtype=DTYPE) @ torch.randn(
        displacement_rank, n, generator=generator, dtype=DTYPE
    )
    basis = estimate_basis(displacement, EstimationParams(max_rank=min(m, n), exact=True), reference_energy=1.0)
    lora_b = torch.randn(m, r, generator=generator, dtype=DTYPE)
    lora_a = torch.randn(r, n, generator=generator, dtype=DTYPE)
    return Problem(lora_b, lora_a, scale, displacement, basis.select(1.0, k), basis.select(1.0))


@st.composite
def problems(draw) -> Problem:
    m, n, r = draw(st.integers(1, 30)), draw(st.integers(1, 30)), draw(st.integers(1, 6))
    return build_problem(
        m,
        n,
        r,
        k=draw(st.integers(0, min(m, n))),
        seed=draw(st.integers(0, 2**31 - 1)),
        scale=10.0 ** draw(st.floats(-6.0, 6.0)),
        displacement_rank=draw(st.integers(1, min(m, n))),
    )


def dense_truncation(displacement: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U_k (m, k), S_k (k,), W_k (n, k) of V's dense SVD."""
    left, values, right_t = torch.linalg.svd(displacement, full_matrices=False)
    return left[:, :k], values[:k], right_t[:k].T


def close(actual: float, expected: float, scale: float = 1.0) -> bool:
    return abs(actual - expected) <= TOLERANCE * max(scale, abs(expected), 1e-300)


@given(problem=problems(), two_sided=st.booleans())
@SETTINGS
def test_in_subspace_statistics_equal_their_dense_definitions(problem, two_sided):
    m, n = problem.displacement.shape
    k = problem.subspace.rank
    left, values, right = dense_truncation(problem.displacement, k)
    out_projector, in_projector = left @ left.T, right @ right.T
    update = problem.update
    update_energy = float(update.square().sum())
    inside_matrix = out_projector @ update @ in_projector if two_sided else out_projector @ update
    inside = float(inside_matrix.square().sum())
    chance_share = (k / m) * (k / n if two_sided else 1.0)
    per_direction = (left.T @ (update @ in_projector if two_sided else update)).square().sum(dim=1)
    weights = values.square() / values.square().sum() if k else values
    weighted = float((weights * per_direction).sum()) if k else 0.0
    weighted_chance = (1.0 / m) * (k / n if two_sided else 1.0) if k else 0.0

    energies = problem.energies(two_sided)
    assert close(energies.update_energy, update_energy)
    assert close(energies.inside_energy, inside, update_energy)
    assert close(off_share(energies), 1.0 - inside / update_energy)
    assert close(enrichment(energies), inside / update_energy / chance_share if k else 0.0, m * n)
    assert close(weighted_enrichment(energies), weighted / update_energy / weighted_chance if k else 0.0, m * n)
    assert 0.0 <= off_share(energies) <= 1.0


@given(problem=problems())
@SETTINGS
def test_signed_statistics_equal_their_dense_definitions(problem):
    """reversal = <dW, V_K> / (||dW|| ||V||) with the full ||V||; reversing_share from c_j = u_j^T dW w_j."""
    update = problem.update
    update_norm, displacement_norm = float(update.norm()), float(problem.displacement.norm())
    for triplets in (problem.triplets, problem.subspace):
        left, values, right = dense_truncation(problem.displacement, triplets.rank)
        truncated = left @ torch.diag(values) @ right.T
        coefficients = torch.diagonal(left.T @ update @ right)  # c_j = u_j^T dW w_j
        energies = problem.energies(triplets=triplets)
        expected = float((update * truncated).sum()) / (update_norm * displacement_norm)
        assert close(reversal(energies), expected)
        assert close(reversing_share(energies), float(coefficients.clamp(max=0).square().sum()) / update_norm**2)
    # With every triplet stored, V_K is V itself: the exact cosine.
    full = float((update * problem.displacement).sum()) / (update_norm * displacement_norm)
    assert close(reversal(problem.energies()), full)


@given(problem=problems())
@SETTINGS
def test_truncating_v_moves_the_reversal_by_at_most_sqrt_of_the_energy_left_out(problem):
    exact = reversal(problem.energies())
    truncated_energies = problem.energies(triplets=problem.subspace)
    left_out = 1.0 - truncated_energies.captured_displacement_energy / truncated_energies.displacement_energy
    assert abs(reversal(truncated_energies) - exact) <= math.sqrt(max(left_out, 0.0)) + 1e-9


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_an_update_equal_to_minus_v_has_reversal_minus_one(sign):
    """dW = -V (the adapter undoes alignment exactly) reads -1 and all its energy reversing; +V the opposite."""
    m, n, rank = 12, 9, 3
    problem = build_problem(m, n, r=rank, k=rank, seed=7, scale=1.0, displacement_rank=rank)
    left, values, right = dense_truncation(problem.displacement, rank)
    lora_b, lora_a = sign * left * values, right.T.clone()  # s B A = sign * V
    update = decompose_update(lora_b, lora_a, 1.0)
    energies = detection_energies(update, problem.subspace, problem.triplets)
    assert reversal(energies) == pytest.approx(sign, abs=1e-12)
    assert reversing_share(energies) == pytest.approx(1.0 if sign < 0 else 0.0, abs=1e-12)
    assert off_share(energies) == pytest.approx(0.0, abs=1e-12)  # V lies in its own subspace
    assert enrichment(energies) == pytest.approx(m / rank, rel=1e-12)


def test_totals_treat_the_adapter_and_v_as_one_vector():
    problems_ = [build_problem(m, n, 3, k, seed, 1.5, min(m, n)) for m, n, k, seed in ((10, 8, 2, 1), (6, 14, 4, 2))]
    detection = AdapterDetection(
        tuple(ModuleDetection(f"layers.{i}.q_proj", p.energies()) for i, p in enumerate(problems_))
    )
    updates = torch.cat([p.update.flatten() for p in problems_])
    displacements = torch.cat([p.displacement.flatten() for p in problems_])
    inside = sum(
        float((dense_truncation(p.displacement, p.subspace.rank)[0].T @ p.update).square().sum()) for p in problems_
    )
    chance = sum(p.subspace.rank / p.update.shape[0] * float(p.update.square().sum()) for p in problems_)
    assert detection.score("reversal") == pytest.approx(
        float(updates @ displacements) / float(updates.norm() * displacements.norm()), rel=1e-10
    )
    assert detection.score("off_share") == pytest.approx(1.0 - inside / float(updates.square().sum()), rel=1e-10)
    assert detection.score("enrichment") == pytest.approx(inside / chance, rel=1e-10)


def test_the_chance_share_is_the_mean_over_random_rotations_of_the_update():
    """k/m one-sided and (k/m)(k/n) two-sided: the in-subspace share of dW with Haar-random singular vectors."""
    m, n, k, samples = 11, 7, 3, 4000
    problem = build_problem(m, n, r=4, k=k, seed=3, scale=1.0, displacement_rank=min(m, n))
    generator = torch.Generator().manual_seed(11)

    def haar(size: int) -> torch.Tensor:
        q, r = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=DTYPE))
        return q * torch.sign(torch.diagonal(r))

    for two_sided in (False, True):
        shares = []
        for _ in range(samples):
            rotated_b, rotated_a = haar(m) @ problem.lora_b, problem.lora_a @ haar(n)
            update = decompose_update(rotated_b, rotated_a, 1.0)
            energies = detection_energies(update, problem.subspace, problem.triplets, two_sided)
            shares.append(energies.inside_energy / energies.update_energy)
        shares_t = torch.tensor(shares, dtype=DTYPE)
        chance = energies.chance_inside_energy / energies.update_energy
        standard_error = float(shares_t.std()) / math.sqrt(samples)
        assert abs(float(shares_t.mean()) - chance) < 5 * standard_error, (two_sided, float(shares_t.mean()), chance)


def test_without_right_vectors_the_signed_statistics_are_absent_and_two_sided_is_refused():
    problem = build_problem(8, 6, 2, 3, seed=5, scale=1.0, displacement_rank=6)
    bare = SelectedSubspace(
        problem.subspace.basis,
        problem.subspace.singular_values,
        problem.subspace.total_energy,
        problem.subspace.captured_energy,
        True,
        right=None,
    )
    update = decompose_update(problem.lora_b, problem.lora_a, 1.0)
    energies = detection_energies(update, bare)
    assert reversal(energies) is None and reversing_share(energies) is None
    assert off_share(energies) == pytest.approx(off_share(problem.energies()), rel=1e-12)
    with pytest.raises(CsuloraError, match="right singular vectors"):
        detection_energies(update, bare, two_sided=True)


def test_a_zero_update_scores_as_harmless_and_a_module_without_subspace_as_chance_free():
    problem = build_problem(8, 6, 2, 3, seed=6, scale=1.0, displacement_rank=6)
    zero = detection_energies(
        decompose_update(torch.zeros_like(problem.lora_b), problem.lora_a, 1.0), problem.subspace, problem.triplets
    )
    assert (off_share(zero), enrichment(zero), reversal(zero), reversing_share(zero)) == (0.0, 0.0, 0.0, 0.0)
    no_subspace = detection_energies(
        decompose_update(problem.lora_b, problem.lora_a, 1.0),
        SelectedSubspace(*_empty_fields(problem.subspace)),
    )
    assert off_share(no_subspace) == 1.0 and enrichment(no_subspace) == 0.0 and reversal(no_subspace) == 0.0


def _empty_fields(subspace: SelectedSubspace) -> tuple:
    m, n = subspace.basis.shape[0], subspace.right.shape[0]
    return (
        subspace.basis.new_zeros(m, 0),
        subspace.singular_values.new_zeros(0),
        subspace.total_energy,
        0.0,
        False,
        subspace.right.new_zeros(n, 0),
    )


def test_every_statistic_says_which_way_is_suspicious():
    assert set(STATISTICS) == {"off_share", "enrichment", "weighted_enrichment", "reversal", "reversing_share"}
    for statistic in STATISTICS.values():
        assert statistic.suspicious in ("high", "low") and statistic.summary
    assert STATISTICS["reversal"].suspicious == "low" and STATISTICS["reversal"].needs_right_vectors
