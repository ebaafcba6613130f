"""The method variants of docs/method.md section 5 against dense float64 references that form every
matrix (dW, P, the SVDs, the objective) explicitly; the library works from factors only.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from csulora_cli.correction.decompose import decompose_update
from csulora_cli.correction.measures import measure_correction
from csulora_cli.correction.methods import get_method
from csulora_cli.correction.params import CorrectionParams
from csulora_cli.subspace.estimate import EstimationParams, estimate_basis
from tests.unit.test_correction_math import (
    DTYPE,
    SETTINGS,
    Problem,
    assert_close_relative,
    assume_well_posed,
    correct,
    epsilons,
    lambdas,
    problems,
)

INSIDE = get_method("csulora-inside")


# Tiny matrices: one thread is faster, and spares a busy machine thread contention (fixture in conftest).
pytestmark = pytest.mark.usefixtures("single_thread")


# --- csulora-inside: the complement of section 4 ------------------------------------------------------


def dense_inside(problem, lambda_: float, eps: float, directions) -> torch.Tensor:
    """X* = sum_i sigma_i [(I - P) u_i + g_i P u_i] v_i^T, g_i = 1 / (1 + lambda w_i), w_i = a_i or 0."""
    projector = problem.projector
    complement = torch.eye(projector.shape[0], dtype=DTYPE) - projector
    weights = torch.where(directions.aligned <= eps, torch.zeros_like(directions.aligned), directions.aligned)
    factors = (weights == 0).to(DTYPE) if math.isinf(lambda_) else 1.0 / (1.0 + lambda_ * weights)
    result = torch.zeros_like(problem.dense_update)
    for i in range(directions.sigma.numel()):
        u, v = directions.left[:, i], directions.right[:, i]
        result += directions.sigma[i] * torch.outer(complement @ u + factors[i] * (projector @ u), v)
    return result


def inside_objective(candidate, problem, directions, lambda_: float, eps: float) -> torch.Tensor:
    """1/2 ||X - dW||^2 + lambda/2 sum_i w_i ||P X v_i||^2."""
    weights = torch.where(directions.aligned <= eps, torch.zeros_like(directions.aligned), directions.aligned)
    fidelity = 0.5 * (candidate - problem.dense_update).square().sum()
    penalty = (weights * (problem.projector @ candidate @ directions.right).square().sum(dim=0)).sum()
    return fidelity + 0.5 * lambda_ * penalty


@SETTINGS
@given(problem=problems(), lambda_=st.one_of(lambdas, st.just(math.inf)), eps=epsilons)
def test_inside_equals_dense_reference_and_is_optimal(problem, lambda_, eps):
    directions = assume_well_posed(problem, eps)
    _, corrected_b = correct(problem, method=INSIDE, lambda_=lambda_, eps=eps)
    written = problem.corrected_update(corrected_b)

    assert_close_relative(written, dense_inside(problem, lambda_, eps, directions), problem.dense_update)
    if not math.isinf(lambda_):
        candidate = written.detach().requires_grad_(True)
        inside_objective(candidate, problem, directions, lambda_, eps).backward()
        bound = 1e-10 * (1.0 + lambda_) * float(torch.linalg.matrix_norm(problem.dense_update))
        assert float(torch.linalg.matrix_norm(candidate.grad)) <= bound


@SETTINGS
@given(problem=problems())
def test_inside_limits(problem):
    update = problem.dense_update
    complement = torch.eye(problem.projector.shape[0], dtype=DTYPE) - problem.projector
    _, unchanged = correct(problem, method=INSIDE, lambda_=0.0, eps=0.05)
    _, outside = correct(problem, method=INSIDE, lambda_=math.inf, eps=0.0)
    assert_close_relative(problem.corrected_update(unchanged), update, update)
    assert_close_relative(problem.corrected_update(outside), complement @ update, update)


@SETTINGS
@given(problem=problems(column_kinds=("off", "off", "zero")), lambda_=st.one_of(lambdas, st.just(math.inf)))
def test_inside_keeps_an_update_outside_the_subspace(problem, lambda_):
    assume(problem.subspace.rank < problem.lora_b.shape[0])
    _, corrected_b = correct(problem, method=INSIDE, lambda_=lambda_, eps=0.05)
    assert_close_relative(problem.corrected_update(corrected_b), problem.dense_update, problem.dense_update)


def test_inside_reports_its_knobs():
    assert INSIDE.parameters(CorrectionParams(lambda_=2.0, eps=0.1)) == {"lambda": 2.0, "eps": 0.1}


# --- Problems whose subspace has both sides: V is (m, n) like the update --------------------------------

BOUNDARY_MARGIN = 1e-7


@st.composite
def sided_problems(draw, max_side: int = 14) -> Problem:
    """V: (m, n) with its exact top-k pairs; B and A partly built from U_k and W_k, so every class and
    both signs of c_j occur; A optionally rank-deficient (a repeated row)."""
    m, n, r = draw(st.integers(1, max_side)), draw(st.integers(1, max_side)), draw(st.integers(1, 6))
    k = draw(st.integers(0, min(m, n)))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    displacement = torch.randn(m, n, generator=generator, dtype=DTYPE)
    basis = estimate_basis(displacement, EstimationParams(max_rank=max(k, 1), exact=True), reference_energy=1.0)
    subspace = basis.select(energy=1.0, max_rank=k) if k else basis.select(energy=1.0, max_rank=0)
    assert subspace.rank == k

    def column(rows: int, inside: torch.Tensor, kind: str) -> torch.Tensor:
        raw = torch.randn(rows, generator=generator, dtype=DTYPE)
        if kind == "inside" and inside.shape[1]:
            return inside @ torch.randn(inside.shape[1], generator=generator, dtype=DTYPE)
        return raw

    b_kinds = draw(st.lists(st.sampled_from(["inside", "mixed"]), min_size=r, max_size=r))
    a_kinds = draw(st.lists(st.sampled_from(["inside", "mixed"]), min_size=r, max_size=r))
    lora_b = torch.stack([column(m, subspace.basis, kind) for kind in b_kinds], dim=1)
    lora_a = torch.stack([column(n, subspace.right, kind) for kind in a_kinds], dim=0)
    if draw(st.booleans()) and r >= 2:
        lora_a[r - 1] = -2.0 * lora_a[0]
    scale = 10.0 ** draw(st.floats(-3.0, 3.0))
    return Problem(lora_b, lora_a, scale, subspace)


def dense_row_projector(lora_a: torch.Tensor) -> torch.Tensor:
    """Pi_A = A^+ A: (n, n), the projector onto A's row space."""
    return torch.linalg.pinv(lora_a, rtol=1e-10) @ lora_a


