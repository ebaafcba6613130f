"""Which base weights a job works on, and in which orientation: every orientation rule lives here.

From an adapter (each module mapped to the base key PEFT would use, oriented by the stored shape, as
PEFT decides per layer), or by name (a `modules` pattern, `layers`) for estimation without an adapter.
"""

from __future__ import annotations

import re
from typing import Protocol

from ..adapters.peft import LoraAdapter, LoraModule, ModuleKind
from ..checkpoints.protocol import TensorSource
from ..errors import CsuloraError, MissingTensorError, ShapeMismatchError, UsageError
from .keys import Target
from .params import INPUT_SIDE, OUTPUT_SIDE


class WeightLayout(Protocol):
    """What mapping an adapter needs to know of where bases come from (every basis provider has it)."""

    side: str  # the space the bases live in: which of a module's dimensions a basis's rows must match

    def keys(self) -> set[str]: ...

    def stored_shape(self, base_key: str) -> tuple[int, ...] | None: ...

    def orientations(self, base_key: str) -> dict[bool, int]: ...

    def missing_weight(self, module_name: str, key: str) -> CsuloraError:
        """The error for an adapter module whose weight (or basis) this provider does not hold."""
        ...


# Weights GPT-2 style models keep in `Conv1D` layers, stored (in, out).
_CONV1D_NAME = re.compile(r"(^|\.)(c_attn|c_proj|c_fc|q_attn)$")
# Where a tied output head's weight lives in the checkpoint.
_INPUT_EMBEDDING_KEY = re.compile(r"(^|\.)(embed_tokens|wte|word_embeddings|embed_in)\.weight$")


def base_weight_key(module: LoraModule, available: set[str] | list[str]) -> str:
    """The base checkpoint key of a module's weight, as PEFT names modules.

    PEFT names modules from the model class (LlamaForCausalLM: `model.layers.0...`), while checkpoints
    saved from the bare backbone drop that first component (`gpt2`: `h.0.attn.c_attn.weight`). Try the
    exact name, then without the first component, then a unique key ending in the name. An output head
    with no weight of its own is tied to the input embedding, which the checkpoint stores once.
    """
    available = set(available)
    exact = f"{module.name}.weight"
    candidates = [exact]
    if "." in module.name:
        candidates.append(module.name.split(".", 1)[1] + ".weight")
    for candidate in candidates:
        if candidate in available:
            return candidate
    suffix_matches = [key for key in available if key.endswith("." + exact)]
    if len(suffix_matches) == 1:
        return suffix_matches[0]
    if module.name.rsplit(".", 1)[-1] in ("lm_head", "embed_out"):
        tied = [key for key in available if _INPUT_EMBEDDING_KEY.search(key)]
        if len(tied) == 1:
            return tied[0]
    raise MissingTensorError(f"the base model has no weight for adapter module {module.name} (looked for {exact})")


def stored_transposed(module: LoraModule, stored_shape: tuple[int, ...], base_key: str) -> bool:
    """Whether the base weight is stored transposed to output-space form (docs/method.md section 1).

    Decided per module from the stored shape, as PEFT decides per layer from the layer class: the
    config's `fan_in_fan_out` is one flag for the whole adapter and PEFT rewrites it when a Conv1D model
    also targets a Linear head. A square weight fits both ways; then GPT-2's Conv1D names, or the flag.
    """
    if len(stored_shape) != 2:
        raise ShapeMismatchError(f"base weight for {module.name} is not 2-D: {list(stored_shape)}", where=base_key)
    out_features, in_features = module.out_features, module.in_features
    as_stored = tuple(stored_shape) == (out_features, in_features)
    transposed = tuple(stored_shape) == (in_features, out_features)
    if module.kind is ModuleKind.EMBEDDING:
        as_stored = False  # Embedding (num_embeddings, dim): output space is dim, always transposed
    if as_stored and transposed:
        return is_conv1d_name(module.name) or module.kind is ModuleKind.CONV1D
    if as_stored or transposed:
        return transposed
    raise ShapeMismatchError(
        f"adapter module {module.name} updates a {out_features}x{in_features} weight (out x in) but the base "
        f"{base_key} is stored {stored_shape[0]}x{stored_shape[1]}",
        where=base_key,
    )


