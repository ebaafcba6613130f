"""Merge a safety adapter into the modules Safe LoRA's test flags (SafeMERGE; docs/method.md section 11).

On a flagged module dW' = (1 - w) dW + w dW_safety, written as one LoRA of the summed rank:
B' = [(1 - w) B, (w s_safety / s) B_safety], A' = [A; A_safety]. Which modules are flagged is Safe LoRA's
selection (`safelora.py`): the lowest cos(C dW, dW), by count, share or threshold.
"""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate
from ..params import CorrectionParams
from .base import CompanionUpdate, CorrectedFactors
from .safelora import SafeLora


class MergeSafetyAdapter(SafeLora):
    reference_url = "https://arxiv.org/abs/2503.17239"
    adds_rank = True
    needs_companion = True

    def parameters(self, params: CorrectionParams) -> dict:
        return {"safety_weight": params.safety_weight} | super().parameters(params)

    def corrected_factors(
        self,
        update: LowRankUpdate,
        subspace: SelectedSubspace,
        params: CorrectionParams,
        companion: CompanionUpdate | None = None,
    ) -> CorrectedFactors:
        weight = params.safety_weight
        merged_b = (weight * companion.scale / update.scale) * companion.lora_b.to(update.lora_b.dtype)
        return CorrectedFactors(
            torch.cat([(1.0 - weight) * update.lora_b, merged_b], dim=1),
            torch.cat([update.lora_a, companion.lora_a.to(update.lora_a.dtype)], dim=0),
        )
