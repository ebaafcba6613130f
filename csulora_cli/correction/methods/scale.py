"""The baseline: the whole update times alpha, B' = alpha B.

Any correction that lowers attack success also shrinks the update; one that only does that cannot be told
from this line at the same task accuracy (docs/method.md section 11).
"""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate
from ..params import CorrectionParams
from .base import CorrectionMethod


class ScaleDown(CorrectionMethod):
    reads_subspace = False

    def parameters(self, params: CorrectionParams) -> dict:
        return {"alpha": params.alpha}

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        return params.alpha * update.lora_b
