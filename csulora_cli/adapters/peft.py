"""Reading PEFT LoRA adapter folders: config checks, scales as PEFT resolves them, factors on demand.

Knows the PEFT file layout and its conventions, nothing of the math or of base checkpoints (which base
weight a module updates, and in which orientation, is `subspace/targets.py`).
"""

from __future__ import annotations

import json
import math
import pickle
import re
import warnings
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import torch
from safetensors import safe_open

from ..checkpoints.header import DTYPE_NAMES, DTYPES, read_header
from ..errors import (
    CsuloraError,
    FormatError,
    MissingTensorError,
    ShapeMismatchError,
    UnsupportedAdapterError,
)
from .links import refuse_links
from .repo_files import CONFIG_FILE, PICKLE_FILE, SAFETENSORS_FILE, adapter_repo_files

# PEFT saves keys relative to the PeftModel, whose LoRA model wraps the base model as `model`.
PEFT_PREFIX = "base_model.model."
# PEFT's saved key suffixes: Linear / Conv1D layers keep `.weight`, Embedding layers store bare params.
# PEFT strips the adapter's name when it saves; tools that save a model's state dict keep it
# (`lora_A.default.weight`), so a name there is read too.
_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
    r"(?:\.(?!weight$)(?P<adapter_name>[^.]+))?(?P<suffix>\.weight)?$"
)


class ModuleKind(StrEnum):
    LINEAR = "linear"  # weight (out, in): already output-space form
    CONV1D = "conv1d"  # GPT-2 style, fan_in_fan_out: weight (in, out)
    EMBEDDING = "embedding"  # weight (num_embeddings, dim): output space is dim


@dataclass(frozen=True)
class Scale:
    rank: int
    alpha: float
    value: float


@dataclass(frozen=True)
class LoraModule:
    """One adapted weight, described from the file header: B (m, r), A (r, n) in output-space form.

    The factors themselves are read on demand (`LoraAdapter.factors`), so a batch of hundreds of
    adapters holds only one module's factors at a time.
    """

    name: str  # PEFT's module name, e.g. "model.layers.0.self_attn.q_proj"
    kind: ModuleKind
    a_key: str
    b_key: str
    out_features: int
    in_features: int
    dtype: torch.dtype  # of lora_B, kept when it is rewritten
    scale: Scale


@dataclass(frozen=True)
class LoraAdapter:
    folder: Path
    config: dict
    weights_path: Path
    keys: tuple[str, ...]  # every tensor of the weights file, in file order
    modules: tuple[LoraModule, ...]
    # An adapter_model.bin can only be read whole; its tensors are kept here. None for safetensors.
    pickled: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    # The adapter's own files (names in `folder`), what is read, copied and hashed (`repo_files.py` says
    # which: the config, the weights, small text files beside them), from a local folder as from the Hub.
    files: tuple[str, ...] = ()
    # What the folder holds besides (training state, other weights, subfolders; folders end in "/"): not
    # read, not copied into an output.
    left_out: tuple[str, ...] = ()
    # Subfolders that hold an adapter of their own (PEFT saves a second adapter so): not corrected.
    other_adapters: tuple[str, ...] = ()
    # Where the config's target_modules / layers_to_transform disagree with the tensors the file holds.
    config_mismatches: tuple[str, ...] = ()

    @property
    def passthrough_keys(self) -> list[str]:
        """Tensors that are not LoRA factors (modules_to_save, biases): copied untouched."""
        factors = {key for module in self.modules for key in (module.a_key, module.b_key)}
        return [key for key in self.keys if key not in factors]

    def factors(self, module: LoraModule) -> tuple[torch.Tensor, torch.Tensor]:
        """(A: (r, n), B: (m, r)) in the stored dtype; refuses NaN/Inf naming the tensor."""
        if self.pickled is not None:
            lora_a, lora_b = self.pickled[module.a_key], self.pickled[module.b_key]
        else:
            with safe_open(str(self.weights_path), framework="pt") as handle:
                lora_a, lora_b = handle.get_tensor(module.a_key), handle.get_tensor(module.b_key)
        for key, tensor in ((module.a_key, lora_a), (module.b_key, lora_b)):
            if not torch.isfinite(tensor).all():
                raise FormatError("holds NaN or Inf values", where=f"{self.weights_path} [{key}]")
        return lora_a, lora_b


