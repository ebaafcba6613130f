"""Property tests for the closest safe update (docs/method.md sections 3, 4 and 6) against a dense reference.
The reference forms dW, P, the SVD and X* explicitly in float64; the library never does."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from csulora_cli.correction.decompose import apply_projector, decompose_update
from csulora_cli.correction.measures import measure_correction
from csulora_cli.correction.methods import get_method
from csulora_cli.correction.methods.csulora import attenuation_factors
from csulora_cli.correction.params import CorrectionParams
from csulora_cli.subspace.estimate import EstimationParams, SelectedSubspace, estimate_basis

DTYPE = torch.float64

# Everything is compared relative to ||dW||_F: float64 round-off on 40 x 40 problems is ~1e-14.
RELATIVE_TOLERANCE = 1e-10

# Dense singular values below this fraction of the largest are exact zeros blurred by round-off
# (rank-deficient A or B); their singular vectors are arbitrary and carry no energy.
DENSE_RANK_TOLERANCE = 1e-10

# Keep data off the class boundaries o_i = eps and a_i = eps, where X* jumps and a count can flip on
# round-off; and off near-repeated singular values, where single directions are not defined.
BOUNDARY_MARGIN = 1e-7
MIN_RELATIVE_GAP = 1e-6

SETTINGS = settings(max_examples=80, deadline=None, database=None)

CSULORA = get_method("csulora")
PROJECT = get_method("project")
NONE = get_method("none")


# Tiny matrices: one thread is faster, and spares a busy machine thread contention (fixture in conftest).
pytestmark = pytest.mark.usefixtures("single_thread")


@dataclass(frozen=True)
class Problem:
    lora_b: torch.Tensor  # (m, r)
    lora_a: torch.Tensor  # (r, n)
    scale: float
    subspace: SelectedSubspace

    @property
    def dense_update(self) -> torch.Tensor:
        return self.scale * self.lora_b @ self.lora_a

    @property
    def projector(self) -> torch.Tensor:
        basis = self.subspace.basis
        return basis @ basis.T  # (m, m); an (m, 0) basis gives the zero matrix

    def corrected_update(self, corrected_b: torch.Tensor) -> torch.Tensor:
        return self.scale * corrected_b @ self.lora_a


def make_subspace(m: int, k: int, generator: torch.Generator) -> SelectedSubspace:
    """U_k through the library's own path: exact basis of a random displacement, capped at k."""
    displacement = torch.randn(m, m + 1, generator=generator, dtype=DTYPE)
    basis = estimate_basis(displacement, EstimationParams(max_rank=k, exact=True), reference_energy=1.0)
    subspace = basis.select(energy=1.0)
    assert subspace.rank == k
    return subspace


