"""Re-add the alignment as extra rank: dW' = dW + alpha U_k S_k W_k^T (RESTA, LoX; docs/method.md section 11).

V = W_aligned - W_base = U S W^T; its top-k part is appended to the factors, B' = [B, (alpha / s) U_k S_k],
A' = [A; W_k^T], so s B' A' = s B A + alpha U_k S_k W_k^T exactly and the adapter's own rows are untouched.
`--energy 1 --rank K` with K the folder's max_rank re-adds every stored direction.
"""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate
from ..params import CorrectionParams
from .base import CompanionUpdate, CorrectedFactors, CorrectionMethod


class ReaddAlignment(CorrectionMethod):
    reference_url = "https://arxiv.org/abs/2402.11746"
    needs_right_vectors = True
    adds_rank = True

    def parameters(self, params: CorrectionParams) -> dict:
        return {"alpha": params.alpha}

    def corrected_factors(
        self,
        update: LowRankUpdate,
        subspace: SelectedSubspace,
        params: CorrectionParams,
        companion: CompanionUpdate | None = None,
    ) -> CorrectedFactors:
        added_b = (params.alpha / update.scale) * (subspace.basis * subspace.singular_values.to(update.lora_b.dtype))
        return CorrectedFactors(
            torch.cat([update.lora_b, added_b], dim=1),
            torch.cat([update.lora_a, subspace.right.T.to(update.lora_a.dtype)], dim=0),
        )


def added_factors(subspace: SelectedSubspace, alpha: float) -> CorrectedFactors:
    """`--readd-everywhere` on a module the adapter does not target: B = alpha U_k S_k, A = W_k^T, at scale 1."""
    return CorrectedFactors(
        alpha * subspace.basis * subspace.singular_values.to(subspace.basis.dtype), subspace.right.T
    )
