"""The method variants of docs/method.md section 5 against dense float64 references that form every
matrix (dW, P, the SVDs, the objective) explicitly; the library works from factors only.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from test_correction_math import (
    DTYPE,
    SETTINGS,
    assert_close_relative,
    assume_well_posed,
    correct,
    epsilons,
    lambdas,
    problems,
)

from csulora_cli.correction import CorrectionParams
from csulora_cli.methods import METHODS

INSIDE = METHODS["csulora-inside"]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
