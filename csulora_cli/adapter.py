"""PEFT LoRA adapter folders: reading them, resolving scales and base keys, writing corrected copies.

Knows the PEFT file layout and its conventions, nothing of the math: a corrected adapter is the
original with new bytes for some `lora_B` / `lora_embedding_B` tensors.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch

from .errors import (
    CsuloraError,
    FormatError,
    MissingTensorError,
    ShapeMismatchError,
    UnsupportedAdapterError,
)
from .safetensors_header import DTYPE_NAMES, read_header

CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
# PEFT saves keys relative to the PeftModel, whose LoRA model wraps the base model as `model`.
PEFT_PREFIX = "base_model.model."
# PEFT's saved key suffixes: Linear / Conv1D layers keep `.weight`, Embedding layers store bare params.
_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?P<suffix>\.weight)?$"
)


class ModuleKind(StrEnum):
    LINEAR = "linear"  # weight (out, in): already output-space form
    CONV1D = "conv1d"  # GPT-2 style, fan_in_fan_out: weight (in, out)
    EMBEDDING = "embedding"  # weight (num_embeddings, dim): output space is dim

    @property
    def stored_transposed(self) -> bool:
        """Whether the base weight must be transposed to reach output-space form (METHOD.md section 1)."""
        return self is not ModuleKind.LINEAR


@dataclass(frozen=True)
class Scale:
    rank: int
    alpha: float
    value: float


@dataclass(frozen=True)
class LoraModule:
    """One adapted weight: B (m, r), A (r, n) in output-space form, in the adapter's stored dtype."""

    name: str  # PEFT's module name, e.g. "model.layers.0.self_attn.q_proj"
    kind: ModuleKind
    a_key: str
    b_key: str
    lora_a: torch.Tensor
    lora_b: torch.Tensor
    scale: Scale

    @property
    def out_features(self) -> int:
        return self.lora_b.shape[0]

    @property
    def in_features(self) -> int:
        return self.lora_a.shape[1]


@dataclass(frozen=True)
class LoraAdapter:
    folder: Path
    config: dict
    weights_path: Path
    tensors: dict[str, torch.Tensor]  # every tensor of the file, in file order
    modules: tuple[LoraModule, ...]

    @property
    def passthrough_keys(self) -> list[str]:
        """Tensors that are not LoRA factors (modules_to_save, biases): copied untouched."""
        factors = {key for module in self.modules for key in (module.a_key, module.b_key)}
        return [key for key in self.tensors if key not in factors]


def read_adapter(folder: Path) -> LoraAdapter:
    if not folder.is_dir():
        raise CsuloraError("adapter folder does not exist", where=str(folder))
    config = read_config(folder / CONFIG_FILE)
    weights_path, tensors = _read_weights(folder)
    modules = _modules(config, tensors, weights_path)
    if not modules:
        raise MissingTensorError("no lora_A / lora_B tensors found", where=str(weights_path))
    return LoraAdapter(folder, config, weights_path, tensors, tuple(modules))


def read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingTensorError("missing: a PEFT adapter folder needs adapter_config.json", where=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"not valid JSON ({error})", where=str(path)) from None
    if not isinstance(config, dict):
        raise FormatError("not a JSON object", where=str(path))
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise UnsupportedAdapterError(f"peft_type {peft_type} is not LoRA", where=str(path))
    if config.get("use_dora"):
        raise UnsupportedAdapterError(
            "DoRA adapters are refused: a DoRA update is rescaled by the norm of the merged weight "
            "(base + B A), so a corrected B would not give the closest safe update",
            where=f"{path} [use_dora]",
        )
    for field in ("r", "lora_alpha"):
        value = config.get(field, 8)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise FormatError(f"{field} must be a positive number, got {value!r}", where=f"{path} [{field}]")
    for field in ("rank_pattern", "alpha_pattern"):
        if not isinstance(config.get(field) or {}, dict):
            raise FormatError(f"{field} must be a JSON object", where=f"{path} [{field}]")
    return config