def make_column(kind: str, basis: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    m, k = basis.shape
    raw = torch.randn(m, generator=generator, dtype=DTYPE)
    if kind == "zero":
        return torch.zeros(m, dtype=DTYPE)
    if kind == "aligned" and k > 0:
        return basis @ torch.randn(k, generator=generator, dtype=DTYPE)
    if kind == "off" and k < m:
        return raw - basis @ (basis.T @ raw)
    return raw  # "mixed", or a kind the subspace cannot host (k = 0 or k = m)


def build_problem(
    m: int,
    n: int,
    r: int,
    k: int,
    seed: int,
    scale: float,
    column_kinds: list[str],
    duplicate_a_row: bool,
    duplicate_b_column: bool,
) -> Problem:
    generator = torch.Generator().manual_seed(seed)
    subspace = make_subspace(m, k, generator)
    lora_b = torch.stack([make_column(kind, subspace.basis, generator) for kind in column_kinds], dim=1)
    lora_a = torch.randn(r, n, generator=generator, dtype=DTYPE)
    if duplicate_a_row and r >= 2:
        lora_a[r - 1] = lora_a[0]
    if duplicate_b_column and r >= 2:
        lora_b[:, r - 1] = -2.5 * lora_b[:, 0]
    return Problem(lora_b, lora_a, scale, subspace)


@st.composite
def problems(draw, column_kinds=("mixed", "mixed", "aligned", "off", "zero")) -> Problem:
    m = draw(st.integers(1, 40))
    n = draw(st.integers(1, 40))
    r = draw(st.integers(1, 8))
    k = draw(st.integers(0, m))
    kinds = draw(st.lists(st.sampled_from(column_kinds), min_size=r, max_size=r))
    return build_problem(
        m,
        n,
        r,
        k,
        seed=draw(st.integers(0, 2**31 - 1)),
        scale=10.0 ** draw(st.floats(-30.0, 30.0)),
        column_kinds=kinds,
        duplicate_a_row=draw(st.booleans()),
        duplicate_b_column=draw(st.booleans()),
    )


lambdas = st.one_of(st.just(0.0), st.just(3.0), st.floats(0.0, 1e3))
epsilons = st.one_of(st.just(0.0), st.just(0.05), st.floats(0.0, 0.5))


@dataclass(frozen=True)
class DenseDirections:
    """The energy-carrying directions of dW's dense SVD, with a_i = u_i^T P u_i."""

    left: torch.Tensor  # (m, p)
    sigma: torch.Tensor  # (p,)
    right: torch.Tensor  # (n, p)
    aligned: torch.Tensor  # (p,)

    @property
    def off(self) -> torch.Tensor:
        return 1.0 - self.aligned


def dense_directions(update: torch.Tensor, projector: torch.Tensor) -> DenseDirections:
    left, sigma, right_t = torch.linalg.svd(update, full_matrices=False)
    carries = sigma > DENSE_RANK_TOLERANCE * sigma.max() if sigma.numel() and sigma.max() > 0 else sigma > 0
    left, sigma, right = left[:, carries], sigma[carries], right_t[carries].T
    aligned = (left * (projector @ left)).sum(dim=0)
    return DenseDirections(left, sigma, right, aligned)


def dense_weights(directions: DenseDirections, eps: float) -> torch.Tensor:
    off = directions.off
    return torch.where(off <= eps, torch.zeros_like(off), off)


def dense_closest_safe_update(problem: Problem, lambda_: float, eps: float) -> torch.Tensor:
    """X* = sum_i sigma_i [P u_i + f_i (I - P) u_i] v_i^T, every matrix formed densely."""
    projector = problem.projector
    complement = torch.eye(projector.shape[0], dtype=DTYPE) - projector
    directions = dense_directions(problem.dense_update, projector)
    weights = dense_weights(directions, eps)
    if math.isinf(lambda_):
        factors = (weights == 0).to(DTYPE)
    else:
        factors = 1.0 / (1.0 + lambda_ * weights)
    result = torch.zeros_like(problem.dense_update)
    for i in range(directions.sigma.numel()):
        u, v = directions.left[:, i], directions.right[:, i]
        result += directions.sigma[i] * torch.outer(projector @ u + factors[i] * (complement @ u), v)
    return result


def dense_objective(
    candidate: torch.Tensor, problem: Problem, directions: DenseDirections, lambda_: float, eps: float
) -> torch.Tensor:
    """1/2 ||X - dW||^2 + lambda/2 sum_i w_i ||(I - P) X v_i||^2 over the energy-carrying v_i."""
    complement = torch.eye(problem.projector.shape[0], dtype=DTYPE) - problem.projector
    weights = dense_weights(directions, eps)
    fidelity = 0.5 * (candidate - problem.dense_update).square().sum()
    penalty = (weights * (complement @ candidate @ directions.right).square().sum(dim=0)).sum()
    return fidelity + 0.5 * lambda_ * penalty


def assume_well_posed(problem: Problem, eps: float) -> DenseDirections:
    """Skip draws on a class boundary or with near-repeated singular values (see BOUNDARY_MARGIN)."""
    directions = dense_directions(problem.dense_update, problem.projector)
    assume(bool(((directions.off - eps).abs() > BOUNDARY_MARGIN).all()))
    assume(bool(((directions.aligned - eps).abs() > BOUNDARY_MARGIN).all()))
    if directions.sigma.numel() > 1:
        gaps = (directions.sigma[:-1] - directions.sigma[1:]) / directions.sigma[0]
        assume(bool((gaps > MIN_RELATIVE_GAP).all()))
    return directions


def correct(problem: Problem, method=CSULORA, lambda_: float = 3.0, eps: float = 0.05):
    update = decompose_update(problem.lora_b, problem.lora_a, problem.scale)
    return update, method.corrected_b(update, problem.subspace, CorrectionParams(lambda_=lambda_, eps=eps))


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, reference: torch.Tensor) -> None:
    """||actual - expected||_F <= RELATIVE_TOLERANCE * ||reference||_F (exact equality for zero)."""
    error = float(torch.linalg.matrix_norm(actual - expected))
    assert error <= RELATIVE_TOLERANCE * float(torch.linalg.matrix_norm(reference)), error


