"""Remove what the update reads from an activation subspace's input directions: A' = A (I - Q_k Q_k^T).

The input-side counterpart of remove-top (ActSVD, arXiv 2402.05162; docs/method.md section 12): Q_k are the
first k (`--rank`) directions the harmful prompts excite at the module's input and the contrast prompts do
not, so the adapter no longer responds to them; its rank and B are unchanged. The caller hands it the update
read transposed (dW^T = s A^T B^T: `pipeline/plumbing/module.py`), in which A^T is the B to project.
"""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate, apply_projector
from ..params import CorrectionParams
from .base import CorrectionMethod


class RemoveInputDirections(CorrectionMethod):
    reference_url = "https://arxiv.org/abs/2402.05162"

    def parameters(self, params: CorrectionParams) -> dict:
        return {}  # k is the subspace's own (`--rank`), recorded with it

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        # (I - Q Q^T) A^T, the transposed frame's B: A' = A (I - Q Q^T).
        return update.lora_b - apply_projector(subspace.basis, update.lora_b)
