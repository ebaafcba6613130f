"""`correct`: every adapter corrected module by module, each basis loaded or estimated once for all of them.

Everything is checked before any work (values when the request was made; adapters, destinations, keys
and shapes here); outputs are filled in temporary folders and renamed into place only at the end.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import torch

from ...adapters.peft import LoraModule
from ...adapters.writer import AdapterWriter
from ...correction.methods import METHODS, get_method
from ...correction.methods.base import CompanionUpdate
from ...correction.params import CorrectionParams
from ...errors import CsuloraError, ShapeMismatchError, UsageError, first_few
from ...events import Events, SilentEvents
from ...report.records import REPORT_FILE, AdapterReport, ModuleReport, Provenance
from ...subspace.keys import Target
from ...subspace.providers import SubspaceDescription
from ...subspace.targets import _EMBEDDING_KEY, targets_for_adapter
from ..plumbing.adapter_source import OpenedAdapter, open_adapter
from ..plumbing.basis_source import hub_client, open_provider
from ..plumbing.batch import Batch
from ..plumbing.module import Outcome, added_module, correct_module
from ..plumbing.outputs import (
    check_out_dir,
    check_output_folder,
    finish_output,
    open_output_folders,
    planned_output_folders,
)
from ..plumbing.overlap import local_folder, refuse_output_over_inputs
from ..plumbing.provenance import adapter_file_digests, basis_records, utc_now
from ..plumbing.sides import check_order
from ..types.requests import CorrectRequest
from .publish import plan_correct_pushes, push_corrected


def _refuse_corrected(item: OpenedAdapter, recorrect: bool) -> None:
    """An adapter that carries a csulora report was corrected already: correcting it again is asked for."""
    if not recorrect and REPORT_FILE in item.adapter.files:
        raise UsageError(
            f"already corrected by csulora (it holds {REPORT_FILE}); pass {{recorrect}} to correct it again",
            parameter="adapters",
            where=item.label,
        )


def correct(request: CorrectRequest, events: Events = SilentEvents()) -> list[AdapterReport]:
    """Correct every adapter; with several, each basis is loaded or estimated once for all of them.

        from csulora_cli.api import CorrectRequest, SubspaceSpec, correct
        (report,) = correct(CorrectRequest(adapters="adapter", out="adapter-safe",
                                           subspace=SubspaceSpec(subspace="subspace")))
        print(report.totals.attenuation_fraction)   # the share of the update's energy removed

    Everything is checked before any work (values, adapters, destinations, keys and shapes); outputs are
    filled in temporary folders as modules are corrected and renamed into place only at the end. Returns
    one `AdapterReport` per adapter (what `csulora_report.json` holds: `report.to_dict()`); `events`
    receives warnings and progress (default: none). Errors are `CsuloraError`s.
    """
    created = utc_now()
    method = get_method(request.method)
    hub = hub_client(request.subspace.cache_dir, request.subspace.hub, events)
    batch = Batch([str(spec) for spec in request.adapters], request.keep_going)
    by_index = {
        index: batch.attempt(index, lambda spec=spec: open_adapter(spec, hub))
        for index, spec in enumerate(request.adapters)
    }
    for index in batch.live():
        batch.attempt(index, lambda item=by_index[index]: _refuse_corrected(item, request.recorrect))
    # The checks of the real run, dry run or not: a dry run refuses what the run would (planned folders).
    unopened = tuple(
        folder for index in batch.failures if (folder := local_folder(request.adapters[index])) is not None
    )
    live = batch.live()
    planned = dict(zip(live, planned_output_folders([by_index[i] for i in live], request, unopened), strict=False))
    check_out_dir(request)
    for index, destination in planned.items():
        batch.attempt(index, lambda item=by_index[index], to=destination: _check_output(item, to, request))
    _stop_when_none_left(batch)
    opened = [by_index[index] for index in batch.live()]
    plan_correct_pushes(request, [planned.get(index) for index in batch.live()], [item.label for item in opened])
    _warn_what_is_not_corrected(opened, bool(planned), events)
    companion = _open_companion(request, hub)
    if companion is not None:
        _check_companion(companion, [item.adapter for item in opened], events)
    provider = open_provider(request.subspace, [item.adapter for item in opened], hub, events)
    description = provider.describe()
    _refuse_other_side(method, description)
    if not request.subspace.rank_cap_may_exceed:
        _check_rank_cap(request.subspace.rank_cap, description)
    check_order(*provider.models(), [(item.label, item.adapter.config) for item in opened], request.order_check, events)
    targets_of = {
        index: batch.attempt(index, lambda adapter=by_index[index].adapter: targets_for_adapter(adapter, provider))
        for index in batch.live()
    }
    _stop_when_none_left(batch)
    live = batch.live()
    opened = [by_index[index] for index in live]
    adapters = [item.adapter for item in opened]
    targets = [targets_of[index] for index in live]
    destinations = [None if request.dry_run else planned.get(index) for index in live]
    pushes = plan_correct_pushes(request, destinations, [item.label for item in opened])
    adapter_files = [adapter_file_digests(adapter) for adapter in adapters]
    with ExitStack() as outputs:
        folders = open_output_folders(outputs, request, destinations)
        writers = [
            None if folder is None else AdapterWriter(adapter, folder)
            for adapter, folder in zip(adapters, folders, strict=True)
        ]
        module_reports = _correct_modules(adapters, targets, writers, provider, method, request, events, companion)
        _refuse_no_displacement(module_reports, description)
        used = list(dict.fromkeys(target for by_module in targets for target in by_module.values()))
        bases, checkpoints = basis_records(provider, used)
        subspace = dict(description.to_dict(), energy=request.subspace.energy, bases=bases, checkpoints=checkpoints)
        if request.subspace.rank_cap is not None:
            subspace["rank_cap"] = request.subspace.rank_cap
        reports = []
        for index, adapter in enumerate(adapters):
            provenance = Provenance(
                created=created,
                command_line=None if request.command_line is None else list(request.command_line),
                adapter_files=adapter_files[index],
                left_out=list(adapters[index].left_out),
            )
            report = _adapter_report(
                opened[index], destinations[index], module_reports[index], subspace, provenance, method, request
            )
            if companion is not None:
                report = replace(report, method=report.method | {"safety_adapter": companion.source.to_dict()})
            if writers[index] is not None:
                writers[index].finish()
                report = finish_output(writers[index].folder, adapter, report)
            reports.append(report)
    # The outputs are renamed into place, complete, when `outputs` closes: only then are they pushed.
    return batch.finish(push_corrected(pushes, reports, request, hub, events))


def _open_companion(request: CorrectRequest, hub) -> OpenedAdapter | None:
    """merge-safety's safety adapter, opened like the adapters (a folder or a Hub repo, pinned)."""
    if request.correction.safety_adapter is None:
        return None
    return open_adapter(request.correction.safety_adapter, hub)


