"""The activation subspace (docs/method.md section 12) against dense float64 references: the generalized
eigenvectors of (Sigma_harmful, Sigma_contrast) by a different route (C^-1/2 from C's own eigendecomposition)
and by Courant-Fischer (the pencil restricted to the first j columns has the top j eigenvalues), and the
refusal direction."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from csulora_cli.subspace.activation import (
    DEFAULT_RIDGE,
    contrast_directions,
    ordered_orthonormal,
    refusal_direction,
)

FAST = settings(max_examples=30, deadline=None, database=None)
pytestmark = pytest.mark.usefixtures("single_thread")


def _second_moment(tokens: int, n: int, generator: torch.Generator, scales: torch.Tensor | None = None) -> torch.Tensor:
    x = torch.randn(tokens, n, generator=generator, dtype=torch.float64)
    if scales is not None:
        x = x * scales
    return x.T @ x / tokens


def _regularised(contrast: torch.Tensor, ridge: float) -> torch.Tensor:
    n = contrast.shape[0]
    return contrast + ridge * float(torch.trace(contrast)) / n * torch.eye(n, dtype=torch.float64)


def _reference(harmful: torch.Tensor, contrast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues descending, generalized eigenvectors) through C^-1/2 = E diag(d^-1/2) E^T."""
    d, e = torch.linalg.eigh(contrast)
    inverse_root = e @ torch.diag(d.rsqrt()) @ e.T
    values, w = torch.linalg.eigh(inverse_root @ harmful @ inverse_root)
    order = torch.argsort(values, descending=True)
    return values[order], (inverse_root @ w)[:, order]


