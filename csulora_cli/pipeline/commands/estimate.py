"""`estimate-subspace`: the bases of the targeted modules, into the cache or a portable subspace folder (then
pushed to a Hub repo when asked)."""

from __future__ import annotations

from ...errors import CsuloraError
from ...events import Events, SilentEvents
from ...subspace.estimate import SubspaceBasis
from ...subspace.folder import add_to_subspace_folder, check_subspace_folder, prepare_subspace_folder, record_job
from ...subspace.keys import Target, layer_of, parse_layers
from ...subspace.targets import model_type, targets_by_name, targets_for_adapter
from ..plumbing.adapter_source import open_adapter
from ..plumbing.basis_source import estimating_provider, hub_client, resolve_device
from ..plumbing.overlap import local_folder, refuse_output_over_inputs
from ..plumbing.pairs import check_models_agree
from ..plumbing.sides import check_order
from ..types.requests import EstimateRequest
from ..types.results import EstimateResult, ModuleSubspace
from .activations import estimate_activation_subspace
from .publish import plan_subspace_push, push_subspace


def estimate_subspace(request: EstimateRequest, events: Events = SilentEvents()) -> EstimateResult:
    """Estimate the safety subspace of each targeted module, into the cache or `request.out`.

        from pathlib import Path
        from csulora_cli.api import EstimateRequest, EstimationParams, estimate_subspace
        result = estimate_subspace(EstimateRequest(base="base", aligned="aligned", adapter="adapter",
                                                   estimation=EstimationParams(max_rank=16), out=Path("subspace")))
        for module in result.modules:
            print(module.module, module.rank, module.captured_energy)

    Returns an `EstimateResult` (`location`, `modules`, `sources`; `result.to_dict()` is the `--json` body).
    With `request.activations`, the bases come from the aligned model's activations (`activations.py`).
    """
    if request.activations is not None:
        return estimate_activation_subspace(request, events)
    if request.out is not None:
        inputs = [
            ("the base model folder", local_folder(request.base)),
            ("the aligned model folder", local_folder(request.aligned)),
            ("the adapter folder", local_folder(request.adapter)),
        ]
        refuse_output_over_inputs(request.out, "out", inputs)
    layers = parse_layers(request.layers) if request.layers is not None else None
    push = plan_subspace_push(request)
    hub = hub_client(request.cache_dir, request.hub, events)
    # By default, every 2-D weight *that differs* (README, estimate-subspace): those alignment left alone
    # are found by comparing them block by block, without forming their V.
    skip_unchanged = request.adapter is None and request.modules is None
    provider = estimating_provider(
        request.base,
        request.aligned,
        request.estimation,
        request.cache_dir,
        resolve_device(request.device),
        hub,
        events,
        # Without a folder to write, the cache is what this command produces: failing to write it fails.
        cache_required=request.out is None,
        compare_first=skip_unchanged,
    )
    adapter_configs = []
    if request.adapter is not None:
        opened = open_adapter(request.adapter, hub)
        adapter = opened.adapter
        adapter_configs.append((opened.label, adapter.config))
        targets = list(dict.fromkeys(targets_for_adapter(adapter, provider).values()))
    else:
        targets = targets_by_name(provider.base, provider.aligned, request.modules, model_type(provider.base))
    if layers is not None:
        targets = [target for target in targets if layer_of(target.base_key) in layers]
    if not targets:
        if layers is not None or request.modules:
            raise CsuloraError("no 2-D weights match", parameter="layers" if layers is not None else "modules")
        raise CsuloraError("no 2-D weights match", where=request.base)
    provider.check(targets)
    check_models_agree(provider.base, provider.aligned, adapter_configs, request.confirm_models)
    sources = {"base": provider.base.describe().to_dict(), "aligned": provider.aligned.describe().to_dict()}
    order_check = "accept" if request.confirm_order else "warn"
    evidence = check_order(provider.base, provider.aligned, adapter_configs, order_check, events)
    # Which side is which, and what confirmed it: `V = W_aligned - W_base`, whose sign the signed statistics read.
    order = {
        "displacement": "aligned - base",
        "evidence": evidence.agreeing,
        "confirmed_by_user": request.confirm_order,
    }
    if request.out is not None:
        check_subspace_folder(request.out, sources, request.estimation, request.overwrite, request.storage)
    advance = events.start("estimating subspaces", len(targets))
    modules = []
    # The folder is prepared at the first basis that holds a displacement: a pair that differs nowhere
    # leaves nothing behind (below). Bases without one wait until then.
    waiting: list[tuple[Target, SubspaceBasis]] = []
    unchanged: list[Target] = []
    folder_ready = False
    any_signal = False
    for target, basis, from_cache in provider.bases(targets):
        advance()
        any_signal = any_signal or basis.has_signal
        if skip_unchanged and not basis.has_signal:
            unchanged.append(target)
            continue
        modules.append(ModuleSubspace.of_basis(target, basis, request.energy, from_cache))
        if request.out is None:
            continue
        waiting.append((target, basis))
        if any_signal:
            if not folder_ready:
                prepare_subspace_folder(
                    request.out, sources, request.estimation, request.overwrite, request.storage, order
                )
                # What this job was asked for, so that a folder it leaves half-filled says what it lacks.
                record_job(request.out, targets, finished=False)
                folder_ready = True
            # Written as each module finishes, so a job split across machines fills the folder as it goes.
            for ready_target, ready_basis in waiting:
                add_to_subspace_folder(request.out, provider.request(ready_target), ready_basis, request.storage)
            waiting.clear()
    if folder_ready:
        record_job(request.out, targets, finished=True, unchanged=unchanged)
    if not any_signal:
        raise CsuloraError(
            f"no displacement: {request.base} and {request.aligned} hold the same weights in every targeted "
            f"module ({len(targets)}), so there is no safety subspace to estimate; check that the second model "
            "is the aligned one"
        )
    location = str(request.out) if request.out is not None else str(provider.cache.directory)
    result = EstimateResult(
        location=location,
        modules=modules,
        sources=sources,
        estimation=request.estimation.as_dict(),
        energy=request.energy,
    )
    return push_subspace(push, result, request, hub, events)