def _check_companion(companion: OpenedAdapter, adapters, events: Events) -> None:
    """Before any work: the safety adapter's modules fit the adapters' (shapes), and it updates some of them."""
    shared = 0
    for adapter in adapters:
        for module in adapter.modules:
            shared += _companion_module(companion, module) is not None
    if not shared:
        events.warn(
            f"{companion.label}: the safety adapter updates none of the adapters' modules, so nothing is merged"
        )


def _companion_module(companion: OpenedAdapter, module: LoraModule) -> LoraModule | None:
    """The safety adapter's module of the same name, its shape checked against `module`'s."""
    other = next((candidate for candidate in companion.adapter.modules if candidate.name == module.name), None)
    if other is not None and (other.out_features, other.in_features) != (module.out_features, module.in_features):
        raise ShapeMismatchError(
            f"updates a {other.out_features}x{other.in_features} weight where the adapter's {module.name} is "
            f"{module.out_features}x{module.in_features}: it was trained on another model",
            where=f"{companion.adapter.weights_path} [{other.b_key}]",
        )
    return other


def _companion_update(companion: OpenedAdapter | None, module: LoraModule) -> CompanionUpdate | None:
    """The safety adapter's update of `module` (matched by name), its shapes checked against the module's."""
    other = None if companion is None else _companion_module(companion, module)
    if other is None:
        return None
    lora_a, lora_b = companion.adapter.factors(other)
    return CompanionUpdate(lora_b.to(torch.float32), lora_a.to(torch.float32), other.scale.value)


