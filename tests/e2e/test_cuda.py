"""`--device cuda` against the same work on the CPU: the estimator, every correction method and a whole run.

Every test computes one thing twice, on the CPU and on the comparison device, and asks for

- the same `k` from `select`, and a largest principal angle under 0.1 degree between the two bases;
- a corrected `B` within a relative Frobenius error of 1e-4.

The comparison device is `cuda`, and the module is skipped where torch sees no CUDA device. To check the
test logic itself on a CPU-only machine, `CSULORA_TEST_DEVICE=cpu` makes the comparison device the CPU
(then every comparison is cpu against cpu):

    CSULORA_TEST_DEVICE=cpu pytest -q -m cuda tests/e2e/test_cuda.py   # dry run, anywhere
    pytest -q -m cuda tests/e2e/test_cuda.py                           # on a machine with a GPU

The tolerances assume float32 products stay float32 on the GPU (torch's default). TF32 matmuls (turned
on by `torch.set_float32_matmul_precision("high")` or `torch.backends.cuda.matmul.allow_tf32`) round to
about 1e-3 and would fail them, so the tests refuse to run in that setting rather than report noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch

from csulora_cli.correction.decompose import decompose_update
from csulora_cli.correction.methods import METHODS, get_method
from csulora_cli.correction.params import CorrectionParams
from csulora_cli.subspace.estimate import (
    EXACT_WHEN_SKETCH_FRACTION_ABOVE,
    EstimationParams,
    SelectedSubspace,
    SubspaceBasis,
    estimate_basis,
)
from tests.helpers import RANK, assert_ok, load_tensors, run_cli

# The device every result is compared against.
REFERENCE_DEVICE = "cpu"
# `CSULORA_TEST_DEVICE=cpu` for a dry run of the comparisons on a machine without a GPU.
FORCED_DEVICE = os.environ.get("CSULORA_TEST_DEVICE", "").strip()
DEVICES = [FORCED_DEVICE] if FORCED_DEVICE else ["cuda"]

RELATIVE_B_TOLERANCE = 1e-4
MAX_ANGLE_DEGREES = 0.1
ENERGY = 0.95

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.slow,
    pytest.mark.skipif(
        any(device.startswith("cuda") for device in DEVICES) and not torch.cuda.is_available(),
        reason="torch sees no CUDA device (set CSULORA_TEST_DEVICE=cpu to dry-run these comparisons on the CPU)",
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    name = request.param
    if not (name == "cpu" or name.startswith("cuda")):
        pytest.fail(f"CSULORA_TEST_DEVICE must be cpu or cuda[:N], got {name!r}")
    if name.startswith("cuda") and torch.get_float32_matmul_precision() != "highest":
        pytest.fail("TF32 matmuls are on (float32 matmul precision is not 'highest'): results round to ~1e-3")
    return name


# --- Comparisons -------------------------------------------------------------------------------------


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected||_F / ||expected||_F in float64 on the CPU (the absolute error if expected is 0)."""
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = float(torch.linalg.vector_norm(actual - expected))
    scale = float(torch.linalg.vector_norm(expected))
    return error / scale if scale > 0.0 else error


def largest_principal_angle_degrees(first: torch.Tensor, second: torch.Tensor) -> float:
    """Largest principal angle between the column spans of two orthonormal (m, k) bases, in degrees.

    From the sine, ||(I - Q1 Q1^T) Q2||_2, which stays accurate for tiny angles (the cosine of 0.01 degree
    differs from 1 by 1.5e-8).
    """
    first, second = first.detach().cpu().double(), second.detach().cpu().double()
    assert first.shape == second.shape, (first.shape, second.shape)
    if first.shape[1] == 0:
        return 0.0
    residual = second - first @ (first.T @ second)
    sine = float(torch.linalg.matrix_norm(residual, ord=2))
    return math.degrees(math.asin(min(1.0, sine)))


def assert_b_close(actual: torch.Tensor, expected: torch.Tensor, where: str) -> None:
    error = relative_error(actual, expected)
    assert error <= RELATIVE_B_TOLERANCE, f"{where}: corrected B differs by a relative {error:.3e}"


def assert_same_subspace(actual: SubspaceBasis, expected: SubspaceBasis, where: str) -> int:
    """Equal k at ENERGY, bases (both sides) within MAX_ANGLE_DEGREES, singular values to 1e-4; returns k."""
    selected, reference = actual.select(ENERGY), expected.select(ENERGY)
    assert selected.rank == reference.rank, f"{where}: k = {selected.rank} on the device, {reference.rank} on the CPU"
    angle = largest_principal_angle_degrees(reference.basis, selected.basis)
    assert angle < MAX_ANGLE_DEGREES, f"{where}: largest principal angle {angle:.4f} degrees"
    right_angle = largest_principal_angle_degrees(reference.right, selected.right)
    assert right_angle < MAX_ANGLE_DEGREES, f"{where}: right vectors' largest principal angle {right_angle:.4f}"
    values_error = relative_error(selected.singular_values, reference.singular_values)
    assert values_error <= 1e-4, f"{where}: singular values differ by a relative {values_error:.3e}"
    assert actual.total_energy == pytest.approx(expected.total_energy, rel=1e-5), where
    return reference.rank