def input_projector(problem: Problem) -> torch.Tensor:
    right = problem.subspace.right
    return right @ right.T


def relative_error(actual: torch.Tensor, expected: torch.Tensor, reference: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(actual - expected)) / max(float(torch.linalg.matrix_norm(reference)), 1e-300)


# --- csulora-signed ---------------------------------------------------------------------------------------

SIGNED = get_method("csulora-signed")


def dense_signed(problem: Problem, lambda_: float) -> torch.Tensor:
    """min over B' of 1/2 ||s B' A - dW||^2 + lambda/2 sum_{c_j < 0} <s B' A, u_j w_j^T>^2, solved as one
    dense least-squares problem in vec(B') (row-major: vec(s B' A) = s (I_m kron A^T) vec(B'))."""
    m, r = problem.lora_b.shape
    update = problem.dense_update
    operator = problem.scale * torch.block_diag(*[problem.lora_a.T] * m)  # I_m kron A^T: (m n, m r)
    rows, targets = [operator], [update.reshape(-1)]
    for j in range(problem.subspace.rank):
        u, w = problem.subspace.basis[:, j], problem.subspace.right[:, j]
        if float(u @ update @ w) < 0:
            direction = torch.outer(u, w).reshape(1, -1)  # <X, u w^T> = vec(u w^T) . vec(X)
            rows.append(lambda_**0.5 * direction @ operator)
            targets.append(torch.zeros(1, dtype=DTYPE))
    solution = torch.linalg.pinv(torch.cat(rows), rtol=1e-10) @ torch.cat(targets)
    return problem.scale * solution.reshape(m, r) @ problem.lora_a


def coefficients(problem: Problem, matrix: torch.Tensor) -> torch.Tensor:
    basis, right = problem.subspace.basis, problem.subspace.right
    return torch.stack([basis[:, j] @ matrix @ right[:, j] for j in range(problem.subspace.rank)])


@SETTINGS
@given(problem=sided_problems(max_side=9), lambda_=st.one_of(st.just(0.0), st.just(3.0), st.floats(0.0, 1e3)))
def test_signed_equals_the_dense_least_squares_solution(problem, lambda_):
    _, corrected_b = correct(problem, method=SIGNED, lambda_=lambda_)
    written = problem.corrected_update(corrected_b)
    expected = dense_signed(problem, lambda_)
    assert relative_error(written, expected, problem.dense_update) < 1e-8


@SETTINGS
@given(problem=sided_problems(), lambda_=st.one_of(st.floats(0.0, 1e3), st.just(math.inf)))
def test_signed_attenuates_only_negative_coefficients(problem, lambda_):
    """Each c_j < 0 becomes c_j / (1 + lambda gamma_j), gamma_j = ||Pi_A w_j||^2; c_j >= 0 is kept, and
    with no negative coefficient B itself is kept."""
    assume(problem.subspace.rank > 0)
    _, corrected_b = correct(problem, method=SIGNED, lambda_=lambda_)
    before = coefficients(problem, problem.dense_update)
    after = coefficients(problem, problem.corrected_update(corrected_b))
    reach = (dense_row_projector(problem.lora_a) @ problem.subspace.right).square().sum(dim=0)
    assume(bool((reach > 1e-6).all()))
    if math.isinf(lambda_):
        expected = torch.where(before < 0, torch.zeros_like(before), before)
    else:
        expected = torch.where(before < 0, before / (1.0 + lambda_ * reach), before)
    size = float(torch.linalg.matrix_norm(problem.dense_update))
    assert float((after - expected).abs().max()) <= 1e-8 * size
    if bool((before >= 0).all()):
        assert torch.equal(corrected_b, problem.lora_b)


