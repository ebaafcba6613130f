"""`inspect`: an adapter's modules, or with a subspace, what `correct` would remove (a dry run)."""

from __future__ import annotations

import torch

from ..adapters.peft import LoraAdapter, LoraModule, read_adapter
from ..correction.decompose import decompose_update
from ..events import Events, SilentEvents
from .correct import correct
from .types import CorrectRequest, InspectRequest, InspectResult, ModuleSummary


def inspect(request: InspectRequest, events: Events = SilentEvents()) -> InspectResult:
    adapter = read_adapter(request.adapter)
    if not request.subspace.given:
        return InspectResult(summaries=[_summary(adapter, module) for module in adapter.modules])
    reports = correct(
        CorrectRequest(
            adapters=(request.adapter,),
            out=None,
            subspace=request.subspace,
            method=request.method,
            correction=request.correction,
            dry_run=True,
        ),
        events,
    )
    return InspectResult(report=reports[0])


def _summary(adapter: LoraAdapter, module: LoraModule) -> ModuleSummary:
    lora_a, lora_b = adapter.factors(module)
    update = decompose_update(lora_b.to(torch.float32), lora_a.to(torch.float32), module.scale.value)
    return ModuleSummary(
        module=module.name,
        kind=module.kind.value,
        shape=(module.out_features, module.in_features),
        rank=module.scale.rank,
        alpha=module.scale.alpha,
        scale=module.scale.value,
        update_energy=float(update.sigma.double().square().sum()),
        top_singular_value=float(update.sigma.max()) if update.sigma.numel() else 0.0,
    )
