"""The fast paths of estimation keep its results: Cholesky QR (linalg.orthonormal_basis), the shared
thread setting (linalg.threads), several estimators at once (estimating.estimation_workers) and the
bfloat16 copy that steers the randomized finder (estimate._randomized_singular, hardware)."""

from __future__ import annotations

import math
import threading
import time
from contextlib import ExitStack

import pytest
import torch

from csulora_cli.api import EstimateRequest, estimate_subspace
from csulora_cli.subspace import estimate as estimate_module
from csulora_cli.subspace import estimating, hardware, linalg
from csulora_cli.subspace.estimate import EstimationParams, estimate_basis, uses_sketch
from csulora_cli.subspace.folder import SubspaceFolder
from csulora_cli.subspace.keys import Target


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


def test_one_round_spans_the_input_with_a_well_conditioned_basis(householder_calls):
    tall = _tall(2048, 64, 1e3, seed=6, dtype=torch.float32)
    basis = linalg.orthonormal_basis(tall, rounds=1)
    basis64, tall64 = basis.double(), tall.double()
    # Not orthonormal to round-off but conditioned: one round leaves Q^T Q - I of order eps * cond(input)^2,
    # 6e-8 * 1e6 here (1.0105 measured on one machine, 1.009 on another).
    assert torch.linalg.cond(basis64) < 1.2
    projector_residual = tall64 - basis64 @ torch.linalg.lstsq(basis64, tall64).solution
    assert float(projector_residual.norm()) <= 1e-6 * float(tall64.norm())  # the same span
    assert householder_calls == []


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
        assert estimating.estimation_workers(torch.device("cpu")) == (2, 1)
        assert estimating.estimation_workers(torch.device("meta")) == (1, 2)  # a GPU's work is serial
        torch.set_num_threads(5)
        assert estimating.estimation_workers(torch.device("cpu")) == (2, 2)
        torch.set_num_threads(1)
        assert estimating.estimation_workers(torch.device("cpu")) == (1, 1)
    finally:
        torch.set_num_threads(previous)


def _estimate_folder(demo_models, out, params: EstimationParams) -> SubspaceFolder:
    """estimate-subspace into `out`, through a cache of its own (so nothing is found from another run)."""
    base, aligned, adapter = demo_models
    request = EstimateRequest(
        base=str(base),
        aligned=str(aligned),
        adapter=adapter,
        estimation=params,
        cache_dir=out.with_suffix(".cache"),
        out=out,
    )
    estimate_subspace(request)
    return SubspaceFolder(out)


def test_several_estimators_give_the_bases_of_one(demo_models, tmp_path, monkeypatch):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    folders = {}
    try:
        for workers in (1, 2):
            monkeypatch.setattr(estimating, "MAX_ESTIMATION_WORKERS", workers)
            folders[workers] = _estimate_folder(demo_models, tmp_path / f"workers-{workers}", EstimationParams())
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


# --- bfloat16 steering of the randomized finder -------------------------------------------------------