def _stop_when_none_left(batch: Batch) -> None:
    """`keep_going` with every adapter refused: nothing to correct, no subspace to open."""
    if not batch.live():
        batch.finish([])


def _warn_what_is_not_corrected(opened: list[OpenedAdapter], writes: bool, events: Events) -> None:
    """Full weights copied unchanged; what a folder holds besides the adapter, left out of the output (where
    there is one: `writes`); a second adapter in a subfolder (PEFT's layout for several) unless it is
    corrected too."""
    given = {item.adapter.folder.resolve() for item in opened}
    for item in opened:
        adapter = item.adapter
        if adapter.passthrough_keys:
            events.warn(
                f"{adapter.weights_path}: {len(adapter.passthrough_keys)} full weight tensor(s) besides the LoRA "
                f"factors (modules_to_save or saved embedding layers, e.g. {adapter.passthrough_keys[0]}); they "
                "replace the model's own weights on load and are copied unchanged, not corrected"
            )
    for item in opened:
        _warn_about_folder(item, given, writes, events)


def _warn_about_folder(item: OpenedAdapter, given: set[Path], writes: bool, events: Events) -> None:
    adapter = item.adapter
    for name in adapter.other_adapters:
        if (adapter.folder / name).resolve() in given:
            continue
        events.warn(
            f"{item.label}: the subfolder {name}/ holds another adapter, which is not corrected; correct it as "
            f"an adapter of its own ({adapter.folder / name})"
        )
    others = [name for name in adapter.left_out if name.rstrip("/") not in adapter.other_adapters]
    # A Hub repo's other files are never fetched: the report lists them, and nothing was there to expect.
    if others and writes and item.output_name is None:
        shown = first_few(others, 6)
        events.warn(f"{item.label}: not part of the adapter, left out of the output (the report lists them): {shown}")
    for mismatch in adapter.config_mismatches[:3]:
        events.warn(f"{item.label}: adapter_config.json disagrees with the tensors: {mismatch}")
    if len(adapter.config_mismatches) > 3:
        events.warn(
            f"{item.label}: {len(adapter.config_mismatches) - 3} more modules disagree with adapter_config.json"
        )


def _check_output(item: OpenedAdapter, destination: Path, request: CorrectRequest) -> None:
    """No output may be, lie inside, or hold a folder this run reads (`overlap.py`), `overwrite` or not;
    an existing one needs `overwrite` and may hold only what csulora wrote (`outputs.py`)."""
    spec = request.subspace
    inputs = [
        ("the adapter folder", local_folder(adapter))
        for adapter in request.adapters
        if local_folder(adapter) is not None
    ]
    inputs += [
        ("the safety adapter folder", local_folder(request.correction.safety_adapter)),
        ("the subspace folder", local_folder(spec.subspace)),
        ("the base model folder", local_folder(spec.base)),
        ("the aligned model folder", local_folder(spec.aligned)),
    ]
    if item.output_name is None:
        inputs.append(("the adapter folder", item.adapter.folder))
    refuse_output_over_inputs(destination, "out" if request.out is not None else "out_dir", inputs)
    check_output_folder(request, destination)


