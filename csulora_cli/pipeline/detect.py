"""Detection scores of one adapter (docs/method.md section 9): its modules against their bases, nothing written.

`inspect` computes them with every report (`pipeline/module.py`); this is the same figures as an
`AdapterDetection`, for the toy detection benchmark and the heatmap.
"""

from __future__ import annotations

from pathlib import Path

from ..correction.detection import AdapterDetection
from ..correction.params import CorrectionParams
from ..events import Events, SilentEvents
from .inspect import detection_of, inspect
from .types import InspectRequest, SubspaceSpec


def detect_adapter(
    adapter_folder: Path, subspace: SubspaceSpec, two_sided: bool = False, events: Events = SilentEvents()
) -> AdapterDetection:
    """Every module's detection sums, in adapter order.

    The in-subspace statistics use the k columns `correct` would (`subspace.energy`, its column cap); the
    signed ones (`reversal`, `reversing_share`) use every stored triplet, the closest V the store holds.
    """
    request = InspectRequest(
        adapter=adapter_folder, subspace=subspace, method="none", correction=CorrectionParams(two_sided=two_sided)
    )
    return detection_of(inspect(request, events).report)
