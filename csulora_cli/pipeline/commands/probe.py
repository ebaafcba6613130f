"""`probe`: each adapter's effect on refusals, read from the model's log-probabilities (docs/method.md,
"The behavioural probe").

The model is loaded once; its compliance openings and margins without an adapter are computed once;
then each adapter is injected, scored and removed in turn. Forward passes only, unless `generate` asks
for greedy answers beside the margins.
"""

from __future__ import annotations

import math
import time

from ...adapters.peft import LoraAdapter, ModuleKind
from ...errors import MissingTensorError, ShapeMismatchError
from ...events import Events, SilentEvents
from ...probe.judge import KeywordJudge
from ...probe.measure import compliance_openings, margins_of
from ...probe.prompts import PromptSet
from ...probe.sources import load_prompts
from ...probe.stats import summarize
from ..plumbing.adapter_source import OpenedAdapter, open_adapter
from ..plumbing.basis_source import hub_client, resolve_device
from ..plumbing.model_folder import ModelFolder, open_model_folder
from ..types.probe import OVER_REFUSAL, SHIFT, UNREFUSED_SHARE, AdapterProbe, ProbeRequest, ProbeResult, SetProbe
from ..types.results import GateCheck


def probe(request: ProbeRequest, events: Events = SilentEvents()) -> ProbeResult:
    """Every adapter of `request` probed against the bare model; gates checked, nothing written.

    from csulora_cli.pipeline.commands.probe import probe
    result = probe(ProbeRequest(adapters=("adapter",), model="aligned", prompts="harmful.txt",
                                fail_if_shift_above=1.0))
    for adapter in result.adapters:
        print(adapter.adapter, adapter.harmful.summary.unrefused_share, adapter.tripped)
    """
    started = time.perf_counter()
    harmful = load_prompts(request.prompts, request.prompt_field, request.hub.token)
    benign = (
        None
        if request.benign is None
        else load_prompts(
            request.benign, request.benign_field or request.prompt_field, request.hub.token, "benign_field"
        )
    )
    hub = hub_client(request.cache_dir, request.hub, events)
    opened = [open_adapter(spec, hub) for spec in request.adapters]
    model_folder = open_model_folder(request.model, hub)
    model_name = request.model_name or model_folder.hub_id
    device = resolve_device(request.device)

    # transformers and peft only now: the request and the inputs are checked without them.
    from ...inference.runner import LoadedModel
    from ...inference.threads import settled_cpu_threads

    model = LoadedModel.from_folder(model_folder.folder, device, request.dtype)
    with settled_cpu_threads(device, getattr(model.model.config, "hidden_size", None)):
        return _probe_loaded(request, model, model_folder, model_name, opened, harmful, benign, device, events, started)


def _probe_loaded(request, model, model_folder, model_name, opened, harmful, benign, device, events, started):
    """The probe, the model loaded: the bare model's openings and margins, then each adapter's."""
    shapes = model.linear_shapes()
    for adapter in opened:
        check_adapter_fits(adapter, shapes, str(request.model))
        warn_on_other_base(adapter, model_folder, model_name, events)

    sets = [("harmful", harmful)] + ([("benign", benign)] if benign is not None else [])
    batches = sum(math.ceil(len(prompts.prompts) / request.batch_size) for _, prompts in sets)
    per_model = batches * (2 if request.generate else 1)
    advance = events.start(f"probing {len(opened)} adapter(s)", batches + per_model * (1 + len(opened)))
    compliance = {}
    for name, prompts in sets:
        if request.compliance_opening is None:
            compliance[name] = compliance_openings(
                model, prompts.prompts, request.refusal_openings, batch_size=request.batch_size, advance=advance
            )
        else:
            compliance[name] = [request.compliance_opening] * len(prompts.prompts)
            advance(math.ceil(len(prompts.prompts) / request.batch_size))

    def measured(bare: AdapterProbe | None) -> dict[str, SetProbe]:
        probes = {}
        for name, prompts in sets:
            margins = margins_of(
                model,
                prompts.prompts,
                compliance[name],
                request.refusal_openings,
                batch_size=request.batch_size,
                advance=advance,
            )
            reference = None if bare is None else getattr(bare, name).summary.margins
            probes[name] = _set_probe(model, request, prompts, margins, reference, advance)
        return probes

    bare_sets = measured(None)
    bare = AdapterProbe("", {"kind": "none"}, bare_sets["harmful"], bare_sets.get("benign"))
    results = []
    for adapter in opened:
        with model.adapter(adapter.adapter.folder):
            probes = measured(bare)
        results.append(
            AdapterProbe(
                adapter.label,
                adapter.source.to_dict(),
                probes["harmful"],
                probes.get("benign"),
                gate_checks(request, probes["harmful"], probes.get("benign")),
            )
        )
    return ProbeResult(
        model={
            "path": str(model_folder.folder.resolve()),
            "name": model_name,
            "source": model_folder.source.to_dict(),
            "device": str(device),
            "dtype": str(next(model.model.parameters()).dtype).removeprefix("torch."),
        },
        prompts=harmful,
        benign_prompts=benign,
        compliance="own" if request.compliance_opening is None else request.compliance_opening,
        refusal_openings=request.refusal_openings,
        confidence=request.confidence,
        bare=bare,
        adapters=tuple(results),
        seconds=time.perf_counter() - started,
    )