def _projector(columns: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(columns)
    return q @ q.T


@FAST
@given(n=st.integers(2, 12), rank=st.integers(1, 12), seed=st.integers(0, 2**16), tokens=st.integers(3, 40))
def test_columns_span_the_top_generalized_eigenvectors_in_order(n, rank, seed, tokens):
    generator = torch.Generator().manual_seed(seed)
    scales = torch.rand(n, generator=generator, dtype=torch.float64) * 3 + 0.1
    harmful = _second_moment(tokens, n, generator, scales)
    contrast = _second_moment(tokens, n, generator)  # singular when tokens < n: the ridge makes it invertible
    basis = contrast_directions(harmful, contrast, rank)
    keep = min(rank, n)
    values, vectors = _reference(harmful, _regularised(contrast, DEFAULT_RIDGE))
    q = basis.basis.double()
    assert q.shape == (n, keep)
    assert torch.allclose(q.T @ q, torch.eye(keep, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(basis.singular_values.double().square(), values[:keep].clamp(min=0), rtol=1e-4, atol=1e-6)
    assert basis.total_energy == pytest.approx(float(values.clamp(min=0).sum()), rel=1e-9)
    for j in range(1, keep + 1):
        # A gap separates the j-th eigenvalue from the next: only then is the top-j span defined.
        if j < n and values[j - 1] - values[j] < 1e-6 * values[0]:
            continue
        assert torch.allclose(_projector(q[:, :j]), _projector(vectors[:, :j]), atol=1e-4)


@FAST
@given(n=st.integers(2, 10), seed=st.integers(0, 2**16))
def test_the_pencil_restricted_to_the_first_j_columns_has_the_top_j_eigenvalues(n, seed):
    """Courant-Fischer: the Rayleigh quotient v^T H v / v^T C v over span(Q_j) reaches the top j eigenvalues."""
    generator = torch.Generator().manual_seed(seed)
    harmful = _second_moment(3 * n, n, generator, torch.rand(n, generator=generator, dtype=torch.float64) + 0.5)
    contrast = _second_moment(3 * n, n, generator)
    basis = contrast_directions(harmful, contrast, n)
    regularised = _regularised(contrast, DEFAULT_RIDGE)
    all_values, _ = _reference(harmful, regularised)
    q = basis.basis.double()
    for j in range(1, n + 1):
        restricted, _ = _reference(q[:, :j].T @ harmful @ q[:, :j], q[:, :j].T @ regularised @ q[:, :j])
        assert torch.allclose(restricted, all_values[:j], rtol=1e-5, atol=1e-8)


def test_without_a_contrast_the_columns_are_the_top_eigenvectors_of_the_harmful_moment():
    generator = torch.Generator().manual_seed(3)
    harmful = _second_moment(50, 6, generator, torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64))
    basis = contrast_directions(harmful, None, 3)
    values, vectors = torch.linalg.eigh(harmful)
    assert torch.allclose(_projector(basis.basis.double()), _projector(vectors[:, -3:]), atol=1e-5)
    assert torch.allclose(basis.singular_values.double().square(), values.flip(0)[:3], rtol=1e-5)


def test_a_direction_both_sets_excite_loses_to_one_only_the_harmful_prompts_excite():
    # Harmful prompts: energy 100 along e0 and 4 along e1; contrast prompts: 100 along e0, almost none on e1.
    harmful = torch.diag(torch.tensor([100.0, 4.0, 1.0, 1.0], dtype=torch.float64))
    contrast = torch.diag(torch.tensor([100.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    plain = contrast_directions(harmful, None, 1).basis.double()[:, 0]
    contrasted = contrast_directions(harmful, contrast, 1).basis.double()[:, 0]
    assert abs(float(plain[0])) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(contrasted[1])) == pytest.approx(1.0, abs=1e-6)
    # The ridge is relative to the contrast's mean eigenvalue (102 / 4): e1 scores 4 / (DEFAULT_RIDGE * 25.5).
    expected = 4.0 / (DEFAULT_RIDGE * 102.0 / 4)
    assert float(contrast_directions(harmful, contrast, 1).singular_values[0]) ** 2 == pytest.approx(expected, rel=1e-5)


def test_ordered_orthonormal_keeps_every_leading_span():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    q = ordered_orthonormal(vectors)
    for j in range(1, 5):
        assert torch.allclose(_projector(q[:, :j]), _projector(vectors[:, :j]), atol=1e-10)
    assert torch.all(torch.diagonal(q.T @ vectors) > 0)


def test_a_silent_module_has_no_direction():
    basis = contrast_directions(torch.zeros(5, 5, dtype=torch.float64), torch.eye(5, dtype=torch.float64), 3)
    assert basis.basis.shape == (5, 0) and not basis.has_signal


def test_the_refusal_direction_is_the_unit_difference_of_means():
    harmful = torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
    contrast = torch.tensor([1.0, 1.0, 2.0 - 2.0], dtype=torch.float64)
    basis = refusal_direction(harmful, contrast)
    difference = harmful - contrast
    assert basis.basis.shape == (3, 1)
    assert torch.allclose(basis.basis.double()[:, 0], difference / difference.norm(), atol=1e-7)
    assert float(basis.singular_values[0]) == pytest.approx(float(difference.norm()), rel=1e-6)
    assert basis.select(0.99, 1).captured_energy == pytest.approx(1.0)
    # Removing it from any B leaves no component along r: B' = (I - r r^T) B.
    b = torch.randn(3, 2, dtype=torch.float64)
    r = basis.basis.double()
    assert torch.allclose(r.T @ (b - r @ (r.T @ b)), torch.zeros(1, 2, dtype=torch.float64), atol=1e-7)


def test_equal_means_give_no_refusal_direction():
    mean = torch.tensor([1.0, 2.0])
    basis = refusal_direction(mean, mean.clone())
    assert basis.basis.shape == (2, 0) and not basis.has_signal


def test_every_method_names_sides_a_folder_can_have():
    from csulora_cli.correction.methods import METHODS
    from csulora_cli.subspace.params import SIDES

    assert all(entry.sides and set(entry.sides) <= set(SIDES) for entry in METHODS.values())
    assert [name for name, entry in METHODS.items() if "input" in entry.sides] == ["remove-inputs", "none"]