def _gapped_float32(m: int, n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    left, _ = torch.linalg.qr(torch.randn(m, n, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    index = torch.arange(n, dtype=torch.float64)
    spectrum = torch.where(index < k, 0.9**index, 0.1 * 0.9**index)
    return ((left * spectrum) @ right.T).float(), left


def test_bfloat16_steering_finds_the_same_subspace_and_keeps_everything_else_exact():
    displacement, exact_left = _gapped_float32(2048, 1200, 12, seed=5)
    params = EstimationParams(max_rank=40)
    plain = estimate_basis(displacement, params, reference_energy=1.0)
    steered = estimate_basis(displacement, params, reference_energy=1.0, low_precision=displacement.to(torch.bfloat16))
    assert steered.basis.dtype == torch.float32 and steered.right.dtype == torch.float32
    identity = torch.eye(40)
    assert float((steered.basis.T @ steered.basis - identity).abs().max()) < 1e-5
    # Rayleigh-Ritz on the subspace found is done in float32: V^T u_j = S_j w_j to float32 round-off.
    paired = displacement.T @ steered.basis - steered.right * steered.singular_values
    assert float(paired.abs().max()) <= 1e-5 * float(steered.singular_values[0])
    for estimate in (plain, steered):
        cosines = torch.linalg.svdvals(estimate.basis[:, :12].double().T @ exact_left[:, :12])
        assert math.acos(min(1.0, float(cosines.min()))) < 1e-2  # the float32 bound of test_subspace_math
    assert steered.select(0.9).rank == plain.select(0.9).rank
    assert steered.select(0.9).captured_energy == pytest.approx(plain.select(0.9).captured_energy, rel=1e-5)


@pytest.mark.parametrize(
    ("shape", "params", "randomized"),
    [
        ((2048, 600), EstimationParams(), True),
        ((100, 400), EstimationParams(), False),  # the sketch would be over half of 100: Gram route
        ((60, 40), EstimationParams(max_rank=4, exact=True), False),  # the last case's shape, which would sketch
        ((60, 40), EstimationParams(max_rank=4), True),
    ],
)
def test_uses_sketch_names_the_randomized_path(shape, params, randomized, monkeypatch):
    assert uses_sketch(shape, params) is randomized
    taken = []
    finder = estimate_module._randomized_singular

    def spy(*args):
        taken.append(True)
        return finder(*args)

    monkeypatch.setattr(estimate_module, "_randomized_singular", spy)
    estimate_basis(torch.randn(*shape), params, reference_energy=1.0)
    assert bool(taken) is randomized


@pytest.mark.parametrize(
    ("flags", "fast"), [("fpu avx2 avx512_bf16 sse", True), ("fpu amx_bf16", True), ("fpu avx2", False)]
)
def test_bfloat16_is_fast_only_with_the_cpu_flags_for_it(flags, fast, monkeypatch):
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: frozenset(flags.split()))
    assert hardware.bfloat16_is_fast(torch.device("cpu")) is fast
    assert hardware.bfloat16_is_fast(torch.device("meta")) is False


def test_estimation_steered_in_bfloat16_or_not_gives_the_same_subspaces(demo_models, tmp_path, monkeypatch):
    params = EstimationParams(max_rank=4)  # a sketch narrow enough for the randomized path on demo shapes
    folders = {}
    for fast in (False, True):
        monkeypatch.setattr(estimating, "bfloat16_is_fast", lambda device, fast=fast: fast)
        folders[fast] = _estimate_folder(demo_models, tmp_path / f"bf16-{fast}", params)
    plain, steered = folders[False], folders[True]
    assert sorted(plain.modules) == sorted(steered.modules)
    for entry in plain.modules.values():
        first = plain.load(entry["key"], entry["transposed"])
        second = steered.load(entry["key"], entry["transposed"])
        assert torch.allclose(first.singular_values, second.singular_values, rtol=1e-3)
        cosines = torch.linalg.svdvals(first.basis[:, :2].double().T @ second.basis[:, :2].double())
        assert float(cosines.min()) > 0.999


# --- scheduling of the estimators -------------------------------------------------------------------


class _NoKeys:
    def keys(self) -> list[str]:
        return []


def test_a_free_estimator_takes_the_next_module_while_the_first_is_still_running(monkeypatch):
    """Bases come out in target order, but a slow first module does not hold the other estimator idle:
    it goes on with later modules, up to the bounded number of finished bases that may wait."""
    monkeypatch.setattr(estimating, "estimation_workers", lambda device: (2, 1))
    provider = estimating.EstimatingProvider(_NoKeys(), _NoKeys(), None, EstimationParams(), torch.device("cpu"))
    targets = [Target(f"layers.{index}.weight", False) for index in range(12)]
    started: list[Target] = []
    first_released = threading.Event()
    started_while_first_ran: list[int] = []

    def produce(target, lookup):
        started.append(target)
        if target == targets[0]:
            assert first_released.wait(30)
        return f"basis of {target.base_key}", False

    window = 2 + estimating.PREFETCH_MODULES + estimating.MAX_WAITING_BASES

    def release_first_once_the_others_settle():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(started) < window:
            time.sleep(0.01)
        time.sleep(0.2)  # anything beyond the window would have started by now
        started_while_first_ran.append(len(started))
        first_released.set()

    monkeypatch.setattr(provider, "_fetch", lambda target: (None, None))
    monkeypatch.setattr(provider, "_produce", produce)
    releaser = threading.Thread(target=release_first_once_the_others_settle)
    releaser.start()
    yielded = [(target, basis) for target, basis, _ in provider._bases_in_order(targets)]
    releaser.join()

    assert yielded == [(target, f"basis of {target.base_key}") for target in targets]
    # Every module the window allows was estimated while the first one ran (in-order submission gave 3),
    # and no more: finished bases waiting for the first are bounded.
    assert started_while_first_ran == [window]
