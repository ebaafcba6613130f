"""`correct`: every adapter corrected module by module, each basis loaded or estimated once for all of them.

Everything is checked before any work (values when the request was made; adapters, destinations, keys
and shapes here); outputs are filled in temporary folders and renamed into place only at the end.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from ..adapters.peft import LoraAdapter, LoraModule, read_adapter
from ..adapters.writer import AdapterWriter
from ..atomic import atomic_folder, check_destination
from ..correction.methods import get_method
from ..correction.params import CorrectionParams
from ..errors import CsuloraError, UsageError
from ..events import Events, SilentEvents
from ..report.card import render_card
from ..report.records import REPORT_FILE, AdapterReport, ModuleReport
from ..subspace.keys import Target
from ..subspace.targets import targets_for_adapter
from .basis_source import open_provider
from .module import Outcome, correct_module
from .types import CorrectRequest


def _destinations(adapters: list[LoraAdapter], out: Path) -> list[Path]:
    if len(adapters) == 1:
        return [out]
    names = [adapter.folder.resolve().name for adapter in adapters]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UsageError(
            f"several adapters share the folder name {duplicates[0]!r}; outputs would collide",
            parameter="adapters",
        )
    return [out / name for name in names]


def _check_destinations(out: Path, destinations: list[Path], overwrite: bool) -> None:
    """Refuse before any work: an existing output without --overwrite, or a folder we cannot write."""
    if len(destinations) == 1:
        check_destination(destinations[0], overwrite)
    elif not out.exists():
        check_destination(out, overwrite=False)
    elif not out.is_dir():
        raise CsuloraError("output exists and is not a folder", where=str(out))
    else:
        for destination in destinations:
            check_destination(destination, overwrite)


def correct(request: CorrectRequest, events: Events = SilentEvents()) -> list[AdapterReport]:
    """Correct every adapter; with several, each basis is loaded or estimated once for all of them.

    Everything is checked before any work (flags, adapters, destinations, keys and shapes); outputs are
    filled in temporary folders as modules are corrected and renamed into place only at the end.
    """
    method = get_method(request.method)
    adapters = [read_adapter(path) for path in request.adapters]
    for adapter in adapters:
        if adapter.passthrough_keys:
            events.warn(
                f"{adapter.weights_path}: {len(adapter.passthrough_keys)} full weight tensor(s) besides the LoRA "
                f"factors (modules_to_save or saved embedding layers, e.g. {adapter.passthrough_keys[0]}); they "
                "replace the model's own weights on load and are copied unchanged, not corrected"
            )
    destinations = _destinations(adapters, request.out) if request.out is not None else [None] * len(adapters)
    if not request.dry_run:
        _check_destinations(request.out, destinations, request.overwrite)
    provider = open_provider(request.subspace, adapters, events)
    targets = [targets_for_adapter(adapter, provider) for adapter in adapters]
    with ExitStack() as outputs:
        folders = _open_output_folders(outputs, request, destinations)
        writers = [
            None if folder is None else AdapterWriter(adapter, folder)
            for adapter, folder in zip(adapters, folders, strict=True)
        ]
        module_reports = _correct_modules(adapters, targets, writers, provider, method, request, events)
        reports = [
            _adapter_report(adapter, destination, modules, provider, method, request)
            for adapter, destination, modules in zip(adapters, destinations, module_reports, strict=True)
        ]
        for adapter, writer, report in zip(adapters, writers, reports, strict=True):
            if writer is not None:
                (writer.folder / "README.md").write_text(render_card(adapter, report))
                (writer.folder / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return reports


def _open_output_folders(outputs: ExitStack, request: CorrectRequest, destinations: list) -> list[Path | None]:
    """Temporary folders to fill, renamed into place when `outputs` closes without an error.

    A new batch folder appears whole, in one rename; adding to an existing batch folder renames each
    adapter's folder on its own (each whole).
    """
    if request.dry_run:
        return [None] * len(destinations)
    if len(destinations) > 1 and not request.out.exists():
        batch = outputs.enter_context(atomic_folder(request.out, overwrite=False))
        folders = [batch / destination.name for destination in destinations]
        for folder in folders:
            folder.mkdir()
        return folders
    return [outputs.enter_context(atomic_folder(destination, request.overwrite)) for destination in destinations]


def _correct_modules(adapters, targets, writers, provider, method, request: CorrectRequest, events: Events):
    """Module by module: one basis, then that module of every adapter; returns reports per adapter.

    A method that selects modules (Safe LoRA) needs every module's similarity before any B is written:
    its candidates (adapter-sized) are kept until the last module is scored, then selected per adapter.
    """
    spec = request.subspace
    users: dict[Target, list[tuple[int, LoraModule]]] = {}
    for index, adapter in enumerate(adapters):
        for module in adapter.modules:
            users.setdefault(targets[index][module.name], []).append((index, module))
    reports: list[dict[str, ModuleReport]] = [{} for _ in adapters]
    pending: list[dict[str, tuple[LoraModule, Outcome]]] = [{} for _ in adapters]
    advance = events.start("correcting modules", len(users))
    for target, basis, _ in provider.bases(list(users)):
        subspace = basis.select(spec.energy, spec.estimation.max_rank)
        for index, module in users[target]:
            lora_a, lora_b = adapters[index].factors(module)
            outcome = correct_module(module, lora_a, lora_b, target, subspace, basis, method, request.correction)
            if outcome.kept is not None:
                pending[index][module.name] = (module, outcome)
                continue
            reports[index][module.name] = outcome.report
            if outcome.new_b is not None and writers[index] is not None:
                writers[index].replace(module.b_key, outcome.new_b)
        advance()
    for index, candidates in enumerate(pending):
        if candidates:
            reports[index].update(_write_selected(candidates, writers[index], method, request.correction))
    _warn_inexact(reports, events)
    return [
        [by_name[module.name] for module in adapter.modules] for adapter, by_name in zip(adapters, reports, strict=True)
    ]


def _write_selected(candidates: dict, writer, method, params: CorrectionParams) -> dict[str, ModuleReport]:
    """One adapter's selection (docs/method.md section 5, Safe LoRA): selected modules get their candidate B'."""
    names = list(candidates)
    chosen = method.select([candidates[name][1].report.similarity for name in names], params)
    reports = {}
    for name, selected in zip(names, chosen, strict=True):
        module, outcome = candidates[name]
        if selected and writer is not None:
            writer.replace(module.b_key, outcome.new_b)
        reports[name] = outcome.report if selected else outcome.kept
    return reports


def _warn_inexact(reports: list[dict[str, ModuleReport]], events: Events) -> None:
    inexact = [
        r
        for by_name in reports
        for r in by_name.values()
        if r.selected is not None and r.status != "no_signal" and r.note
    ]
    if inexact:
        lowest = min(r.captured_energy for r in inexact)
        events.warn(
            f"safelora: {len(inexact)} module(s) use a basis holding less than all of V's energy (lowest "
            f"{lowest:.4f}), so C B keeps only C's top-k part; pass --energy 1 and a --rank covering the "
            "module width for the exact rule"
        )


def _adapter_report(adapter, destination, modules, provider, method, request: CorrectRequest) -> AdapterReport:
    spec = request.subspace
    method_record = {
        "name": method.name,
        "params": method.parameters(request.correction),
        "reference": method.reference_url,
    }
    if method.selects_modules:
        method_record["selected_modules"] = sum(bool(module.selected) for module in modules)
    return AdapterReport(
        adapter=str(adapter.folder.resolve()),
        output=None if destination is None or request.dry_run else str(destination.resolve()),
        method=method_record,
        subspace=dict(provider.describe(), energy=spec.energy, max_rank=spec.estimation.max_rank),
        modules=modules,
        passthrough=adapter.passthrough_keys,
    )
