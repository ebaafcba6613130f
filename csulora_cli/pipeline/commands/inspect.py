"""`inspect`: an adapter's modules, or with a subspace, what `correct` would remove (a dry run)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...adapters.peft import LoraAdapter, LoraModule
from ...correction.decompose import decompose_update
from ...correction.params import CorrectionParams
from ...correction.statistics import STATISTICS, AdapterDetection, ModuleDetection
from ...errors import CsuloraError
from ...events import Events, SilentEvents
from ...heatmap import heatmap_grid, write_heatmap
from ...report.records import AdapterReport
from ..plumbing.adapter_source import open_adapter
from ..plumbing.basis_source import hub_client
from ..types.requests import CorrectRequest, InspectRequest, SubspaceSpec
from ..types.results import GateCheck, InspectResult, ModuleSummary
from .correct import correct


def inspect(request: InspectRequest, events: Events = SilentEvents()) -> InspectResult:
    """An adapter's modules, or with a subspace what `correct` would remove and an optional gate's verdict.

        from csulora_cli.api import InspectRequest, SubspaceSpec, inspect
        result = inspect(InspectRequest(adapter="adapter", subspace=SubspaceSpec(subspace="subspace"),
                                        gate="reversal", fail_below=-0.05))
        if result.gate.tripped:
            print("reversal", result.gate.value, "is below", result.gate.threshold)

    Without a subspace `result.summaries` lists the modules; with one `result.report` is a dry-run
    `AdapterReport`. Nothing is written (except `request.plot`).
    """
    if request.subspace is None:
        opened = open_adapter(request.adapter, hub_client(request.cache_dir, request.hub, events))
        summaries = [_summary(opened.adapter, module) for module in opened.adapter.modules]
        return InspectResult(adapter=opened.label, summaries=summaries)
    # With a subspace, `correct` opens the adapter (once) and names it in its report.
    reports = correct(
        CorrectRequest(
            adapters=(request.adapter,),
            subspace=request.subspace,
            method=request.method,
            correction=request.correction,
            dry_run=True,
            # Inspecting a corrected adapter is how one checks it: never refused.
            recorrect=True,
            command_line=request.command_line,
            order_check=request.order_check,
        ),
        events,
    )
    report = reports[0]
    where = report.adapter
    if request.plot is not None:
        grid = heatmap_grid(detection_of(report), request.statistic)
        write_heatmap(grid, request.plot, title=f"{where}: {request.statistic}")
    return InspectResult(adapter=where, report=report, gate=_gate(request, report))


def detect_adapter(
    adapter_folder: Path, subspace: SubspaceSpec, two_sided: bool = False, events: Events = SilentEvents()
) -> AdapterDetection:
    """Every module's detection sums (docs/method.md section 9), in adapter order; nothing is written.

        detection = detect_adapter(Path("adapter"), SubspaceSpec(subspace="subspace"))
        print(detection.score("reversal"))

    The in-subspace statistics use the k columns `correct` would (`subspace.energy`, its column cap); the
    signed ones (`reversal`, `reversing_share`) use every stored triplet, the closest V the store holds.
    """
    request = InspectRequest(
        adapter=adapter_folder, subspace=subspace, method="none", correction=CorrectionParams(two_sided=two_sided)
    )
    return detection_of(inspect(request, events).report)


def detection_of(report: AdapterReport) -> AdapterDetection:
    """A report's detection sums as an `AdapterDetection` (for the heatmap and the detection benchmark)."""
    return AdapterDetection(
        tuple(ModuleDetection(m.module, m.detection) for m in report.modules if m.detection is not None)
    )


def _gate(request: InspectRequest, report: AdapterReport) -> GateCheck | None:
    threshold, direction = (
        (request.fail_above, "above") if request.fail_above is not None else (request.fail_below, "below")
    )
    if threshold is None:
        return None
    energies = report.totals.detection
    value = None if energies is None else STATISTICS[request.statistic].value(energies)
    if value is None:
        raise CsuloraError(
            f"{request.statistic} needs V's right singular vectors, which this subspace does not hold (written by an "
            "older csulora)",
            parameter="gate",
            hint="re-run estimate-subspace {out} into a new folder",
        )
    return GateCheck(request.statistic, direction, threshold, value, adapter=report.adapter)


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
