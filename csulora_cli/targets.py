"""Which base weights a job works on, and in which orientation.

From an adapter (each module mapped to the base key PEFT would use, oriented by the stored shape), or
by name (`--modules`, `--layers`) for estimation without an adapter.
"""

from __future__ import annotations

import re

from .adapter import LoraAdapter, LoraModule, base_weight_key, guess_transposed, is_conv1d_name, stored_transposed
from .bases import BasisProvider, EstimatingProvider, Target
from .errors import CsuloraError, MissingTensorError, ShapeMismatchError, UsageError
from .sources import TensorSource

# Checkpoint keys whose weights are stored (in, out) or (num_embeddings, dim), when no adapter says so.
_EMBEDDING_KEY = re.compile(r"(embed|\bwte\b|\bwpe\b)")


def guess_transposed_by_name(key: str, model_type: str | None) -> bool:
    if _EMBEDDING_KEY.search(key):
        return True
    return model_type == "gpt2" and is_conv1d_name(key.removesuffix(".weight"))


def model_type(source: TensorSource) -> str | None:
    kind = source.model_config().get("model_type")
    return kind if isinstance(kind, str) else None


_LAYER_INDEX = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


def layer_of(key: str) -> int | None:
    """The transformer block a weight belongs to (`model.layers.7.mlp...` -> 7); None outside blocks."""
    match = _LAYER_INDEX.search("." + key)
    return int(match[1]) if match else None


def parse_layers(text: str) -> set[int]:
    """'0-15' or '3' or '0-3,8-11' -> the set of layer indices."""
    layers: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise UsageError(f"expected ranges such as 0-15 or 0-3,8-11, got {text!r}", where="--layers")
        layers.update(range(int(match[1]), int(match[2] or match[1]) + 1))
    return layers


def targets_by_name(provider: EstimatingProvider, pattern: str | None, model_type: str | None) -> list[Target]:
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as error:
        raise UsageError(f"not a valid regular expression ({error})", where="--modules") from None
    aligned_keys = set(provider.aligned.keys())
    targets = []
    for key in provider.base.keys():
        if regex is not None and not regex.search(key):
            continue
        if key not in aligned_keys or len(provider.base.entry(key).shape) != 2:
            continue
        if regex is None and provider.base.entry(key).dtype not in ("F32", "F16", "BF16", "F64"):
            continue
        targets.append(Target(key, guess_transposed_by_name(key, model_type)))
    return targets


def targets_for_adapter(adapter: LoraAdapter, provider: BasisProvider) -> dict[str, Target]:
    """Map each adapter module to the base weight it updates and its orientation, checking shapes."""
    keys = provider.keys()
    targets = {}
    for module in adapter.modules:
        try:
            key = base_weight_key(module, keys)
        except CsuloraError as error:
            raise type(error)(error.message, where=str(adapter.weights_path)) from None
        stored = provider.stored_shape(key)
        if stored is not None:
            transposed = stored_transposed(module, stored, key)
        else:
            transposed = _orientation_in_folder(module, key, provider.orientations(key))
        targets[module.name] = Target(key, transposed)
    return targets


def _orientation_in_folder(module: LoraModule, key: str, orientations: dict[bool, int]) -> bool:
    """Pick the stored basis whose output dimension matches the module (a subspace folder has no shapes)."""
    fitting = [transposed for transposed, out_features in orientations.items() if out_features == module.out_features]
    if len(fitting) == 1:
        return fitting[0]
    if len(fitting) == 2:
        return guess_transposed(module)
    if orientations:
        found = ", ".join(str(out) for out in orientations.values())
        raise ShapeMismatchError(
            f"adapter module {module.name} has {module.out_features} outputs but the subspace basis has {found}",
            where=key,
        )
    raise MissingTensorError(
        f"no basis for {key} in this subspace folder",
        hint="estimate it with estimate-subspace --adapter ADAPTER --out DIR",
    )
