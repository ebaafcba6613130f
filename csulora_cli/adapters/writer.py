"""Writing a corrected adapter: a byte-for-byte copy of the input with new data for some factors.

Most methods keep every factor's shape, and the copy is patched in place. A method that adds rank (readd,
merge-safety) changes shapes: its modules are held until `finish`, which writes the weights file anew with
every module at one rank (zero-padded) and each module's LoRA scale folded into its B, and sets the
config's `r` = `lora_alpha` = that rank. One rank for the whole adapter and no rank/alpha patterns is the
form every loader reads (PEFT, and servers such as vLLM that take a single `r` per adapter).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import copy_new_file, reporting_full_disk, write_new_file
from ..checkpoints.header import DTYPE_NAMES, raw_bytes, read_header
from .peft import PEFT_PREFIX, PICKLE_FILE, SAFETENSORS_FILE, LoraAdapter, LoraModule
from .repo_files import CONFIG_FILE


class AdapterWriter:
    """Fills an (empty, temporary) output folder with a copy of the adapter, then patches factors.

    A safetensors input is copied byte for byte and only the data ranges of replaced tensors are
    rewritten (same shape, same dtype, so same length): header, order, metadata and every other tensor
    stay exactly as they were. A pickle input is written as `adapter_model.safetensors` first.
    `read_adapter` has refused any link among the adapter's files, so nothing here reads through one.
    """

    def __init__(self, adapter: LoraAdapter, destination: Path):
        self.adapter = adapter
        self.folder = destination
        for name in adapter.files:
            if name not in (SAFETENSORS_FILE, PICKLE_FILE, "README.md"):
                copy_new_file(adapter.folder / name, destination / name)
        self.target = destination / SAFETENSORS_FILE
        if adapter.pickled is None:
            copy_new_file(adapter.weights_path, self.target)
        else:
            from safetensors.torch import save

            tensors = {key: adapter.pickled[key].contiguous().clone() for key in adapter.keys}
            # Serialized in memory and written here, so a full disk is an OSError naming this file
            # (safetensors' own file writer reports it as a generic SafetensorError).
            write_new_file(self.target, save(tensors, metadata={"format": "pt"}))
        self.entries = read_header(self.target).entries
        # Modules whose rank changes: (B', A') in the stored dtypes, written by `finish`.
        self.resized: dict[str, tuple[LoraModule, torch.Tensor, torch.Tensor]] = {}
        # Modules the adapter did not have (readd --readd-everywhere): (B, A) at scale 1, by PEFT module name.
        self.added: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def replace(self, key: str, tensor: torch.Tensor) -> None:
        entry = self.entries[key]
        if tuple(tensor.shape) != entry.shape or DTYPE_NAMES.get(tensor.dtype) != entry.dtype:
            raise AssertionError(f"replacement for {key} changed shape or dtype")
        stored = raw_bytes(tensor)
        # Same length in place, yet a copy-on-write or compressing filesystem may still need new blocks.
        with reporting_full_disk(self.target, len(stored)), open(self.target, "r+b") as handle:
            handle.seek(entry.start)
            handle.write(stored)

    def write_module(self, module: LoraModule, new_b: torch.Tensor, new_a: torch.Tensor | None) -> None:
        """A module's corrected factors: patched in place at its rank, held for `finish` at another."""
        if new_b.shape[1] == module.scale.rank:
            self.replace(module.b_key, new_b)
            if new_a is not None:
                self.replace(module.a_key, new_a)
            return
        self.resized[module.name] = (module, new_b, new_a)

    def add_module(self, name: str, lora_b: torch.Tensor, lora_a: torch.Tensor) -> None:
        """A module the adapter did not target, its update s B A at scale 1; written by `finish`."""
        self.added[name] = (lora_b, lora_a)

    def finish(self) -> None:
        """Write the weights file anew when a module's rank changed or a module was added; nothing to do
        otherwise. Added modules take the adapter's dtype, and the config then names every module."""
        if not self.resized and not self.added:
            return
        from safetensors import safe_open
        from safetensors.torch import save

        with safe_open(str(self.target), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        rank = max(
            [new_b.shape[1] for _, new_b, _ in self.resized.values()]
            + [lora_b.shape[1] for lora_b, _ in self.added.values()]
            + [module.scale.rank for module in self.adapter.modules]
        )
        for module in self.adapter.modules:
            if module.name in self.resized:
                _, lora_b, lora_a = self.resized[module.name]
            else:
                lora_b, lora_a = tensors[module.b_key], tensors[module.a_key]
            tensors[module.b_key], tensors[module.a_key] = _at_rank(lora_b, lora_a, rank, module.scale.value)
            # PEFT scales lora_B's bias (lora_bias=True) with the module too: it takes the fold as well.
            bias_key = module.b_key.removesuffix(".weight") + ".bias"
            if bias_key in tensors:
                bias = tensors[bias_key]
                tensors[bias_key] = (bias.to(torch.float32) * module.scale.value).to(bias.dtype)
        dtype = self.adapter.modules[0].dtype if self.adapter.modules else torch.float32
        for name, (lora_b, lora_a) in self.added.items():
            b_key, a_key = f"{PEFT_PREFIX}{name}.lora_B.weight", f"{PEFT_PREFIX}{name}.lora_A.weight"
            tensors[b_key], tensors[a_key] = _at_rank(lora_b.to(dtype), lora_a.to(dtype), rank, 1.0)
        self.target.unlink()
        write_new_file(self.target, save(tensors, metadata=metadata))
        config = dict(self.adapter.config)
        config.update(r=rank, lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={})
        if self.added:
            # Every module by its full name: PEFT matches a name exactly, whatever the layers or patterns were.
            names = [module.name for module in self.adapter.modules] + list(self.added)
            config.update(
                target_modules=sorted(names), layers_to_transform=None, layers_pattern=None, exclude_modules=None
            )
        (self.folder / CONFIG_FILE).unlink(missing_ok=True)
        write_new_file(self.folder / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())


def _at_rank(lora_b: torch.Tensor, lora_a: torch.Tensor, rank: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(s B, A) zero-padded to `rank`: the same update under the scale alpha / r = 1 of the rewritten config."""
    extra = rank - lora_b.shape[1]
    scaled_b = (lora_b.to(torch.float32) * scale).to(lora_b.dtype)
    padded_b = torch.cat([scaled_b, lora_b.new_zeros(lora_b.shape[0], extra)], dim=1)
    padded_a = torch.cat([lora_a, lora_a.new_zeros(extra, lora_a.shape[1])], dim=0)
    return padded_b.contiguous(), padded_a.contiguous()
