"""`estimate-subspace --activations`: a subspace folder from the aligned model's activations (docs/method.md
section 12), the input directions the harmful prompts excite and the contrast ones do not, or the refusal
direction of each block on the modules that write into the residual stream.

The model is run once per prompt set; nothing is written until every basis is computed. transformers is
imported inside the function only, as for the probe.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ...adapters.peft import LoraModule, ModuleKind
from ...checkpoints.description import SourceDescription
from ...checkpoints.hub.refs import parse_hub_ref
from ...errors import CsuloraError, UsageError
from ...events import Events
from ...probe.prompts import PromptSet
from ...probe.sources import load_prompts
from ...subspace.estimate import SubspaceBasis
from ...subspace.folder import add_basis_to_folder, check_subspace_folder, prepare_subspace_folder, record_job
from ...subspace.keys import Target
from ...subspace.params import INPUT_SIDE, OUTPUT_SIDE
from ...subspace.targets import writes_residual_stream
from ..plumbing.adapter_source import open_adapter
from ..plumbing.basis_source import hub_client, resolve_device
from ..plumbing.model_folder import open_model_folder
from ..plumbing.overlap import local_folder, refuse_output_over_inputs
from ..types.requests import EstimateRequest
from ..types.results import EstimateResult, ModuleSubspace
from .probe import check_adapter_fits

INPUT_DIRECTIONS = "generalized_eigenvectors"
REFUSAL_DIRECTION = "refusal_direction"


def estimate_activation_subspace(request: EstimateRequest, events: Events) -> EstimateResult:
    """The activation subspace of the modules `request.adapter` targets, into the folder `request.out`."""
    refuse_output_over_inputs(
        request.out,
        "out",
        [
            ("the aligned model folder", local_folder(request.aligned)),
            ("the adapter folder", local_folder(request.adapter)),
        ],
    )
    harmful = load_prompts(request.activations, request.prompt_field, request.hub.token)
    contrast = (
        None if request.contrast is None else load_prompts(request.contrast, request.prompt_field, request.hub.token)
    )
    hub = hub_client(request.cache_dir, request.hub, events)
    opened = open_adapter(request.adapter, hub)
    modules = _linear_modules(opened.adapter.modules, opened.label)
    if request.refusal_direction and not any(writes_residual_stream(module.name) for module in modules):
        raise UsageError(
            "the adapter updates no module that writes to the residual stream (o_proj, down_proj, ...), so "
            "{refusal_direction} would write a folder with no direction; use the input directions (without it)",
            parameter="refusal_direction",
            where=opened.label,
        )
    model_folder = open_model_folder(request.aligned, hub)
    sources = {"base": _recorded_base(request.base), "aligned": model_folder.source.to_dict()}
    record = _estimation_record(request, harmful, contrast)
    check_subspace_folder(request.out, sources, record, request.overwrite, request.storage)
    device = resolve_device(request.device)

    # transformers only now: the request, the prompts, the adapter and the folder are checked without it.
    from ...inference.runner import LoadedModel
    from ...inference.threads import settled_cpu_threads

    model = LoadedModel.from_folder(model_folder.folder, device, request.dtype)
    with settled_cpu_threads(device, getattr(model.model.config, "hidden_size", None)):
        check_adapter_fits(opened, model.linear_shapes(), str(request.aligned))
        if request.refusal_direction:
            bases = _refusal_bases(model, modules, harmful, contrast, request.batch_size)
        else:
            bases = _input_bases(
                model, modules, harmful, contrast, request.estimation.max_rank, request.ridge, request.batch_size
            )

    targets = [Target(f"{module.name}.weight", False) for module in modules]
    prepare_subspace_folder(request.out, sources, record, request.overwrite, request.storage)
    record_job(request.out, targets, finished=False)
    fingerprint = _fingerprint(sources, record)
    results = []
    for target, basis in zip(targets, bases, strict=True):
        basis_record = {"module": target.base_key, "transposed": False, "fingerprint": fingerprint}
        add_basis_to_folder(request.out, basis_record, basis, request.storage)
        results.append(ModuleSubspace.of_basis(target, basis, request.energy, from_cache=False))
    record_job(request.out, targets, finished=True)
    return EstimateResult(
        location=str(request.out), modules=results, sources=sources, estimation=record, energy=request.energy
    )


def _input_bases(model, modules, harmful: PromptSet, contrast: PromptSet | None, rank, ridge, batch_size):
    """Per module, the top generalized eigenvectors of its inputs' second moments on the two prompt sets."""
    from ...inference.activations import InputCovariance
    from ...subspace.activation import contrast_directions

    names = [module.name for module in modules]
    on_harmful = _captured(model, names, InputCovariance(), harmful, batch_size)
    on_contrast = None if contrast is None else _captured(model, names, InputCovariance(), contrast, batch_size)
    return [
        contrast_directions(
            on_harmful.covariance(name), None if on_contrast is None else on_contrast.covariance(name), rank, ridge
        )
        for name in names
    ]