# --- Section 3: the factored SVD -------------------------------------------------------------------


@SETTINGS
@given(problem=problems())
def test_decomposition_reconstructs_update_with_orthonormal_factors(problem):
    update = decompose_update(problem.lora_b, problem.lora_a, problem.scale)

    rebuilt = update.left @ torch.diag(update.sigma) @ update.right.T
    assert_close_relative(rebuilt, problem.dense_update, problem.dense_update)
    for factor in (update.left, update.right):
        gram = factor.T @ factor
        assert torch.allclose(gram, torch.eye(gram.shape[0], dtype=DTYPE), atol=1e-12)
    assert bool((update.sigma[:-1] >= update.sigma[1:]).all())
    # The energy-carrying directions are exactly the dense rank of dW.
    expected_rank = dense_directions(problem.dense_update, problem.projector).sigma.numel()
    assert int(update.nonzero_directions().sum()) == expected_rank


# --- Section 4, property 1: the limits ----------------------------------------------------------


@SETTINGS
@given(problem=problems(), eps=epsilons)
def test_lambda_zero_returns_the_update(problem, eps):
    _, corrected_b = correct(problem, lambda_=0.0, eps=eps)
    assert_close_relative(problem.corrected_update(corrected_b), problem.dense_update, problem.dense_update)


@SETTINGS
@given(problem=problems())
def test_lambda_infinity_with_zero_eps_is_the_projection(problem):
    dense_projection = problem.projector @ problem.dense_update

    _, corrected_b = correct(problem, lambda_=math.inf, eps=0.0)
    _, projected_b = correct(problem, method=PROJECT)

    assert not torch.isnan(corrected_b).any()
    assert_close_relative(problem.corrected_update(corrected_b), dense_projection, problem.dense_update)
    assert_close_relative(problem.corrected_update(projected_b), dense_projection, problem.dense_update)


@SETTINGS
@given(problem=problems(), eps=epsilons)
def test_large_lambda_approaches_the_infinite_limit(problem, eps):
    assume_well_posed(problem, eps)
    _, limit_b = correct(problem, lambda_=math.inf, eps=eps)
    _, large_b = correct(problem, lambda_=1e12, eps=eps)
    # X*(lambda) - X*(inf) = O(1 / (lambda * min w_i)); the filter keeps every penalised w_i above
    # max(eps, BOUNDARY_MARGIN).
    difference = problem.corrected_update(large_b) - problem.corrected_update(limit_b)
    bound = 1e-12 / max(eps, BOUNDARY_MARGIN) + RELATIVE_TOLERANCE
    assert float(torch.linalg.matrix_norm(difference)) <= bound * float(torch.linalg.matrix_norm(problem.dense_update))