def resolved_kind(module: LoraModule, transposed: bool) -> ModuleKind:
    if module.kind is ModuleKind.EMBEDDING:
        return ModuleKind.EMBEDDING
    return ModuleKind.CONV1D if transposed else ModuleKind.LINEAR


def is_conv1d_name(module_name: str) -> bool:
    """GPT-2 style `Conv1D` layer names (c_attn, c_proj, c_fc, q_attn)."""
    return bool(_CONV1D_NAME.search(module_name))


def guess_transposed(module: LoraModule) -> bool:
    """Orientation without a base to look at (a subspace folder with both): names, then the flag."""
    return module.kind is not ModuleKind.LINEAR or is_conv1d_name(module.name)


# Checkpoint keys whose weights are stored (in, out) or (num_embeddings, dim), when no adapter says so.
_EMBEDDING_KEY = re.compile(r"(embed|\bwte\b|\bwpe\b)")


def guess_transposed_by_name(key: str, model_type: str | None) -> bool:
    if _EMBEDDING_KEY.search(key):
        return True
    return model_type == "gpt2" and is_conv1d_name(key.removesuffix(".weight"))


def model_type(source: TensorSource) -> str | None:
    kind = source.model_config().get("model_type")
    return kind if isinstance(kind, str) else None


def targets_by_name(
    base: TensorSource, aligned: TensorSource, pattern: str | None, model_type: str | None
) -> list[Target]:
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as error:
        raise UsageError(f"not a valid regular expression ({error})", parameter="modules") from None
    aligned_keys = set(aligned.keys())
    targets = []
    for key in base.keys():
        if regex is not None and not regex.search(key):
            continue
        if key not in aligned_keys or len(base.entry(key).shape) != 2:
            continue
        if regex is None and base.entry(key).dtype not in ("F32", "F16", "BF16", "F64"):
            continue
        targets.append(Target(key, guess_transposed_by_name(key, model_type)))
    return targets


def targets_for_adapter(adapter: LoraAdapter, provider: WeightLayout) -> dict[str, Target]:
    """Map each adapter module to the base weight it updates and its orientation, checking shapes."""
    keys = provider.keys()
    targets = {}
    for module in adapter.modules:
        try:
            key = base_weight_key(module, keys)
        except MissingTensorError:
            raise provider.missing_weight(module.name, f"{module.name}.weight") from None
        except CsuloraError as error:
            raise type(error)(error.message, where=str(adapter.weights_path)) from None
        stored = provider.stored_shape(key)
        if stored is not None:
            transposed = stored_transposed(module, stored, key)
        else:
            transposed = _orientation_in_folder(module, key, provider.orientations(key), provider.side)
        targets[module.name] = Target(key, transposed)
    return targets


def _orientation_in_folder(
    module: LoraModule, key: str, orientations: dict[bool, int], side: str = OUTPUT_SIDE
) -> bool:
    """Pick the stored basis whose rows match the module's outputs (an input-side folder: its inputs), as a
    subspace folder has no shapes."""
    features, what = (module.in_features, "inputs") if side == INPUT_SIDE else (module.out_features, "outputs")
    fitting = [transposed for transposed, rows in orientations.items() if rows == features]
    if len(fitting) == 1:
        return fitting[0]
    if len(fitting) == 2:
        return guess_transposed(module)
    if orientations:
        found = ", ".join(str(rows) for rows in orientations.values())
        raise ShapeMismatchError(
            f"adapter module {module.name} has {features} {what} but the {side}-side subspace basis has {found}",
            where=key,
        )
    raise MissingTensorError(
        f"no basis for {key} in this subspace folder",
        hint="estimate it with estimate-subspace {adapter} ADAPTER {out} DIR",
    )


# Linear layers that write into the residual stream (a block's attention output and its MLP's output), in the
# Llama, Mistral and Qwen families (o_proj, down_proj), OPT and BART (out_proj, fc2) and GPT-NeoX (dense_4h_to_h).
_RESIDUAL_WRITER_NAME = re.compile(r"(^|\.)(o_proj|down_proj|out_proj|fc2|dense_4h_to_h)$")


def writes_residual_stream(module_name: str) -> bool:
    """Whether the module's output is added to the residual stream (a refusal direction applies to it)."""
    return bool(_RESIDUAL_WRITER_NAME.search(module_name))