def _refusal_bases(model, modules, harmful: PromptSet, contrast: PromptSet, batch_size) -> list[SubspaceBasis]:
    """Per module writing into the residual stream, the unit refusal direction of its block (the mean residual
    stream after the block at each prompt's last token, harmful minus contrast); no column for the others."""
    from ...inference.activations import LastTokenMeanOutput
    from ...subspace.activation import empty_basis, refusal_direction

    blocks = model.block_names()
    block_of = {module.name: _block_of(module.name, blocks) for module in modules}
    read = sorted({block for name, block in block_of.items() if block is not None and writes_residual_stream(name)})
    on_harmful = _captured(model, read, LastTokenMeanOutput(), harmful, batch_size)
    on_contrast = _captured(model, read, LastTokenMeanOutput(), contrast, batch_size)
    bases = []
    for module in modules:
        block = block_of[module.name]
        if block is None or not writes_residual_stream(module.name):
            bases.append(empty_basis(module.out_features))
            continue
        bases.append(refusal_direction(on_harmful.mean(block), on_contrast.mean(block)))
    return bases


def _captured(model, names: list[str], sink, prompts: PromptSet, batch_size: int):
    with model.capture(names, sink):
        model.forward(prompts.prompts, batch_size=batch_size)
    return sink


def _block_of(module_name: str, blocks: list[str]) -> str | None:
    fitting = [block for block in blocks if module_name.startswith(block + ".")]
    return fitting[0] if fitting else None


def _linear_modules(modules: list[LoraModule], label: str) -> list[LoraModule]:
    """Activations are read at linear layers' inputs: an embedding or Conv1D module is refused, named."""
    for module in modules:
        if module.kind is not ModuleKind.LINEAR:
            raise UsageError(
                f"updates {module.name}, a {module.kind.value} layer; an activation subspace is read at linear "
                "layers only",
                parameter="activations",
                where=label,
            )
    if not modules:
        raise CsuloraError("the adapter updates no module", where=label)
    return list(modules)


def _recorded_base(base: str) -> dict:
    """The base model as typed: recorded (the pair the folder belongs to), never read."""
    path = Path(base).expanduser()
    if path.exists():
        return SourceDescription.local(path).to_dict()
    ref = parse_hub_ref(base)
    if ref is None:
        raise CsuloraError("neither a folder nor a Hub repo id", where=base)
    return {"kind": "hub", "repo": ref.repo_id, "revision": ref.revision, "commit": None, "endpoint": None}


def _estimation_record(request: EstimateRequest, harmful: PromptSet, contrast: PromptSet | None) -> dict:
    """What subspace.json says of how the folder was estimated: the prompt sources pinned (a local file's
    sha256, a Hub file's commit) and counted, the model run, and the math's parameters."""
    record = {
        "kind": "activations",
        "side": OUTPUT_SIDE if request.refusal_direction else INPUT_SIDE,
        "target": REFUSAL_DIRECTION if request.refusal_direction else INPUT_DIRECTIONS,
        "max_rank": 1 if request.refusal_direction else request.estimation.max_rank,
        "harmful_prompts": harmful.to_dict(),
        "contrast_prompts": None if contrast is None else contrast.to_dict(),
        "prompt_field": request.prompt_field,
        "dtype": request.dtype,
    }
    if request.refusal_direction:
        record["positions"] = "last prompt token, residual stream after the block"
    else:
        record["positions"] = "every prompt token, the module's input"
        # Without a contrast, Sigma_contrast = I: no ridge is added.
        record["ridge"] = None if contrast is None else request.ridge
    return record


def _fingerprint(sources: dict, record: dict) -> str:
    return hashlib.sha256(json.dumps({"sources": sources, "estimation": record}, sort_keys=True).encode()).hexdigest()