# --- Section 4, property 2: updates inside the subspace -------------------------------------------


@SETTINGS
@given(
    problem=problems(column_kinds=("aligned", "aligned", "zero")),
    lambda_=st.one_of(lambdas, st.just(math.inf)),
    eps=epsilons,
)
def test_update_inside_subspace_is_unchanged_for_every_lambda(problem, lambda_, eps):
    assume(problem.subspace.rank > 0)
    _, corrected_b = correct(problem, lambda_=lambda_, eps=eps)

    assert_close_relative(problem.corrected_update(corrected_b), problem.dense_update, problem.dense_update)
    # With A of full row rank the factors see all of B, so B itself is kept too.
    r, n = problem.lora_a.shape
    if r <= n and int(torch.linalg.matrix_rank(problem.lora_a)) == r:
        assert_close_relative(corrected_b, problem.lora_b, problem.lora_b)


# --- Section 4, property 3: optimality and the dense reference ------------------------------------


@SETTINGS
@given(problem=problems(), lambda_=lambdas, eps=epsilons)
# Pinned: no subspace at all (k = 0), and r > k with a duplicated row of A and column of B.
@example(
    problem=build_problem(
        12, 9, 5, 0, seed=7, scale=3e-4, column_kinds=["mixed"] * 5, duplicate_a_row=True, duplicate_b_column=False
    ),
    lambda_=3.0,
    eps=0.05,
)
@example(
    problem=build_problem(
        15,
        11,
        8,
        2,
        seed=8,
        scale=40.0,
        column_kinds=["aligned", "off", "mixed", "mixed", "aligned", "off", "mixed", "zero"],
        duplicate_a_row=True,
        duplicate_b_column=True,
    ),
    lambda_=3.0,
    eps=0.05,
)
def test_corrected_update_equals_dense_reference(problem, lambda_, eps):
    assume_well_posed(problem, eps)
    _, corrected_b = correct(problem, lambda_=lambda_, eps=eps)

    expected = dense_closest_safe_update(problem, lambda_, eps)
    assert_close_relative(problem.corrected_update(corrected_b), expected, problem.dense_update)


@SETTINGS
@given(problem=problems(), eps=epsilons)
def test_infinite_lambda_equals_dense_reference(problem, eps):
    assume_well_posed(problem, eps)
    _, corrected_b = correct(problem, lambda_=math.inf, eps=eps)

    expected = dense_closest_safe_update(problem, math.inf, eps)
    assert_close_relative(problem.corrected_update(corrected_b), expected, problem.dense_update)


@SETTINGS
@given(problem=problems(), lambda_=lambdas, eps=epsilons)
def test_gradient_of_objective_vanishes_at_corrected_update(problem, lambda_, eps):
    directions = assume_well_posed(problem, eps)
    _, corrected_b = correct(problem, lambda_=lambda_, eps=eps)

    candidate = problem.corrected_update(corrected_b).detach().requires_grad_(True)
    dense_objective(candidate, problem, directions, lambda_, eps).backward()

    # The penalty term scales round-off in X* by up to lambda.
    bound = RELATIVE_TOLERANCE * (1.0 + lambda_) * float(torch.linalg.matrix_norm(problem.dense_update))
    assert float(torch.linalg.matrix_norm(candidate.grad)) <= bound


@SETTINGS
@given(problem=problems(column_kinds=("mixed", "off")), lambda_=st.floats(0.1, 1e3))
def test_gradient_check_is_not_vacuous(problem, lambda_):
    # At X = dW the gradient is lambda sum_i w_i (I - P) dW v_i v_i^T: nonzero once anything is penalised.
    eps = 0.05
    directions = assume_well_posed(problem, eps)
    complement = torch.eye(problem.projector.shape[0], dtype=DTYPE) - problem.projector
    assume(float(torch.linalg.matrix_norm(complement @ problem.dense_update)) > 0.0)
    assume(bool((dense_weights(directions, eps) > 0).any()))

    candidate = problem.dense_update.clone().requires_grad_(True)
    dense_objective(candidate, problem, directions, lambda_, eps).backward()
    assert float(torch.linalg.matrix_norm(candidate.grad)) > 1e-6 * float(
        torch.linalg.matrix_norm(problem.dense_update)
    )


