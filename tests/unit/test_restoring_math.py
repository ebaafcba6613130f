"""The restoring methods' rules and the figures of a correction that changes A or the rank, against dense
float64 matrices built here (docs/method.md section 11)."""

from __future__ import annotations

import math

import pytest
import torch

from csulora_cli.correction.decompose import decompose_update
from csulora_cli.correction.measures import measure_factors
from csulora_cli.correction.methods import get_method
from csulora_cli.correction.methods.base import CompanionUpdate, CorrectedFactors
from csulora_cli.correction.methods.safelora import select_modules
from csulora_cli.correction.params import CorrectionParams
from csulora_cli.subspace.estimate import SelectedSubspace

M, N, R, K = 12, 9, 3, 4


def random(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def svd_subspace(seed: int = 0) -> tuple[SelectedSubspace, torch.Tensor]:
    """V's top-K SVD as a stored subspace, and V itself."""
    displacement = random(M, N, seed=seed)
    left, sigma, right_t = torch.linalg.svd(displacement, full_matrices=False)
    subspace = SelectedSubspace(
        left[:, :K], sigma[:K], float(sigma.square().sum()), float(sigma.square().sum()), True, right=right_t[:K].T
    )
    return subspace, displacement


def dense(factors: CorrectedFactors, scale: float) -> torch.Tensor:
    return scale * factors.lora_b @ factors.lora_a


@pytest.fixture
def update():
    return decompose_update(random(M, R, seed=1), random(R, N, seed=2), 0.5)


def test_measure_factors_matches_the_dense_energies_when_a_changes(update):
    subspace, _ = svd_subspace()
    corrected = CorrectedFactors(random(M, R + 2, seed=3), random(R + 2, N, seed=4))
    figures = measure_factors(update, corrected, subspace, 0.05)
    original = update.scale * update.lora_b @ update.lora_a
    after = dense(corrected, update.scale)
    assert figures.update_energy == pytest.approx(float(original.square().sum()), rel=1e-10)
    assert figures.corrected_energy == pytest.approx(float(after.square().sum()), rel=1e-10)
    assert figures.removed_energy == pytest.approx(float((original - after).square().sum()), rel=1e-10)
    cosine = float((original * after).sum() / (original.norm() * after.norm()))
    assert figures.cosine == pytest.approx(cosine, rel=1e-10)
    inside = subspace.basis.T @ original
    assert figures.aligned_energy == pytest.approx(float(inside.square().sum()), rel=1e-10)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0])
def test_readd_adds_alpha_times_the_top_k_of_v(update, alpha):
    subspace, displacement = svd_subspace()
    corrected = get_method("readd").corrected_factors(update, subspace, CorrectionParams(alpha=alpha))
    left, sigma, right_t = torch.linalg.svd(displacement, full_matrices=False)
    expected = update.scale * update.lora_b @ update.lora_a + alpha * left[:, :K] @ torch.diag(sigma[:K]) @ right_t[:K]
    assert corrected.rank == R + K
    torch.testing.assert_close(dense(corrected, update.scale), expected, rtol=1e-10, atol=1e-12)
    # The adapter's own factors come first, unchanged.
    torch.testing.assert_close(corrected.lora_b[:, :R], update.lora_b)
    torch.testing.assert_close(corrected.lora_a[:R], update.lora_a)


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_merge_safety_is_the_weighted_sum_of_the_two_updates(update, weight):
    subspace, _ = svd_subspace()
    companion = CompanionUpdate(random(M, 2, seed=5), random(2, N, seed=6), 2.0)
    method = get_method("merge-safety")
    params = CorrectionParams(safety_weight=weight, safety_adapter="safety")
    corrected = method.corrected_factors(update, subspace, params, companion)
    own = update.scale * update.lora_b @ update.lora_a
    safety = companion.scale * companion.lora_b @ companion.lora_a
    torch.testing.assert_close(dense(corrected, update.scale), (1 - weight) * own + weight * safety)


def test_scale_and_remove_top_against_dense(update):
    subspace, _ = svd_subspace()
    own = update.scale * update.lora_b @ update.lora_a
    scaled = get_method("scale").corrected_factors(update, subspace, CorrectionParams(alpha=0.25))
    torch.testing.assert_close(dense(scaled, update.scale), 0.25 * own)
    removed = get_method("remove-top").corrected_factors(update, subspace, CorrectionParams())
    projector = subspace.basis @ subspace.basis.T
    torch.testing.assert_close(dense(removed, update.scale), own - projector @ own)


@pytest.mark.parametrize(
    ("share", "modules", "expected"), [(1 / 6, 60, 10), (1 / 3, 210, 70), (0.34, 10, 4), (1, 7, 7)]
)
def test_a_share_selects_ceil_share_times_modules(share, modules, expected):
    similarities = [math.cos(i) for i in range(modules)]
    chosen = select_modules(similarities, CorrectionParams(safelora_share=share))
    assert sum(chosen) == expected
    threshold = sorted(similarities)[expected - 1]
    assert chosen == [value <= threshold for value in similarities]