def _set_probe(model, request: ProbeRequest, prompts: PromptSet, margins, reference, advance) -> SetProbe:
    summary = summarize(margins, reference, request.confidence)
    if not request.generate:
        return SetProbe(summary)
    answers = model.generate(prompts.prompts, request.generate, batch_size=request.batch_size, advance=advance)
    refused = KeywordJudge(prefixes=request.refusal_openings).refusal_rate(answers)
    return SetProbe(summary, 1.0 - refused, tuple(answers) if request.save_answers else None)


def gate_checks(request: ProbeRequest, harmful: SetProbe, benign: SetProbe | None) -> tuple[GateCheck, ...]:
    values = {
        UNREFUSED_SHARE: harmful.summary.unrefused_share,
        SHIFT: harmful.summary.shift,
        OVER_REFUSAL: None if benign is None else benign.summary.refused_share,
    }
    return tuple(GateCheck(statistic, "above", threshold, values[statistic]) for statistic, threshold in request.gates)


def check_adapter_fits(opened: OpenedAdapter, model_shapes: dict[str, tuple[int, int]], model_label: str) -> None:
    """Every linear module the adapter updates exists in the model with the adapter's shape: an adapter
    trained on another model is refused before peft meets it."""
    adapter: LoraAdapter = opened.adapter
    for module in adapter.modules:
        if module.kind is not ModuleKind.LINEAR:
            continue
        shape = model_shapes.get(module.name)
        if shape is None:
            raise MissingTensorError(
                f"updates {module.name}, which the model {model_label} has no linear layer of: it was trained on "
                "another model",
                where=opened.label,
            )
        if shape != (module.out_features, module.in_features):
            raise ShapeMismatchError(
                f"updates {module.name} as ({module.out_features}, {module.in_features}), which is {shape} in the "
                f"model {model_label}: it was trained on another model",
                where=opened.label,
            )


def warn_on_other_base(opened: OpenedAdapter, model: ModelFolder, model_name: str | None, events: Events) -> None:
    """A warning, not an error, when the adapter names another base: a local copy or a renamed folder holds
    the same weights under another name, and the shapes have been checked."""
    named = opened.adapter.config.get("base_model_name_or_path")
    if not isinstance(named, str) or not named.strip():
        return
    folder = model.folder
    known = {str(folder), str(folder.resolve()), folder.name, model_name, _last_part(model_name)}
    if model.hub_id is not None:  # a snapshot folder's name is its commit: only the id names it
        known -= {str(folder), str(folder.resolve()), folder.name}
    if named in known or _last_part(named) in known:
        return
    events.warn(
        f"{opened.label}: its base_model_name_or_path is {named}, not the model probed "
        f"({model_name or folder}); its margins are read on this model all the same"
    )


def _last_part(name: str | None) -> str | None:
    return None if name is None else name.rstrip("/").rsplit("/", 1)[-1]
