"""No correction: the adapter is copied and only the report is produced (what `inspect` shows)."""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate
from ..params import CorrectionParams
from .base import CorrectionMethod


class NoCorrection(CorrectionMethod):
    # Nothing is rewritten; --two-sided only measures the report against the two-sided subspace.
    rewrites_b = False

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        return update.lora_b