# --- Seeded problems -----------------------------------------------------------------------------------

SIGNAL_RANK = 12


def seeded_displacement(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    """float32 V = L diag(s) R^T + noise: 12 directions with s decaying 100x, well-separated, noise 1e-5."""
    generator = torch.Generator().manual_seed(seed)
    rank = min(SIGNAL_RANK, rows, columns)
    left, _ = torch.linalg.qr(torch.randn(rows, rank, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(columns, rank, generator=generator, dtype=torch.float64))
    spectrum = torch.logspace(0, -2, rank, dtype=torch.float64)
    noise = 1e-5 * torch.randn(rows, columns, generator=generator, dtype=torch.float64)
    return ((left * spectrum) @ right.T + noise).float()


def estimate_on(device: str, displacement: torch.Tensor, params: EstimationParams) -> SubspaceBasis:
    matrix = displacement.to(device)
    return estimate_basis(matrix, params, reference_energy=1.0)


def assert_energy_cut_is_clear(basis: SubspaceBasis, where: str) -> None:
    """The test's own data: ENERGY must not sit within round-off of a cumulative energy, or k could flip."""
    cumulative = torch.cumsum(basis.singular_values.double().square(), dim=0) / basis.total_energy
    assert bool(((cumulative - ENERGY).abs() > 1e-3).all()), f"{where}: pick data whose energies avoid {ENERGY}"


# Every path of estimate_basis: the randomized range finder (tall and wide), the exact SVD, and the
# dense paths taken when the sketch would be nearly as wide as the matrix (Gram eigh when wide, SVD when tall).
ESTIMATOR_CASES = {
    "randomized-tall": ((640, 384), EstimationParams(max_rank=32)),
    "randomized-wide": ((384, 640), EstimationParams(max_rank=32)),
    "randomized-two-rounds": ((512, 512), EstimationParams(max_rank=24, power_iterations=2, seed=3)),
    "exact": ((640, 384), EstimationParams(max_rank=32, exact=True)),
    "exact-wide": ((384, 640), EstimationParams(max_rank=32, exact=True)),
    "dense-wide-gram": ((48, 256), EstimationParams(max_rank=32)),
    "dense-tall-svd": ((256, 48), EstimationParams(max_rank=32)),
}


@pytest.mark.parametrize("case", sorted(ESTIMATOR_CASES))
def test_estimator_matches_cpu(device, case):
    shape, params = ESTIMATOR_CASES[case]
    sketch = min(params.max_rank + params.oversample, *shape)
    dense = not params.exact and sketch > EXACT_WHEN_SKETCH_FRACTION_ABOVE * min(shape)
    assert dense == case.startswith("dense"), "the case no longer takes the path its name says"
    displacement = seeded_displacement(*shape)

    expected = estimate_on(REFERENCE_DEVICE, displacement, params)
    actual = estimate_on(device, displacement, params)

    assert actual.basis.device.type == torch.device(device).type
    assert_energy_cut_is_clear(expected, case)
    k = assert_same_subspace(actual, expected, case)
    assert 0 < k < SIGNAL_RANK, k


# --- Every method, one-sided and (where it means something) two-sided ---------------------------------

METHOD_CASES = [(name, False) for name in METHODS] + [
    (name, True) for name, entry in METHODS.items() if entry.two_sided
]


@dataclasses.dataclass(frozen=True)
class MethodProblem:
    lora_b: torch.Tensor  # (m, r) float32
    lora_a: torch.Tensor  # (r, n) float32
    scale: float
    subspace: SelectedSubspace


def method_problem(rows: int = 320, columns: int = 256, rank: int = 16, seed: int = 7) -> MethodProblem:
    """A float32 module like the pipeline's: V's top-k subspace (both sides), and an update that writes half
    its B along U_k, half elsewhere, with A partly along V's right vectors so every coefficient sign occurs."""
    displacement = seeded_displacement(rows, columns, seed)
    basis = estimate_basis(displacement, EstimationParams(max_rank=32, exact=True), reference_energy=1.0)
    subspace = basis.select(ENERGY)
    generator = torch.Generator().manual_seed(seed + 1)
    half = rank // 2
    inside = subspace.basis @ torch.randn(subspace.rank, half, generator=generator)
    lora_b = torch.cat([inside, torch.randn(rows, rank - half, generator=generator)], dim=1) * 1e-2
    lora_a = torch.randn(rank, columns, generator=generator) / columns**0.5
    lora_a[:half] += (torch.randn(half, subspace.rank, generator=generator) @ subspace.right.T) * 0.5
    return MethodProblem(lora_b.contiguous(), lora_a.contiguous(), 2.0, subspace)


def subspace_on(subspace: SelectedSubspace, device: str) -> SelectedSubspace:
    return dataclasses.replace(
        subspace,
        basis=subspace.basis.to(device),
        singular_values=subspace.singular_values.to(device),
        right=None if subspace.right is None else subspace.right.to(device),
    )


def corrected_b_on(device: str, problem: MethodProblem, name: str, params: CorrectionParams) -> torch.Tensor:
    """What pipeline/plumbing/module.py does for one module: factors and basis on the device, B' back on the CPU."""
    update = decompose_update(problem.lora_b.to(device), problem.lora_a.to(device), problem.scale)
    corrected = get_method(name).corrected_b(update, subspace_on(problem.subspace, device), params)
    assert corrected.device.type == torch.device(device).type
    return corrected.cpu()


@pytest.fixture(scope="module")
def shared_problem() -> MethodProblem:
    return method_problem()


@pytest.mark.parametrize(
    ("name", "two_sided"), METHOD_CASES, ids=[f"{name}{'-two-sided' if two else ''}" for name, two in METHOD_CASES]
)
def test_method_matches_cpu(device, shared_problem, name, two_sided):
    params = CorrectionParams(two_sided=two_sided)
    where = f"{name}{' --two-sided' if two_sided else ''}"

    expected = corrected_b_on(REFERENCE_DEVICE, shared_problem, name, params)
    actual = corrected_b_on(device, shared_problem, name, params)

    assert_b_close(actual, expected, where)
    if get_method(name).rewrites_b:  # the problem is one the method changes, so the comparison means something
        assert relative_error(expected, shared_problem.lora_b) > 1e-3, where


# --- A whole `correct` run ---------------------------------------------------------------------------

# Every method once (randomized bases), the exact SVD, and --two-sided for the methods that take it.
RUN_CASES = (
    [(name,) for name in METHODS]
    + [("csulora", "--exact")]
    + [(name, "--two-sided") for name, entry in METHODS.items() if entry.two_sided]
)

REPORT = "csulora_report.json"


def correct_on(device: str, models: tuple[Path, Path, Path], work: Path, args: tuple[str, ...]) -> Path:
    """One `correct` run on `device`, with its own cold cache (so neither device reads the other's bases)."""
    base, aligned, adapter = models
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"out-{device}"
    method, *flags = args
    result = run_cli(
        "correct",
        adapter,
        "--base",
        base,
        "--aligned",
        aligned,
        "--method",
        method,
        *flags,
        "--rank",
        RANK,
        "--device",
        device,
        "--cache-dir",
        work / f"cache-{device}",
        "--out",
        out,
        "--quiet",
    )
    assert_ok(result)
    return out


@pytest.mark.parametrize("args", RUN_CASES, ids=" ".join)
def test_correct_run_matches_cpu(device, demo_models, tmp_path, args):
    where = " ".join(args)
    expected_out = correct_on(REFERENCE_DEVICE, demo_models, tmp_path / "reference", args)
    actual_out = correct_on(device, demo_models, tmp_path / "device", args)

    expected_b = {k: v for k, v in load_tensors(expected_out / "adapter_model.safetensors").items() if "lora_B" in k}
    actual_b = {k: v for k, v in load_tensors(actual_out / "adapter_model.safetensors").items() if "lora_B" in k}
    assert expected_b and sorted(actual_b) == sorted(expected_b)
    for key, tensor in expected_b.items():
        assert actual_b[key].dtype == tensor.dtype, key
        assert_b_close(actual_b[key], tensor, f"{where}: {key}")

    expected_report = json.loads((expected_out / REPORT).read_text())
    actual_report = json.loads((actual_out / REPORT).read_text())
    expected_modules = {entry["module"]: entry for entry in expected_report["modules"]}
    actual_modules = {entry["module"]: entry for entry in actual_report["modules"]}
    assert sorted(actual_modules) == sorted(expected_modules)
    for module, entry in expected_modules.items():
        other = actual_modules[module]
        assert other["subspace"]["k"] == entry["subspace"]["k"], f"{where}: {module}"
        assert other["status"] == entry["status"], f"{where}: {module}"
        assert other.get("selected") == entry.get("selected"), f"{where}: {module}"
        assert other["subspace"]["captured_energy"] == pytest.approx(entry["subspace"]["captured_energy"], abs=1e-5)
        assert other["cosine"] == pytest.approx(entry["cosine"], abs=1e-4), f"{where}: {module}"
    assert any(entry["subspace"]["k"] > 0 for entry in expected_modules.values())
