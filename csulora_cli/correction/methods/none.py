"""No correction: the adapter is copied and only the report is produced (what `inspect` shows)."""

from __future__ import annotations

import torch

from ...subspace.estimate import SelectedSubspace
from ..decompose import LowRankUpdate
from ..params import CorrectionParams


class NoCorrection:
    name = "none"
    summary = "copy the adapter unchanged; report only"
    reference_url = ""
    selects_modules = False
    # Nothing is rewritten; --two-sided only measures the report against the two-sided subspace.
    supports_two_sided = True
    rewrites_b = False
    needs_right_vectors = False

    def parameters(self, params: CorrectionParams) -> dict:
        return {"two_sided": True} if params.two_sided else {}

    def corrected_b(self, update: LowRankUpdate, subspace: SelectedSubspace, params: CorrectionParams) -> torch.Tensor:
        return update.lora_b
