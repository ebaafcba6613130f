"""Detection scores of one adapter (docs/method.md section 9): its modules against their bases, nothing written.

The wiring only: the adapter's factors and each module's basis go to `correction/detection.py`, which holds
every equation. `detect_adapter` is the one entry point, for a gate in `inspect` and for the toy benchmark.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..adapters.peft import read_adapter
from ..correction.decompose import decompose_update
from ..correction.detection import AdapterDetection, ModuleDetection, detection_energies
from ..events import Events, SilentEvents
from ..subspace.targets import targets_for_adapter
from .basis_source import open_provider
from .types import SubspaceSpec


def detect_adapter(
    adapter_folder: Path, subspace: SubspaceSpec, two_sided: bool = False, events: Events = SilentEvents()
) -> AdapterDetection:
    """Every module's detection sums, in adapter order.

    The in-subspace statistics use the k columns `correct` would (`subspace.energy`, `max_rank`); the
    signed ones (`reversal`, `reversing_share`) use every stored triplet, the closest V the store holds.
    """
    adapter = read_adapter(adapter_folder)
    provider = open_provider(subspace, [adapter], events)
    targets = targets_for_adapter(adapter, provider)
    users: dict = {}
    for module in adapter.modules:
        users.setdefault(targets[module.name], []).append(module)
    found: dict[str, ModuleDetection] = {}
    advance = events.start("scoring modules", len(users))
    for target, basis, _ in provider.bases(list(users)):
        selected = basis.select(subspace.energy, subspace.estimation.max_rank)
        triplets = basis.select(1.0, subspace.estimation.max_rank)
        device = selected.basis.device
        for module in users[target]:
            lora_a, lora_b = adapter.factors(module)
            update = decompose_update(
                lora_b.to(device, torch.float32), lora_a.to(device, torch.float32), module.scale.value
            )
            energies = detection_energies(update, selected, triplets, two_sided)
            found[module.name] = ModuleDetection(module.name, energies)
        advance()
    return AdapterDetection(tuple(found[module.name] for module in adapter.modules))