# --- Section 4, property 4: only B changes --------------------------------------------------------


@SETTINGS
@given(problem=problems(), lambda_=st.one_of(lambdas, st.just(math.inf)), eps=epsilons)
def test_only_b_changes_and_rank_is_kept(problem, lambda_, eps):
    original_a = problem.lora_a.clone()
    original_b = problem.lora_b.clone()

    for method in (CSULORA, PROJECT, NONE):
        update, corrected_b = correct(problem, method=method, lambda_=lambda_, eps=eps)

        assert update.lora_a is problem.lora_a
        assert torch.equal(problem.lora_a, original_a)  # A bit for bit
        assert torch.equal(problem.lora_b, original_b)  # the input B is not written in place
        assert corrected_b.shape == problem.lora_b.shape  # same rank r, same (m, r)
        assert corrected_b.dtype == DTYPE
        assert bool(torch.isfinite(corrected_b).all())


@SETTINGS
@given(problem=problems(), lambda_=lambdas, eps=epsilons)
def test_factored_result_equals_corrected_update(problem, lambda_, eps):
    # s B' A == X* with X* built from the library's own factors, so no boundary filtering is needed.
    update, corrected_b = correct(problem, lambda_=lambda_, eps=eps)
    projector = problem.projector
    complement = torch.eye(projector.shape[0], dtype=DTYPE) - projector
    factors = attenuation_factors((update.left * (projector @ update.left)).sum(dim=0).clamp(0.0, 1.0), lambda_, eps)
    expected = (
        (projector @ update.left + complement @ update.left * factors) @ torch.diag(update.sigma) @ update.right.T
    )
    assert_close_relative(problem.corrected_update(corrected_b), expected, problem.dense_update)


def test_none_method_returns_b_itself():
    problem = build_problem(
        6, 5, 3, 2, seed=1, scale=0.5, column_kinds=["mixed"] * 3, duplicate_a_row=False, duplicate_b_column=False
    )
    _, corrected_b = correct(problem, method=NONE)
    assert torch.equal(corrected_b, problem.lora_b)


# --- Section 6: the reported energies ---------------------------------------------------------------


def dense_cosine(first: torch.Tensor, second: torch.Tensor) -> float:
    first_norm, second_norm = torch.linalg.matrix_norm(first), torch.linalg.matrix_norm(second)
    if first_norm == 0 and second_norm == 0:
        return 1.0
    if first_norm == 0 or second_norm == 0:
        return 0.0
    return float(((first / first_norm) * (second / second_norm)).sum())