def _check_rank_cap(rank_cap: int | None, subspace: SubspaceDescription) -> None:
    """A cap above what a subspace folder stores would be silently meaningless: refuse it."""
    stored = subspace.stored_max_rank
    if rank_cap is not None and stored is not None and rank_cap > stored:
        raise UsageError(
            f"{rank_cap} is more columns than the subspace folder stores per module ({stored}, its max_rank)",
            parameter="max_rank",
        )


def _refuse_other_side(method, subspace: SubspaceDescription) -> None:
    """A method reads bases of one side (an output-side method projects B's columns, an input-side one A's rows):
    a folder of the other side has the wrong number of rows, and its directions mean something else."""
    if subspace.side in method.entry.sides:
        return
    fitting = [name for name, entry in METHODS.items() if subspace.side in entry.sides]
    raise UsageError(
        f"an {subspace.side}-side subspace folder, which {{method}} {method.name} cannot use (it reads "
        f"{' or '.join(method.entry.sides)}-side bases); with this folder use {' or '.join(fitting)}",
        parameter="method",
        where=str(subspace.folder),
    )


def _refuse_no_displacement(module_reports: list[list[ModuleReport]], subspace: SubspaceDescription) -> None:
    """Bases without a displacement anywhere mean the two models are the same: nothing can be corrected."""
    if any(report.status != "no_signal" for reports in module_reports for report in reports):
        return
    if isinstance(subspace.estimation, dict) and subspace.estimation.get("kind") == "activations":
        raise CsuloraError(
            "the activation subspace folder holds no direction for any module the adapters target (a refusal "
            "direction is stored only for modules that write to the residual stream, o_proj and down_proj)",
            where=str(subspace.folder),
        )
    base = "the base model" if subspace.base is None else subspace.base.label
    aligned = "the aligned model" if subspace.aligned is None else subspace.aligned.label
    raise CsuloraError(
        f"no displacement: {base} and {aligned} hold the same weights in every module the adapters target, so "
        "there is no safety subspace to correct against"
    )


def _correct_modules(
    adapters, targets, writers, provider, method, request: CorrectRequest, events: Events, companion=None
):
    """Module by module: one basis, then that module of every adapter; returns reports per adapter.

    A method that selects modules (Safe LoRA) needs every module's similarity before any B is written:
    its candidates (adapter-sized) are kept until the last module is scored, then selected per adapter.
    """
    spec = request.subspace
    modules_of_target: dict[Target, list[tuple[int, LoraModule]]] = {}
    for index, adapter in enumerate(adapters):
        for module in adapter.modules:
            modules_of_target.setdefault(targets[index][module.name], []).append((index, module))
    # readd --readd-everywhere: the folder's modules that an adapter does not target, added to it.
    added_of_target: dict[Target, list[tuple[int, str]]] = {}
    if request.correction.readd_everywhere:
        for index in range(len(adapters)):
            for name, target in _untargeted(provider, adapters[index], targets[index]).items():
                added_of_target.setdefault(target, []).append((index, name))
                modules_of_target.setdefault(target, [])
    reports: list[dict[str, ModuleReport]] = [{} for _ in adapters]
    pending: list[dict[str, tuple[LoraModule, Outcome]]] = [{} for _ in adapters]
    max_rank = spec.columns_kept
    advance = events.start("correcting modules", len(modules_of_target))
    for target, basis, _ in provider.bases(list(modules_of_target)):
        subspace = basis.select(spec.energy, max_rank)
        for index, module in modules_of_target[target]:
            lora_a, lora_b = adapters[index].factors(module)
            outcome = correct_module(
                module,
                lora_a,
                lora_b,
                target,
                subspace,
                basis,
                method,
                request.correction,
                _companion_update(companion, module),
                provider.side,
            )
            if outcome.report_if_unselected is not None:
                pending[index][module.name] = (module, outcome)
                continue
            reports[index][module.name] = outcome.report
            if outcome.new_b is not None and writers[index] is not None:
                writers[index].write_module(module, outcome.new_b, outcome.new_a)
        for index, name in added_of_target.get(target, []) if subspace.has_signal else []:
            report, lora_b, lora_a = added_module(name, target, subspace, basis, request.correction)
            reports[index][name] = report
            if writers[index] is not None:
                writers[index].add_module(name, lora_b, lora_a)
        advance()
    for index, candidates in enumerate(pending):
        if candidates:
            reports[index].update(_write_selected(candidates, writers[index], method, request.correction))
    _warn_inexact(reports, events)
    # The adapter's modules in its order, then the ones added to it.
    return [
        [by_name[module.name] for module in adapter.modules]
        + [report for name, report in by_name.items() if name not in {module.name for module in adapter.modules}]
        for adapter, by_name in zip(adapters, reports, strict=True)
    ]


