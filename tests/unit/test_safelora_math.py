"""Safe LoRA (docs/method.md section 5, Safe LoRA) from factors against a dense float64 reference of the same rule.

The reference forms C = V V^T / ||V||_F, C B A and B A explicitly and selects modules the way the
reference implementation does (numpy sort, the N-th lowest similarity as a threshold, `<=`).
"""

from __future__ import annotations

import numpy
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from csulora_cli.correction.decompose import decompose_update
from csulora_cli.correction.methods import get_method
from csulora_cli.correction.methods.safelora import EXACT_CAPTURED_ENERGY, select_modules
from csulora_cli.correction.params import CorrectionParams
from csulora_cli.subspace.estimate import EstimationParams, estimate_basis

DTYPE = torch.float64
SAFELORA = get_method("safelora")
SETTINGS = settings(max_examples=60, deadline=None, database=None)
# Similarities closer than this to the selection cut could flip on round-off between the two paths.
SELECTION_MARGIN = 1e-9


# Tiny matrices: one thread is faster, and spares a busy machine thread contention (fixture in conftest).
pytestmark = pytest.mark.usefixtures("single_thread")


def dense_module(m: int, n: int, r: int, seed: int, deficient_a: bool):
    """(V, B, A, scale) with V of full rank and a spread spectrum."""
    generator = torch.Generator().manual_seed(seed)
    displacement = torch.randn(m, n, generator=generator, dtype=DTYPE)
    lora_b = torch.randn(m, r, generator=generator, dtype=DTYPE)
    lora_a = torch.randn(r, n, generator=generator, dtype=DTYPE)
    if deficient_a and r >= 2:
        lora_a[r - 1] = 3.0 * lora_a[0]
    return displacement, lora_b, lora_a, 0.5 + seed % 7


def dense_candidate(displacement, lora_b, lora_a, rank: int | None = None):
    """C B and cos(C B A, B A); with `rank`, C keeps only V's top-`rank` part (what a cut basis holds)."""
    if rank is None:
        projector = displacement @ displacement.T / torch.linalg.matrix_norm(displacement)
    else:
        left, singular, _ = torch.linalg.svd(displacement, full_matrices=False)
        left, singular = left[:, :rank], singular[:rank]
        projector = left @ torch.diag(singular.square()) @ left.T / torch.linalg.matrix_norm(displacement)
    projected = projector @ lora_b
    after, before = (projected @ lora_a).flatten(), (lora_b @ lora_a).flatten()
    cosine = float(after @ before / (after.norm() * before.norm()))
    return projected, cosine


def reference_selection(similarities: list[float], select: str, threshold: float, layers: int) -> list[bool]:
    """The reference implementation's rule, transcribed (numpy sort, N-th lowest as the cut, `<=`)."""
    if select == "number":
        threshold = numpy.sort(similarities)[:layers][-1]
    return [value <= threshold for value in similarities]


def factor_candidate(displacement, lora_b, lora_a, scale, energy: float = 1.0, max_rank: int | None = None):
    basis = estimate_basis(
        displacement,
        EstimationParams(max_rank=max_rank or min(displacement.shape), exact=True),
        reference_energy=1.0,
    )
    subspace = basis.select(energy)
    update = decompose_update(lora_b, lora_a, scale)
    candidate = SAFELORA.corrected_b(update, subspace, CorrectionParams())
    return subspace, candidate, SAFELORA.similarity(update, subspace)


modules = st.tuples(
    st.integers(1, 24),  # m
    st.integers(1, 24),  # n
    st.integers(1, 6),  # r
    st.integers(0, 2**31 - 1),  # seed
    st.booleans(),  # rank-deficient A
)


@SETTINGS
@given(module=modules)
def test_candidate_and_similarity_match_the_dense_rule(module):
    m, n, r, seed, deficient_a = module
    displacement, lora_b, lora_a, scale = dense_module(m, n, r, seed, deficient_a)
    expected, expected_cosine = dense_candidate(displacement, lora_b, lora_a)

    subspace, candidate, cosine = factor_candidate(displacement, lora_b, lora_a, scale)

    assert subspace.captured_energy == pytest.approx(1.0, abs=1e-12)
    assert SAFELORA.note(subspace) == ""
    error = torch.linalg.matrix_norm(candidate - expected)
    assert error <= 1e-10 * torch.linalg.matrix_norm(expected)
    assert cosine == pytest.approx(expected_cosine, abs=1e-10)


