"""Writing a corrected adapter: a byte-for-byte copy of the input with new data for some B tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import copy_new_file, reporting_full_disk, write_new_file
from ..checkpoints.header import DTYPE_NAMES, raw_bytes, read_header
from .peft import PICKLE_FILE, SAFETENSORS_FILE, LoraAdapter


class AdapterWriter:
    """Fills an (empty, temporary) output folder with a copy of the adapter, then patches B tensors.

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

    def replace(self, key: str, tensor: torch.Tensor) -> None:
        entry = self.entries[key]
        if tuple(tensor.shape) != entry.shape or DTYPE_NAMES.get(tensor.dtype) != entry.dtype:
            raise AssertionError(f"replacement for {key} changed shape or dtype")
        stored = raw_bytes(tensor)
        # Same length in place, yet a copy-on-write or compressing filesystem may still need new blocks.
        with reporting_full_disk(self.target, len(stored)), open(self.target, "r+b") as handle:
            handle.seek(entry.start)
            handle.write(stored)
