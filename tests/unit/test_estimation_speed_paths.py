"""The fast paths of estimation keep its results: Cholesky QR (linalg.orthonormal_basis), the shared
thread setting (linalg.threads) and several estimators at once (providers.estimation_workers)."""

from __future__ import annotations

import math
from contextlib import ExitStack

import pytest
import torch

from csulora_cli.api import EstimateRequest, estimate_subspace
from csulora_cli.subspace import linalg, providers
from csulora_cli.subspace.estimate import EstimationParams, estimate_basis
from csulora_cli.subspace.folder import SubspaceFolder


def _tall(rows: int, columns: int, condition: float, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """A (rows, columns) matrix of the given condition number, singular values spread geometrically."""
    generator = torch.Generator().manual_seed(seed)
    left, _ = torch.linalg.qr(torch.randn(rows, columns, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(columns, columns, generator=generator, dtype=torch.float64))
    values = torch.logspace(0.0, -math.log10(condition), columns, dtype=torch.float64)
    return ((left * values) @ right.T).to(dtype)


def _assert_orthonormal_basis_of(basis: torch.Tensor, tall: torch.Tensor, tolerance: float) -> None:
    assert basis.shape == tall.shape and basis.dtype == tall.dtype
    basis64, tall64 = basis.double(), tall.double()
    identity = torch.eye(basis.shape[1], dtype=torch.float64)
    assert float((basis64.T @ basis64 - identity).abs().max()) <= tolerance
    # It spans the input: what the basis leaves of the input is round-off.
    residual = tall64 - basis64 @ (basis64.T @ tall64)
    assert float(residual.norm()) <= tolerance * float(tall64.norm())


@pytest.fixture
def householder_calls(monkeypatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    householder = linalg.qr

    def counting(matrix):
        calls.append(tuple(matrix.shape))
        return householder(matrix)

    monkeypatch.setattr(linalg, "qr", counting)
    return calls


@pytest.mark.parametrize(
    ("condition", "dtype", "tolerance", "householder"),
    [
        (10.0, torch.float32, 2e-6, False),
        (1e3, torch.float32, 2e-6, False),
        (1e6, torch.float32, 2e-6, False),  # beyond float32 Cholesky QR: float64 takes it
        (1e6, torch.float64, 1e-12, False),
        (1e10, torch.float64, 1e-12, True),  # beyond float64 Cholesky QR (~7e7) too
    ],
)
def test_cholesky_qr_is_an_orthonormal_basis_of_its_input(condition, dtype, tolerance, householder, householder_calls):
    tall = _tall(2048, 64, condition, seed=1, dtype=dtype)
    _assert_orthonormal_basis_of(linalg.orthonormal_basis(tall), tall, tolerance)
    assert householder_calls == ([(2048, 64)] if householder else [])


def test_rank_deficient_input_goes_to_householder_and_still_gets_a_full_orthonormal_basis(householder_calls):
    generator = torch.Generator().manual_seed(2)
    tall = torch.randn(2048, 8, generator=generator) @ torch.randn(8, 64, generator=generator)  # rank 8 of 64
    basis = linalg.orthonormal_basis(tall)
    assert householder_calls == [(2048, 64)]
    _assert_orthonormal_basis_of(basis, tall, 2e-6)


def test_short_matrices_keep_householder(householder_calls):
    tall = _tall(512, 64, 10.0, seed=3, dtype=torch.float64)
    _assert_orthonormal_basis_of(linalg.orthonormal_basis(tall), tall, 1e-12)
    assert householder_calls == [(512, 64)]


def test_randomized_estimate_through_cholesky_qr_matches_the_exact_subspace():
    """At 2048 rows every QR of the finder is a Cholesky QR; the float64 bounds of the small cases hold."""
    generator = torch.Generator().manual_seed(4)
    m, n, k = 2048, 1200, 12
    left, _ = torch.linalg.qr(torch.randn(m, n, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    index = torch.arange(n, dtype=torch.float64)
    spectrum = torch.where(index < k, 0.9**index, 0.1 * 0.9**index)
    displacement = (left * spectrum) @ right.T
    estimate = estimate_basis(displacement, EstimationParams(max_rank=k), reference_energy=1.0)
    cosines = torch.linalg.svdvals(estimate.basis.T @ left[:, :k])
    assert math.acos(min(1.0, float(cosines.min()))) < 1e-3
    assert torch.allclose(estimate.basis.T @ estimate.basis, torch.eye(k, dtype=torch.float64), atol=1e-12)
    # V^T u_j = S_j w_j: the right vectors are paired with the left ones, signs included.
    paired = displacement.T @ estimate.basis - estimate.right * estimate.singular_values
    assert float(paired.abs().max()) <= 1e-8


def test_thread_blocks_that_overlap_leave_the_process_on_its_own_count():
    previous = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with ExitStack() as outer_stack:
            outer_stack.enter_context(linalg.threads(2))
            assert torch.get_num_threads() == 2
            inner = ExitStack()
            inner.enter_context(linalg.threads(1))
            assert torch.get_num_threads() == 1
            outer_stack.close()  # the outer block ends first: the inner one still asks for one thread
            assert torch.get_num_threads() == 1
            inner.close()
        assert torch.get_num_threads() == 4
        with linalg.threads(3), linalg.one_thread(torch.zeros(1)):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(previous)


def test_estimators_share_the_threads_on_a_cpu_only():
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert providers.estimation_workers(torch.device("cpu")) == (2, 1)
        assert providers.estimation_workers(torch.device("meta")) == (1, 2)  # a GPU's work is serial
        torch.set_num_threads(5)
        assert providers.estimation_workers(torch.device("cpu")) == (2, 2)
        torch.set_num_threads(1)
        assert providers.estimation_workers(torch.device("cpu")) == (1, 1)
    finally:
        torch.set_num_threads(previous)


def test_several_estimators_give_the_bases_of_one(demo_models, tmp_path, monkeypatch):
    base, aligned, adapter = demo_models
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    folders = {}
    try:
        for workers in (1, 2):
            monkeypatch.setattr(providers, "MAX_ESTIMATION_WORKERS", workers)
            out = tmp_path / f"workers-{workers}"
            estimate_subspace(
                EstimateRequest(
                    base=str(base),
                    aligned=str(aligned),
                    adapter=adapter,
                    cache_dir=tmp_path / f"cache-{workers}",
                    out=out,
                )
            )
            folders[workers] = SubspaceFolder(out)
    finally:
        torch.set_num_threads(previous)
    assert torch.get_num_threads() == previous
    one, two = folders[1], folders[2]
    assert sorted(one.modules) == sorted(two.modules)
    for entry in one.modules.values():
        first = one.load(entry["key"], entry["transposed"])
        second = two.load(entry["key"], entry["transposed"])
        assert torch.allclose(first.basis.T @ first.basis, torch.eye(first.basis.shape[1]), atol=1e-5)
        # Same directions (products on one thread or two differ only in round-off).
        assert torch.allclose(first.singular_values, second.singular_values, rtol=1e-4)
        assert torch.allclose((first.basis * second.basis).sum(0).abs(), torch.ones(first.basis.shape[1]), atol=1e-3)
