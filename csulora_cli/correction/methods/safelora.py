"""Safe LoRA (Hsu et al., NeurIPS 2024; docs/method.md section 5), from factors and the cached basis.

Per module the candidate is B' = C B with C = V V^T / ||V||_F, applied as U_k diag(S_k^2 / ||V||_F) U_k^T
and never formed as an (m, m) matrix. Which modules take their candidate is decided once every module of
the adapter has its similarity cos(C B A, B A): the N lowest, or all at or below a threshold.
"""

from __future__ import annotations

import math

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate, update_cosine
from ..params import CorrectionParams
from .base import CorrectionMethod

# A basis holding this much of ||V||^2 counts as all of it: the float32 singular values of a complete
# basis account for ||V||^2 (summed exactly in float64) to within about 1e-6.
EXACT_CAPTURED_ENERGY = 1.0 - 1e-5


def alignment_product(subspace: SelectedSubspace, lora_b: torch.Tensor) -> torch.Tensor:
    """C B = U_k diag(S_k^2 / ||V||_F) (U_k^T B): (m, r), exact when U_k holds all of V's energy."""
    if subspace.rank == 0 or subspace.total_energy <= 0.0:
        return torch.zeros_like(lora_b)
    weights = subspace.singular_values.to(lora_b.dtype).square() / math.sqrt(subspace.total_energy)
    return subspace.basis @ (weights[:, None] * (subspace.basis.T @ lora_b))


def similarity(update: LowRankUpdate, projected_b: torch.Tensor) -> float:
    """cos(C B A, B A) of the flattened matrices, through A's QR factor (no (m, n) product)."""
    return update_cosine(update, projected_b)


def selected_count(modules: int, params: CorrectionParams) -> int:
    """N: `safelora_layers`, or ceil(share * modules) when the count is given as a share of the adapter."""
    if params.safelora_share is None:
        return params.safelora_layers
    return math.ceil(params.safelora_share * modules - 1e-9)


def select_modules(similarities: list[float], params: CorrectionParams) -> list[bool]:
    """Which modules take B' = C B; the comparison is `<=` in both modes, as in the reference.

    `number`: the reference takes the N-th lowest similarity as a threshold, so modules tied with it are
    all selected (possibly more than N), and N beyond the module count selects every module.
    """
    if params.safelora_select == "threshold":
        threshold = params.safelora_threshold
    else:
        layers = selected_count(len(similarities), params)
        if layers <= 0 or not similarities:
            return [False] * len(similarities)
        threshold = sorted(similarities)[:layers][-1]
    return [value <= threshold for value in similarities]


class SafeLora(CorrectionMethod):
    reference_url = "https://arxiv.org/abs/2405.16833"
    selects_modules = True

    def parameters(self, params: CorrectionParams) -> dict:
        if params.safelora_select == "threshold":
            return {"select": "threshold", "threshold": params.safelora_threshold}
        if params.safelora_share is not None:
            return {"select": params.safelora_select, "share": params.safelora_share}
        return {"select": params.safelora_select, "layers": params.safelora_layers}

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        """The candidate B' = C B; whether it is written is decided by `select`."""
        return alignment_product(subspace, update.lora_b)

    def similarity(self, update: LowRankUpdate, subspace: SelectedSubspace) -> float:
        """Safe LoRA's test, cos(C B A, B A): what decides whether the module is rewritten."""
        return similarity(update, alignment_product(subspace, update.lora_b))

    def note(self, subspace: SelectedSubspace) -> str:
        """What the report says when U_k misses part of V's energy and C B is not the exact rule."""
        if subspace.captured_energy >= EXACT_CAPTURED_ENERGY:
            return ""
        return (
            f"C B from k={subspace.rank} directions holding {subspace.captured_energy:.4f} of ||V||^2 "
            "(exact only with all of it)"
        )

    def select(self, similarities: list[float], params: CorrectionParams) -> list[bool]:
        return select_modules(similarities, params)