def read_adapter(folder: Path, files: tuple[str, ...] | None = None, left_out: tuple[str, ...] = ()) -> LoraAdapter:
    """Read the config and the weights file's header; factors are read later, module by module.

    `files` names the adapter's own files when the folder may hold others (an HF cache snapshot), and
    `left_out` what its repo holds besides; by default the folder's own entries are sorted into both
    (`repo_files.adapter_repo_files`).
    """
    if not folder.is_dir():
        raise CsuloraError("adapter folder does not exist", where=str(folder))
    refuse_links(folder)  # before anything in it is read: the config and weights are entries too
    config = read_config(folder / CONFIG_FILE)
    weights_path, shapes, pickled = _read_weights(folder)
    modules = _modules(config, shapes, weights_path)
    if not modules:
        raise MissingTensorError("no lora_A / lora_B tensors found", where=str(weights_path))
    other_adapters = ()
    if files is None:
        entries = sorted(folder.iterdir())
        files = adapter_repo_files({entry.name: entry.stat().st_size for entry in entries if entry.is_file()})
        left_out = tuple(entry.name + ("/" if entry.is_dir() else "") for entry in entries if entry.name not in files)
        other_adapters = tuple(entry.name for entry in entries if entry.is_dir() and (entry / CONFIG_FILE).is_file())
    return LoraAdapter(
        folder,
        config,
        weights_path,
        tuple(shapes),
        tuple(modules),
        pickled,
        tuple(files),
        left_out,
        other_adapters,
        config_mismatches(config, [module.name for module in modules]),
    )


def config_mismatches(config: dict, module_names: list[str]) -> tuple[str, ...]:
    """Modules whose tensors the config's `target_modules` or `layers_to_transform` would not have made:
    PEFT's own matching (a regex matched whole, or a list of name suffixes; the block index after the
    layers pattern), so a config copied from another run shows here."""
    targets = config.get("target_modules")
    layers = config.get("layers_to_transform")
    layers = {layers} if isinstance(layers, int) else set(layers) if isinstance(layers, list) else None
    found = []
    for name in module_names:
        if isinstance(targets, str) and targets != "all-linear":
            try:
                matched = re.fullmatch(targets, name) is not None
            except re.error:
                matched = True  # an invalid pattern is PEFT's to refuse, not a mismatch
        elif isinstance(targets, list):
            matched = any(name == target or name.endswith("." + target) for target in targets)
        else:
            matched = True
        if not matched:
            found.append(f"{name} is not among target_modules {targets!r}")
            continue
        index = re.search(r"\.(?:layers|h|blocks|layer|block)\.(\d+)\.", name)
        if layers is not None and index is not None and int(index[1]) not in layers:
            found.append(f"{name} is in block {index[1]}, not in layers_to_transform {sorted(layers)}")
    return tuple(found)


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
    for name in ("r", "lora_alpha"):
        value = config.get(name, 8)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise FormatError(f"{name} must be a positive number, got {value!r}", where=f"{path} [{name}]")
    # A rank counts columns: 0.5 would be read as rank 0 and divide the scale by it.
    if config.get("r", 8) != int(config.get("r", 8)):
        raise FormatError(f"r must be a whole number, got {config['r']!r}", where=f"{path} [r]")
    for name in ("rank_pattern", "alpha_pattern"):
        patterns = config.get(name) or {}
        if not isinstance(patterns, dict):
            raise FormatError(f"{name} must be a JSON object", where=f"{path} [{name}]")
        for pattern, value in patterns.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise FormatError(f"{pattern!r} must map to a positive number", where=f"{path} [{name}]")
            if name == "rank_pattern" and value != int(value):
                raise FormatError(f"{pattern!r} must map to a whole number", where=f"{path} [{name}]")
            try:
                re.compile(pattern)
            except re.error as error:
                raise FormatError(f"{pattern!r} is not a valid pattern ({error})", where=f"{path} [{name}]") from None
    return config