def _read_weights(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    safetensors_path = folder / SAFETENSORS_FILE
    if safetensors_path.is_file():
        header = read_header(safetensors_path)
        from safetensors.torch import load_file

        loaded = load_file(str(safetensors_path))
        return safetensors_path, {key: loaded[key] for key in header.entries}
    pickle_path = folder / PICKLE_FILE
    if pickle_path.is_file():
        return pickle_path, _load_pickle_safely(pickle_path)
    raise MissingTensorError(f"no {SAFETENSORS_FILE} or {PICKLE_FILE}", where=str(folder))


def _load_pickle_safely(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only=True: a pickle can run arbitrary code on load; this loader only rebuilds tensors.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).splitlines()[0] if str(error) else "unsupported content"
        raise FormatError(
            f"refused to load: the pickle holds more than plain tensors, and loading it could run code "
            f"({reason[:160]})",
            where=str(path),
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise FormatError(
            f"not a readable torch checkpoint ({str(error).splitlines()[0][:160]})", where=str(path)
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise FormatError("expected a mapping of tensor names to tensors", where=str(path))
    return state


def pattern_key(patterns: dict, module_name: str) -> str | None:
    """PEFT's `get_pattern_key`: the first pattern that matches the end of the module name."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module_name):
            return key
    return None


def resolve_scale(config: dict, module_name: str) -> Scale:
    """r and alpha as PEFT resolves them for one module, and s = alpha / r (or alpha / sqrt(r))."""
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    rank_key = pattern_key(rank_pattern, module_name)
    alpha_key = pattern_key(alpha_pattern, module_name)
    rank = rank_pattern[rank_key] if rank_key is not None else config.get("r", 8)
    alpha = alpha_pattern[alpha_key] if alpha_key is not None else config.get("lora_alpha", 8)
    value = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return Scale(rank=int(rank), alpha=float(alpha), value=float(value))


def _modules(config: dict, tensors: dict[str, torch.Tensor], path: Path) -> list[LoraModule]:
    factors: dict[str, dict[str, str]] = {}
    for key in tensors:
        if "lora_magnitude_vector" in key:
            raise UnsupportedAdapterError("DoRA magnitude vectors found; DoRA adapters are refused", where=key)
        match = _LORA_KEY.match(key)
        if match:
            factors.setdefault(match["module"], {})[match["kind"]] = key
    modules = []
    for prefixed_name, parts in factors.items():
        embedding = "lora_embedding_A" in parts or "lora_embedding_B" in parts
        a_key = parts.get("lora_embedding_A" if embedding else "lora_A")
        b_key = parts.get("lora_embedding_B" if embedding else "lora_B")
        if a_key is None or b_key is None:
            present = a_key or b_key
            raise MissingTensorError("has no matching lora_A/lora_B partner", where=f"{path} [{present}]")
        name = prefixed_name.removeprefix(PEFT_PREFIX)
        if embedding:
            kind = ModuleKind.EMBEDDING
        else:
            kind = ModuleKind.CONV1D if config.get("fan_in_fan_out") else ModuleKind.LINEAR
        lora_a, lora_b = tensors[a_key], tensors[b_key]
        scale = resolve_scale(config, name)
        _check_factor_shapes(lora_a, lora_b, scale, path, a_key, b_key)
        modules.append(LoraModule(name, kind, a_key, b_key, lora_a, lora_b, scale))
    return modules


def _check_factor_shapes(
    lora_a: torch.Tensor, lora_b: torch.Tensor, scale: Scale, path: Path, a_key: str, b_key: str
) -> None:
    for key, tensor in ((a_key, lora_a), (b_key, lora_b)):
        if tensor.dim() != 2:
            raise ShapeMismatchError(f"expected a 2-D tensor, got shape {tuple(tensor.shape)}", where=f"{path} [{key}]")
        if tensor.dtype not in DTYPE_NAMES:
            raise FormatError(f"dtype {tensor.dtype} is not a float type", where=f"{path} [{key}]")
    for key, tensor in ((a_key, lora_a), (b_key, lora_b)):
        if not torch.isfinite(tensor).all():
            raise FormatError("holds NaN or Inf values", where=f"{path} [{key}]")
    if lora_a.shape[0] != lora_b.shape[1]:
        raise ShapeMismatchError(
            f"rank disagrees with {a_key}: {tuple(lora_b.shape)} vs {tuple(lora_a.shape)}",
            where=f"{path} [{b_key}]",
        )
    if lora_a.shape[0] != scale.rank:
        raise ShapeMismatchError(
            f"rank {lora_a.shape[0]} but the config resolves r = {scale.rank} for this module",
            where=f"{path} [{a_key}]",
        )


def base_weight_key(module: LoraModule, available: set[str] | list[str]) -> str:
    """The base checkpoint key of a module's weight, as PEFT names modules.

    PEFT names modules from the model class (LlamaForCausalLM: `model.layers.0...`), while checkpoints
    saved from the bare backbone drop that first component (`gpt2`: `h.0.attn.c_attn.weight`). Try the
    exact name, then without the first component, then a unique key ending in the name.
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
    raise MissingTensorError(f"the base model has no weight for adapter module {module.name} (looked for {exact})")


def output_space_shape(module: LoraModule, stored_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(stored_shape) != 2:
        raise ShapeMismatchError(f"base weight for {module.name} is not 2-D: {stored_shape}")
    rows, cols = stored_shape
    return (cols, rows) if module.kind.stored_transposed else (rows, cols)


def check_module_matches_base(module: LoraModule, stored_shape: tuple[int, ...], base_key: str) -> None:
    expected = (module.out_features, module.in_features)
    actual = output_space_shape(module, stored_shape)
    if actual != expected:
        orientation = " (transposed, as a Conv1D/Embedding weight)" if module.kind.stored_transposed else ""
        raise ShapeMismatchError(
            f"adapter module {module.name} updates a {expected[0]}x{expected[1]} weight but the base "
            f"{base_key} is {stored_shape[0]}x{stored_shape[1]}{orientation}",
            where=base_key,
        )


def copy_adapter_files(adapter: LoraAdapter, destination: Path, corrected_b: dict[str, torch.Tensor]) -> None:
    """Write the adapter into `destination` (an existing empty folder) with some B tensors replaced.

    A safetensors input is copied byte for byte and only the data ranges of the replaced tensors are
    rewritten (same shape, same dtype, so same length): header, order, metadata and every other tensor
    stay exactly as they were. A pickle input becomes `adapter_model.safetensors`.
    """
    for path in adapter.folder.iterdir():
        if path.is_file() and path.name not in (SAFETENSORS_FILE, PICKLE_FILE, "README.md"):
            shutil.copyfile(path, destination / path.name)
    target = destination / SAFETENSORS_FILE
    if adapter.weights_path.name == SAFETENSORS_FILE:
        shutil.copyfile(adapter.weights_path, target)
        header = read_header(target)
        with open(target, "r+b") as handle:
            for key, tensor in corrected_b.items():
                entry = header.entries[key]
                handle.seek(entry.start)
                handle.write(_raw_bytes(tensor, adapter.tensors[key]))
    else:
        from safetensors.torch import save_file

        tensors = {key: corrected_b.get(key, value).contiguous().clone() for key, value in adapter.tensors.items()}
        save_file(tensors, str(target), metadata={"format": "pt"})


def _raw_bytes(tensor: torch.Tensor, original: torch.Tensor) -> bytes:
    if tensor.shape != original.shape or tensor.dtype != original.dtype:
        raise AssertionError(f"corrected tensor changed shape/dtype: {tensor.shape} {tensor.dtype}")
    return tensor.contiguous().view(torch.uint8).numpy().tobytes()