def assert_figures_match_dense(problem: Problem, corrected_b: torch.Tensor, eps: float) -> None:
    update = decompose_update(problem.lora_b, problem.lora_a, problem.scale)
    figures = measure_correction(update, corrected_b, problem.subspace, eps)

    dense = problem.dense_update
    corrected = problem.corrected_update(corrected_b)
    reference = float(dense.square().sum())
    # Energies are compared relative to the larger of ||dW||^2 and ||X||^2 (an arbitrary B' may dominate).
    absolute = RELATIVE_TOLERANCE * max(reference, float(corrected.square().sum()))

    assert figures.update_energy == pytest.approx(reference, rel=RELATIVE_TOLERANCE, abs=0.0)
    assert figures.corrected_energy == pytest.approx(float(corrected.square().sum()), abs=absolute)
    assert figures.removed_energy == pytest.approx(float((dense - corrected).square().sum()), abs=absolute)
    aligned = float((problem.projector @ dense).square().sum())
    assert figures.aligned_energy == pytest.approx(aligned, abs=absolute)
    assert figures.aligned_fraction + figures.off_subspace_fraction == pytest.approx(
        1.0 if reference > 0 else 0.0, abs=1e-9
    )
    # The cosine is ill-conditioned when X* is round-off next to dW; it is exact when X* is exactly 0.
    corrected_norm = float(torch.linalg.matrix_norm(corrected))
    if corrected_norm == 0.0 or corrected_norm > 1e-6 * math.sqrt(reference):
        assert figures.cosine == pytest.approx(dense_cosine(dense, corrected), abs=1e-9)

    directions = dense_directions(dense, problem.projector)
    fully = directions.off <= eps
    outside = (directions.aligned <= eps) & ~fully
    assert figures.directions.aligned == int(fully.sum())
    assert figures.directions.off == int(outside.sum())
    assert figures.directions.partial == int((~fully & ~outside).sum())


@SETTINGS
@given(
    problem=problems(),
    method=st.sampled_from(("csulora", "project", "none")),
    lambda_=st.one_of(lambdas, st.just(math.inf)),
    eps=st.one_of(st.just(0.05), st.floats(0.01, 0.5)),
)
def test_reported_energies_match_dense_definitions(problem, method, lambda_, eps):
    assume_well_posed(problem, eps)
    _, corrected_b = correct(problem, method=get_method(method), lambda_=lambda_, eps=eps)
    assert_figures_match_dense(problem, corrected_b, eps)


@SETTINGS
@given(problem=problems(), seed=st.integers(0, 2**31 - 1), eps=st.floats(0.01, 0.5))
def test_reported_energies_hold_for_any_corrected_b(problem, seed, eps):
    # The figures are definitions, not properties of CSULoRA: an arbitrary B' (cosine < 0 too) must fit.
    assume_well_posed(problem, eps)
    generator = torch.Generator().manual_seed(seed)
    other_b = torch.randn(problem.lora_b.shape, generator=generator, dtype=DTYPE)
    assert_figures_match_dense(problem, other_b, eps)


@pytest.mark.parametrize("method", ["csulora", "project", "none"])
@pytest.mark.parametrize("k", [0, 3])
@pytest.mark.parametrize("zero_factor", ["b", "a"])
def test_zero_update_gives_zero_figures(method, k, zero_factor):
    problem = build_problem(
        8, 6, 4, k, seed=2, scale=2.0, column_kinds=["mixed"] * 4, duplicate_a_row=False, duplicate_b_column=False
    )
    if zero_factor == "b":
        problem = Problem(torch.zeros_like(problem.lora_b), problem.lora_a, problem.scale, problem.subspace)
    else:
        problem = Problem(problem.lora_b, torch.zeros_like(problem.lora_a), problem.scale, problem.subspace)

    update, corrected_b = correct(problem, method=get_method(method))
    figures = measure_correction(update, corrected_b, problem.subspace, eps=0.05)

    assert bool(torch.isfinite(corrected_b).all())
    assert float(problem.corrected_update(corrected_b).abs().max()) == 0.0
    values = (figures.update_energy, figures.corrected_energy, figures.removed_energy, figures.aligned_energy)
    assert values == (0.0, 0.0, 0.0, 0.0)
    assert figures.cosine == 1.0
    assert (figures.directions.aligned, figures.directions.partial, figures.directions.off) == (0, 0, 0)
    fractions = (figures.attenuation_fraction, figures.aligned_fraction, figures.off_subspace_fraction)
    assert fractions == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("scale", [1e-100, 1e100])