@SETTINGS
@given(module=modules, keep=st.integers(1, 23))
def test_a_cut_basis_gives_the_top_k_part_of_c_and_says_so(module, keep):
    m, n, r, seed, deficient_a = module
    assume(keep < min(m, n))
    displacement, lora_b, lora_a, scale = dense_module(m, n, r, seed, deficient_a)
    expected, expected_cosine = dense_candidate(displacement, lora_b, lora_a, rank=keep)

    subspace, candidate, cosine = factor_candidate(displacement, lora_b, lora_a, scale, max_rank=keep)

    assert subspace.rank == keep and subspace.captured_energy < 1.0
    error = torch.linalg.matrix_norm(candidate - expected)
    assert error <= 1e-10 * max(float(torch.linalg.matrix_norm(expected)), 1e-300)
    if float(torch.linalg.matrix_norm(expected)) > 0:
        assert cosine == pytest.approx(expected_cosine, abs=1e-9)
    # The note says the rule is inexact whenever the cut basis misses more than the tolerance of ||V||^2; a
    # square Gaussian V can have a last singular value so small that dropping it misses less (m = n = 23,
    # k = 22 was drawn), and then the note rightly stays silent.
    if subspace.captured_energy < EXACT_CAPTURED_ENERGY:
        assert f"k={keep}" in SAFELORA.note(subspace) and "exact only" in SAFELORA.note(subspace)
    else:
        assert SAFELORA.note(subspace) == ""


@SETTINGS
@given(
    adapter=st.lists(modules, min_size=1, max_size=6),
    select=st.sampled_from(["number", "threshold"]),
    threshold=st.floats(-1.0, 1.0),
    layers=st.integers(1, 8),
)
def test_one_adapter_end_to_end_against_the_dense_reference(adapter, select, threshold, layers):
    """Every module scored, then selected across the adapter; selected modules get C B, the others B."""
    dense = [dense_module(*module) for module in adapter]
    expected = [dense_candidate(v, b, a) for v, b, a, _ in dense]
    expected_similarities = [cosine for _, cosine in expected]
    cut = threshold if select == "threshold" else numpy.sort(expected_similarities)[:layers][-1]
    # Away from the cut (ties at it are exercised exactly in the tests below).
    assume(all(abs(value - cut) > SELECTION_MARGIN or value == cut for value in expected_similarities))
    expected_selection = reference_selection(expected_similarities, select, threshold, layers)

    factored = [factor_candidate(v, b, a, s) for v, b, a, s in dense]
    params = CorrectionParams(safelora_select=select, safelora_threshold=threshold, safelora_layers=layers)
    selection = SAFELORA.select([cosine for _, _, cosine in factored], params)

    assert selection == expected_selection
    for (_, b, _, _), (projected, _), (_, candidate, _), chosen in zip(
        dense, expected, factored, selection, strict=True
    ):
        written = candidate if chosen else b
        wanted = projected if chosen else b
        assert torch.linalg.matrix_norm(written - wanted) <= 1e-10 * torch.linalg.matrix_norm(wanted)


@given(
    similarities=st.lists(st.sampled_from([-0.3, 0.0, 0.2, 0.5, 0.5000001, 0.9, 1.0]), min_size=1, max_size=12),
    layers=st.integers(1, 15),
    threshold=st.sampled_from([-0.3, 0.2, 0.5, 0.95]),
)
@settings(max_examples=200, deadline=None, database=None)
def test_selection_rule_is_the_reference_rule_with_ties(similarities, layers, threshold):
    for select in ("number", "threshold"):
        params = CorrectionParams(safelora_select=select, safelora_threshold=threshold, safelora_layers=layers)
        assert select_modules(similarities, params) == reference_selection(similarities, select, threshold, layers)


def test_selection_examples():
    def number(values, layers):
        return select_modules(values, CorrectionParams(safelora_select="number", safelora_layers=layers))

    def threshold(values, cut):
        return select_modules(values, CorrectionParams(safelora_select="threshold", safelora_threshold=cut))

    # Ties with the N-th lowest are all selected, as the reference does: three modules for N = 2.
    assert number([0.9, 0.5, 0.2, 0.5], 2) == [False, True, True, True]
    assert number([0.9, 0.5, 0.2], 1) == [False, False, True]
    # N beyond the module count selects every module; N = 0 selects none.
    assert number([0.9, 0.5, 0.2], 10) == [True, True, True]
    assert number([0.9, 0.5, 0.2], 0) == [False, False, False]
    assert number([], 10) == []
    # The threshold is inclusive.
    assert threshold([0.5, 0.5000001, 0.1], 0.5) == [True, False, True]
    assert threshold([0.9, 0.7], 0.5) == [False, False]


def test_parameters_report_the_mode_in_use():
    assert SAFELORA.parameters(CorrectionParams()) == {"select": "number", "layers": 10}
    params = CorrectionParams(safelora_select="threshold", safelora_threshold=0.3)
    assert SAFELORA.parameters(params) == {"select": "threshold", "threshold": 0.3}