def _read_weights(folder: Path) -> tuple[Path, dict[str, tuple[tuple[int, ...], str]], dict | None]:
    """(weights file, {key: (shape, dtype name)} in file order, pickled tensors or None)."""
    safetensors_path = folder / SAFETENSORS_FILE
    if safetensors_path.is_file():
        header = read_header(safetensors_path)
        return safetensors_path, {key: (e.shape, e.dtype) for key, e in header.entries.items()}, None
    pickle_path = folder / PICKLE_FILE
    if pickle_path.is_file():
        tensors = _load_pickle_safely(pickle_path)
        shapes = {key: (tuple(t.shape), DTYPE_NAMES.get(t.dtype, str(t.dtype))) for key, t in tensors.items()}
        return pickle_path, shapes, tensors
    raise MissingTensorError(f"no {SAFETENSORS_FILE} or {PICKLE_FILE}", where=str(folder))


def _load_pickle_safely(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only=True: a pickle can run arbitrary code on load; this loader only rebuilds tensors.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        culprit = re.search(r"GLOBAL (\S+)", str(error))
        what = f"references {culprit[1]}" if culprit else "holds more than plain tensors"
        raise FormatError(
            f"refused to load: the pickle {what}, and unpickling it could run code; only tensors are loaded "
            "(weights_only=True)",
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


def _modules(config: dict, shapes: dict[str, tuple[tuple[int, ...], str]], path: Path) -> list[LoraModule]:
    factors: dict[str, dict[str, str]] = {}
    adapter_names = set()
    for key in shapes:
        if "lora_magnitude_vector" in key:
            raise UnsupportedAdapterError("DoRA magnitude vectors found; DoRA adapters are refused", where=key)
        match = _LORA_KEY.match(key)
        if match:
            factors.setdefault(match["module"], {})[match["kind"]] = key
            adapter_names.add(match["adapter_name"])
    if len(adapter_names) > 1:
        named = ", ".join(sorted(str(name) for name in adapter_names))
        raise UnsupportedAdapterError(
            f"holds the factors of several adapters ({named}); save each adapter to a folder of its own",
            where=str(path),
        )
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
        scale = resolve_scale(config, name)
        _check_factor_shapes(shapes, scale, path, a_key, b_key)
        (rows, _), dtype_name = shapes[b_key]
        modules.append(LoraModule(name, kind, a_key, b_key, rows, shapes[a_key][0][1], DTYPES[dtype_name], scale))
    return modules


def _check_factor_shapes(
    shapes: dict[str, tuple[tuple[int, ...], str]], scale: Scale, path: Path, a_key: str, b_key: str
) -> None:
    for key in (a_key, b_key):
        shape, dtype_name = shapes[key]
        if len(shape) != 2:
            raise ShapeMismatchError(f"expected a 2-D tensor, got shape {list(shape)}", where=f"{path} [{key}]")
        if dtype_name not in DTYPES:
            raise FormatError(f"dtype {dtype_name} is not a float type", where=f"{path} [{key}]")
    a_shape, b_shape = shapes[a_key][0], shapes[b_key][0]
    if a_shape[0] != b_shape[1]:
        raise ShapeMismatchError(
            f"rank disagrees with {a_key}: {list(b_shape)} vs {list(a_shape)}", where=f"{path} [{b_key}]"
        )
    if a_shape[0] != scale.rank:
        raise ShapeMismatchError(
            f"rank {a_shape[0]} but the config resolves r = {scale.rank} for this module",
            where=f"{path} [{a_key}]",
        )
