"""The Python API: one function per command, each taking a frozen request.

This is where sources, bases, the math and adapter files meet. It prints nothing: progress and warnings
go through an `Events` object the caller supplies (the CLI's shows rich progress bars).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .adapter import (
    AdapterWriter,
    LoraAdapter,
    LoraModule,
    read_adapter,
    resolved_kind,
)
from .atomic import atomic_folder, check_destination
from .bases import BasisProvider, EstimatingProvider, FolderProvider, Target
from .cache import BasisCache, SubspaceFolder, add_to_subspace_folder, default_cache_dir, prepare_subspace_folder
from .correction import CorrectionParams, decompose_update, measure_correction
from .errors import CsuloraError, UsageError
from .events import Events, SilentEvents
from .hub_client import HubClient, HubOptions
from .methods import METHODS, CorrectionMethod, get_method
from .methods.safelora import SELECTIONS as SAFELORA_SELECTIONS
from .report import REPORT_FILE, AdapterReport, ModuleReport
from .requests import (
    CorrectRequest,
    EstimateRequest,
    EstimateResult,
    InspectRequest,
    InspectResult,
    ModuleSubspace,
    ModuleSummary,
    SubspaceSpec,
)
from .sources import open_source
from .subspace import EstimationParams, SelectedSubspace, SubspaceBasis
from .targets import layer_of, model_type, parse_layers, targets_by_name, targets_for_adapter

# The request and result types are part of the API; importing them from here keeps working.
__all__ = [
    "CorrectRequest",
    "EstimateRequest",
    "EstimateResult",
    "HubOptions",
    "Events",
    "InspectRequest",
    "InspectResult",
    "ModuleSubspace",
    "ModuleSummary",
    "SilentEvents",
    "SubspaceSpec",
    "correct",
    "estimate_subspace",
    "inspect",
    "resolve_device",
]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA was asked for but torch sees no CUDA device", where="--device")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {name!r}; choose cpu, cuda or auto", where="--device")
    return torch.device(name)


def estimate_subspace(request: EstimateRequest, events: Events = SilentEvents()) -> EstimateResult:
    _check_estimation(request.estimation, request.energy)
    layers = parse_layers(request.layers) if request.layers is not None else None
    cache_dir = request.cache_dir or default_cache_dir()
    provider = _estimating_provider(
        request.base,
        request.aligned,
        request.estimation,
        cache_dir,
        resolve_device(request.device),
        request.hub,
        events,
    )
    if request.adapter is not None:
        adapter = read_adapter(request.adapter)
        targets = list(dict.fromkeys(targets_for_adapter(adapter, provider).values()))
    else:
        targets = targets_by_name(provider, request.modules, model_type(provider.base))
    if layers is not None:
        targets = [target for target in targets if layer_of(target.base_key) in layers]
    if not targets:
        where = "--layers" if layers is not None else "--modules" if request.modules else request.base
        raise CsuloraError("no 2-D weights match", where=where)
    provider.check(targets)
    if request.out is not None:
        sources = {"base": provider.base.describe(), "aligned": provider.aligned.describe()}
        prepare_subspace_folder(request.out, sources, request.estimation, request.overwrite)
    advance = events.start("estimating subspaces", len(targets))
    modules = []
    # CLI.md: by default, every 2-D weight *that differs*; whether it differs is known once it is read.
    skip_unchanged = request.adapter is None and request.modules is None
    for target, basis, from_cache in provider.bases(targets):
        advance()
        if skip_unchanged and not basis.has_signal:
            continue
        modules.append(_module_subspace(target, basis, request.energy, from_cache))
        if request.out is not None:
            # Written as each module finishes, so a job split across machines fills the folder as it goes.
            add_to_subspace_folder(request.out, provider.request(target), basis)
    location = str(request.out) if request.out is not None else str(cache_dir)
    return EstimateResult(location=location, modules=modules)


def _module_subspace(target: Target, basis: SubspaceBasis, energy: float, from_cache: bool) -> ModuleSubspace:
    selected = basis.select(energy)
    return ModuleSubspace(
        target=target,
        stored_rank=basis.basis.shape[1],
        rank=selected.rank,
        captured_energy=selected.captured_energy,
        displacement_energy=basis.total_energy,
        has_signal=basis.has_signal,
        from_cache=from_cache,
    )


def _estimating_provider(
    base: str,
    aligned: str,
    params: EstimationParams,
    cache_dir: Path,
    device: torch.device,
    hub_options: HubOptions,
    events: Events,
) -> EstimatingProvider:
    cache = BasisCache(cache_dir, events.warn)
    hub = HubClient(hub_options, cache.hub_metadata_dir, events)
    return EstimatingProvider(
        open_source(base, digest_memo_dir=cache.digest_memo_dir, hub=hub),
        open_source(aligned, digest_memo_dir=cache.digest_memo_dir, hub=hub),
        cache,
        params,
        device,
    )


def _provider(spec: SubspaceSpec, adapters: list[LoraAdapter], events: Events) -> BasisProvider:
    device = resolve_device(spec.device)
    _check_estimation(spec.estimation, spec.energy)  # --rank and --energy also cut a folder's bases
    if spec.subspace is not None:
        if spec.base is not None or spec.aligned is not None:
            raise UsageError("give either --subspace or --base/--aligned, not both", where="--subspace")
        return FolderProvider(SubspaceFolder(spec.subspace), device)
    if spec.base is None:
        raise UsageError("a subspace is needed: pass --subspace DIR or --base BASE", where="--base")
    aligned = spec.aligned or _aligned_from_adapters(adapters)
    return _estimating_provider(
        spec.base, aligned, spec.estimation, spec.cache_dir or default_cache_dir(), device, spec.hub, events
    )


def _aligned_from_adapters(adapters: list[LoraAdapter]) -> str:
    names = {adapter.config.get("base_model_name_or_path") for adapter in adapters}
    if len(names) != 1 or None in names or not all(isinstance(n, str) and n for n in names):
        raise UsageError(
            "the adapters do not name one common base_model_name_or_path; pass the aligned model",
            where="--aligned",
        )
    return names.pop()


def _check_estimation(params: EstimationParams, energy: float) -> None:
    if params.max_rank < 1:
        raise UsageError(f"must be at least 1, got {params.max_rank}", where="--rank")
    if params.power_iterations < 0:
        raise UsageError(f"must be at least 0, got {params.power_iterations}", where="--power-iterations")
    if not 0.0 < energy <= 1.0:
        raise UsageError(f"must be in (0, 1], got {energy}", where="--energy")


def _check_correction(params: CorrectionParams) -> None:
    if not params.lambda_ >= 0.0:  # also refuses NaN
        raise UsageError(f"must be >= 0, got {params.lambda_}", where="--lambda")
    if not 0.0 <= params.eps <= 1.0:
        raise UsageError(f"must be in [0, 1], got {params.eps}", where="--eps")
    if params.safelora_select not in SAFELORA_SELECTIONS:
        choices = " or ".join(SAFELORA_SELECTIONS)
        raise UsageError(f"choose {choices}, got {params.safelora_select!r}", where="--safelora-select")
    if not -1.0 <= params.safelora_threshold <= 1.0:  # a cosine similarity; also refuses NaN
        raise UsageError(f"must be in [-1, 1], got {params.safelora_threshold}", where="--safelora-threshold")
    if params.safelora_layers < 0:
        raise UsageError(f"must be at least 0, got {params.safelora_layers}", where="--safelora-layers")


def _destinations(adapters: list[LoraAdapter], out: Path) -> list[Path]:
    if len(adapters) == 1:
        return [out]
    names = [adapter.folder.resolve().name for adapter in adapters]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UsageError(
            f"several adapters share the folder name {duplicates[0]!r}; outputs would collide",
            where="ADAPTER",
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
    if not request.adapters:
        raise UsageError("give at least one adapter folder", where="ADAPTER")
    if request.out is None and not request.dry_run:
        raise UsageError("an output folder is needed (or --dry-run)", where="--out")
    method = get_method(request.method)
    _check_correction(request.correction)
    if request.correction.two_sided and not method.supports_two_sided:
        two_sided = ", ".join(name for name, known in METHODS.items() if known.supports_two_sided)
        raise UsageError(f"--method {method.name} has no two-sided form (it has for {two_sided})", where="--two-sided")
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
    provider = _provider(request.subspace, adapters, events)
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
                (writer.folder / "README.md").write_text(_provenance(adapter, report))
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
    pending: list[dict[str, tuple[LoraModule, _Outcome]]] = [{} for _ in adapters]
    advance = events.start("correcting modules", len(users))
    for target, basis, _ in provider.bases(list(users)):
        subspace = basis.select(spec.energy, spec.estimation.max_rank)
        for index, module in users[target]:
            lora_a, lora_b = adapters[index].factors(module)
            outcome = _correct_module(module, lora_a, lora_b, target, subspace, basis, method, request.correction)
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
    """One adapter's selection (METHOD.md section 7): selected modules get their candidate B'."""
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


@dataclass(frozen=True)
class _Outcome:
    report: ModuleReport
    new_b: torch.Tensor | None  # in the stored dtype; None when B is kept
    kept: ModuleReport | None = None  # a selecting method's report should the module not be selected


def _correct_module(
    module: LoraModule,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    target: Target,
    subspace: SelectedSubspace,
    basis: SubspaceBasis,
    method: CorrectionMethod,
    params: CorrectionParams,
) -> _Outcome:
    """One module of one adapter: its report and new B (for a selecting method, a candidate)."""
    device = subspace.basis.device
    stored_dtype = lora_b.dtype
    lora_b = lora_b.to(device, torch.float32)
    update = decompose_update(lora_b, lora_a.to(device, torch.float32), module.scale.value)

    def module_report(effective_b: torch.Tensor, status: str, note: str = "", **selection) -> ModuleReport:
        return ModuleReport(
            module=module.name,
            base_key=target.base_key,
            kind=resolved_kind(module, target.transposed).value,
            shape=(module.out_features, module.in_features),
            rank=module.scale.rank,
            alpha=module.scale.alpha,
            scale=module.scale.value,
            status=status,
            subspace_rank=subspace.rank,
            captured_energy=subspace.captured_energy,
            displacement_energy=basis.total_energy,
            figures=measure_correction(update, effective_b, subspace, params.eps, params.two_sided),
            note=note,
            **selection,
        )

    if not subspace.has_signal:
        note = "base and aligned weights do not differ: update left unchanged"
        selection = {"selected": False} if method.selects_modules else {}
        return _Outcome(module_report(lora_b, "no_signal", note, **selection), None)
    if (params.two_sided or method.needs_right_vectors) and subspace.right is None:
        raise CsuloraError(
            f"the basis of {target.base_key} holds no right singular vectors (written by an older csulora), "
            f"which --two-sided and --method {method.name} need",
            where="--subspace",
            hint="re-run estimate-subspace --out into a new folder",
        )
    if method.name == "none":
        return _Outcome(module_report(lora_b, "unchanged"), None)
    candidate = method.corrected_b(update, subspace, params)
    # Measured on what is written: B' rounded to the adapter's dtype, not the float32 intermediate.
    new_b = candidate.to(stored_dtype).cpu()
    written = new_b.to(device, torch.float32)
    if not method.selects_modules:
        return _Outcome(module_report(written, "corrected"), new_b)
    similarity = method.similarity(update, candidate)
    note = method.note(subspace)
    return _Outcome(
        module_report(written, "corrected", note, selected=True, similarity=similarity),
        new_b,
        kept=module_report(lora_b, "unchanged", note, selected=False, similarity=similarity),
    )


def _provenance(adapter: LoraAdapter, report: AdapterReport) -> str:
    method = report.method
    params = ", ".join(f"{key}={value}" for key, value in method["params"].items()) or "none"
    lines = [
        "# Corrected LoRA adapter",
        "",
        f"Made by csulora {__version__} from `{adapter.folder.resolve()}`.",
        "",
        f"- method: `{method['name']}` ({params})" + (f", {method['reference']}" if method["reference"] else ""),
        f"- subspace: {json.dumps(report.subspace, sort_keys=True)}",
        f"- off-subspace energy before: {report.totals.off_subspace_fraction:.4f}; "
        f"energy removed: {report.totals.attenuation_fraction:.4f}; cosine to the original: {report.totals.cosine:.4f}",
        "",
        "Only `lora_B` / `lora_embedding_B` tensors were changed; `adapter_config.json` and every other tensor",
        f"are the original's. Per-module figures: `{REPORT_FILE}`.",
    ]
    original = adapter.folder / "README.md"
    if original.is_file():
        lines += [
            "",
            "---",
            "",
            "The original adapter's README follows.",
            "",
            original.read_text(errors="replace"),
        ]
    return "\n".join(lines) + "\n"


def inspect(request: InspectRequest, events: Events = SilentEvents()) -> InspectResult:
    if request.fail_above is not None and not 0.0 <= request.fail_above <= 1.0:
        raise UsageError(f"must be in [0, 1], got {request.fail_above}", where="--fail-above")
    adapter = read_adapter(request.adapter)
    if not request.subspace.given:
        if request.fail_above is not None:
            raise UsageError("needs a subspace: pass --subspace DIR or --base BASE", where="--fail-above")
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