def test_signed_needs_nothing_but_lambda():
    assert SIGNED.parameters(CorrectionParams(lambda_=2.0, eps=0.3)) == {"lambda": 2.0}
    assert SIGNED.needs_right_vectors and not SIGNED.supports_two_sided


# --- --two-sided: csulora, project, csulora-inside --------------------------------------------------------


def dense_two_sided_target(problem: Problem, method: str, lambda_: float, eps: float) -> torch.Tensor:
    """Per direction D_i = sigma_i u_i v_i^T with Pi(X) = P_out X P_in and a_i = ||P_out u_i||^2 ||P_in v_i||^2."""
    update = problem.dense_update
    output, inner = problem.projector, input_projector(problem)
    if method == "project":
        return output @ update @ inner
    left, sigma, right_t = torch.linalg.svd(update, full_matrices=False)
    carries = sigma > 1e-10 * sigma.max() if sigma.numel() and sigma.max() > 0 else sigma > 0
    target = torch.zeros_like(update)
    for i in torch.nonzero(carries).flatten().tolist():
        direction = sigma[i] * torch.outer(left[:, i], right_t[i])
        inside = output @ direction @ inner
        aligned = float(left[:, i] @ output @ left[:, i]) * float(right_t[i] @ inner @ right_t[i])
        assume(abs(aligned - eps) > BOUNDARY_MARGIN and abs(1.0 - aligned - eps) > BOUNDARY_MARGIN)
        weight = 0.0
        if method == "csulora" and 1.0 - aligned > eps:
            weight = 1.0 - aligned
        if method == "csulora-inside" and aligned > eps:
            weight = aligned
        factor = (1.0 if weight == 0.0 else 0.0) if math.isinf(lambda_) else 1.0 / (1.0 + lambda_ * weight)
        if method == "csulora":
            target += inside + factor * (direction - inside)
        else:
            target += (direction - inside) + factor * inside
    return target


@SETTINGS
@given(
    problem=sided_problems(),
    method=st.sampled_from(["csulora", "project", "csulora-inside"]),
    lambda_=st.one_of(lambdas, st.just(math.inf)),
    eps=epsilons,
)
def test_two_sided_is_the_closest_b_to_the_dense_target(problem, method, lambda_, eps):
    """s B' A equals the target with its rows projected onto A's row space: the least-squares B'."""
    target = dense_two_sided_target(problem, method, lambda_, eps)
    params = CorrectionParams(lambda_=lambda_, eps=eps, two_sided=True)
    update = decompose_update(problem.lora_b, problem.lora_a, problem.scale)
    corrected_b = get_method(method).corrected_b(update, problem.subspace, params)
    written = problem.corrected_update(corrected_b)

    expected = target @ dense_row_projector(problem.lora_a)
    assert relative_error(written, expected, problem.dense_update) < 1e-8
    # Optimality for fixed A: the residual is orthogonal to every s E A, i.e. (X - target) A^T = 0.
    residual = (written - target) @ problem.lora_a.T
    assert float(torch.linalg.matrix_norm(residual)) <= 1e-8 * float(
        torch.linalg.matrix_norm(problem.dense_update)
    ) * max(1.0, float(torch.linalg.matrix_norm(problem.lora_a)))


@SETTINGS
@given(problem=sided_problems())
def test_two_sided_csulora_limits(problem):
    """lambda = 0 returns dW (within A's row space, which dW already is); lambda = inf with eps = 0 the
    two-sided projection, which is also what project --two-sided writes."""
    update = problem.dense_update
    two_sided = {"two_sided": True}
    decomposed = decompose_update(problem.lora_b, problem.lora_a, problem.scale)
    kept = get_method("csulora").corrected_b(decomposed, problem.subspace, CorrectionParams(lambda_=0.0, **two_sided))
    limit = get_method("csulora").corrected_b(
        decomposed, problem.subspace, CorrectionParams(lambda_=math.inf, eps=0.0, **two_sided)
    )
    projected = get_method("project").corrected_b(decomposed, problem.subspace, CorrectionParams(**two_sided))
    assert relative_error(problem.corrected_update(kept), update, update) < 1e-9
    assert relative_error(problem.corrected_update(limit), problem.corrected_update(projected), update) < 1e-9


@SETTINGS
@given(problem=sided_problems())
def test_two_sided_report_figures_match_their_dense_definitions(problem):
    update = problem.dense_update
    assume(float(torch.linalg.matrix_norm(update)) > 0)
    decomposed = decompose_update(problem.lora_b, problem.lora_a, problem.scale)
    figures = measure_correction(decomposed, problem.lora_b, problem.subspace, 0.05, two_sided=True)
    inside = problem.projector @ update @ input_projector(problem)
    assert figures.aligned_energy == pytest.approx(float(inside.square().sum()), rel=1e-9, abs=1e-12)
    one_sided = measure_correction(decomposed, problem.lora_b, problem.subspace, 0.05)
    assert figures.aligned_energy <= one_sided.aligned_energy * (1 + 1e-9) + 1e-300