def test_cosine_survives_extreme_magnitudes(scale):
    problem = build_problem(
        10, 12, 3, 4, seed=0, scale=scale, column_kinds=["mixed"] * 3, duplicate_a_row=False, duplicate_b_column=False
    )
    update, corrected_b = correct(problem)
    figures = measure_correction(update, corrected_b, problem.subspace, eps=0.05)

    # Each energy is representable (about 1e+-198); only their product is not.
    assert 0.0 < figures.update_energy < math.inf
    assert 0.0 < figures.corrected_energy < math.inf
    expected = dense_cosine(problem.dense_update, problem.corrected_update(corrected_b))
    assert figures.cosine == pytest.approx(expected, abs=1e-9)


# --- Building blocks ---------------------------------------------------------------------------------


def test_attenuation_factors_edges():
    aligned = torch.tensor([1.0, 0.75, 0.5, 0.0], dtype=DTYPE)

    assert torch.equal(attenuation_factors(aligned, 0.0, 0.05), torch.ones(4, dtype=DTYPE))
    # lambda = inf: fully aligned kept (no inf * 0 = NaN), every penalised direction dropped.
    assert torch.equal(attenuation_factors(aligned, math.inf, 0.05), torch.tensor([1.0, 0.0, 0.0, 0.0]).double())
    assert torch.equal(attenuation_factors(aligned, math.inf, 0.0), torch.tensor([1.0, 0.0, 0.0, 0.0]).double())
    # o_i = eps exactly (0.25 is representable) counts as fully aligned.
    assert attenuation_factors(aligned, 3.0, 0.25)[1] == 1.0
    assert attenuation_factors(aligned, 3.0, 0.2)[1] == 1.0 / (1.0 + 3.0 * 0.25)
    # Off-subspace directions get f = 1 / (1 + lambda).
    assert attenuation_factors(aligned, 3.0, 0.05)[3] == 0.25
    # eps >= 1 classes everything as fully aligned.
    assert torch.equal(attenuation_factors(aligned, 1e6, 1.0), torch.ones(4, dtype=DTYPE))
    assert attenuation_factors(torch.zeros(0, dtype=DTYPE), 3.0, 0.05).shape == (0,)


@settings(max_examples=100, deadline=None, database=None)
@given(
    aligned=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10),
    lambda_=st.floats(0.0, 1e6),
    more=st.floats(0.0, 1e6),
    eps=st.floats(0.0, 0.5),
)
def test_attenuation_factors_are_in_unit_interval_and_monotone_in_lambda(aligned, lambda_, more, eps):
    aligned = torch.tensor(aligned, dtype=DTYPE)
    factors = attenuation_factors(aligned, lambda_, eps)
    stronger = attenuation_factors(aligned, lambda_ + more, eps)
    limit = attenuation_factors(aligned, math.inf, eps)

    assert bool(((factors > 0) & (factors <= 1)).all())
    assert bool((stronger <= factors).all())
    assert bool((limit <= stronger).all())
    off = 1.0 - aligned
    expected = torch.where(off <= eps, torch.ones_like(off), 1.0 / (1.0 + lambda_ * off))
    assert torch.allclose(factors, expected, rtol=1e-15, atol=0.0)


@pytest.mark.parametrize("shape", [(5, 3), (1, 1), (7, 0)])
def test_apply_projector_with_empty_basis_gives_zeros(shape):
    matrix = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    projected = apply_projector(torch.zeros(shape[0], 0, dtype=DTYPE), matrix)
    assert projected.shape == matrix.shape
    assert torch.equal(projected, torch.zeros_like(matrix))


@SETTINGS
@given(m=st.integers(1, 40), k_fraction=st.floats(0.0, 1.0), cols=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_apply_projector_matches_dense_projector(m, k_fraction, cols, seed):
    generator = torch.Generator().manual_seed(seed)
    subspace = make_subspace(m, round(k_fraction * m), generator)
    matrix = torch.randn(m, cols, generator=generator, dtype=DTYPE)
    dense = (subspace.basis @ subspace.basis.T) @ matrix
    assert_close_relative(apply_projector(subspace.basis, matrix), dense, matrix)