def _untargeted(provider, adapter, targets: dict[str, Target]) -> dict[str, Target]:
    """The folder's linear modules an adapter does not target, by PEFT module name, each in the orientation
    whose basis is in output-space form (untransposed where both are stored).

    A PEFT name is the weight key less `.weight`, with the prefix the adapter's own modules show between the
    two (`transformer.` for a GPT-2 checkpoint saved without it); embeddings and the output head are left
    out (PEFT adapts them with other tensors)."""
    to_name = _peft_naming(adapter, targets)
    taken = {target.base_key for target in targets.values()}
    untargeted = {}
    for key in sorted(provider.keys() - taken):
        if _EMBEDDING_KEY.search(key) or "lm_head" in key:
            continue
        orientations = provider.orientations(key)
        untargeted[to_name(key.removesuffix(".weight"))] = Target(key, False not in orientations)
    return untargeted


def _peft_naming(adapter, targets: dict[str, Target]):
    """How the adapter's module names relate to the checkpoint's keys: a prefix added or one removed."""
    module = adapter.modules[0]
    key_name = targets[module.name].base_key.removesuffix(".weight")
    if module.name.endswith(key_name):
        added = module.name[: len(module.name) - len(key_name)]
        return lambda name: added + name
    if key_name.endswith(module.name):
        removed = key_name[: len(key_name) - len(module.name)]
        return lambda name: name.removeprefix(removed)
    raise CsuloraError(
        f"cannot tell the PEFT name of a module from its weight key ({module.name} updates {key_name}.weight)",
        parameter="readd_everywhere",
    )


def _write_selected(candidates: dict, writer, method, params: CorrectionParams) -> dict[str, ModuleReport]:
    """One adapter's selection (docs/method.md section 5, Safe LoRA): selected modules get their candidate B'."""
    names = list(candidates)
    chosen = method.select([candidates[name][1].report.similarity for name in names], params)
    reports = {}
    for name, selected in zip(names, chosen, strict=True):
        module, outcome = candidates[name]
        if selected and writer is not None and outcome.new_b is not None:
            writer.write_module(module, outcome.new_b, outcome.new_a)
        reports[name] = outcome.report if selected else outcome.report_if_unselected
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
            f"{lowest:.4f}), so C B keeps only C's top-k part; pass {{energy}} 1 and a {{max_rank}} covering the "
            "module width for the exact rule"
        )


def _adapter_report(
    opened: OpenedAdapter, destination, modules, subspace: dict, provenance: Provenance, method, request: CorrectRequest
) -> AdapterReport:
    adapter = opened.adapter
    method_record = {
        "name": method.name,
        "params": method.parameters(request.correction),
        "reference": method.reference_url,
    }
    if method.selects_modules:
        method_record["selected_modules"] = sum(bool(module.selected) for module in modules)
    return AdapterReport(
        adapter=opened.label,
        adapter_source=opened.source.to_dict(),
        output=None if destination is None else str(destination.resolve()),
        method=method_record,
        subspace=subspace,
        modules=modules,
        passthrough=adapter.passthrough_keys,
        provenance=provenance,
    )
