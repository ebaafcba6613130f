"""Writing a corrected adapter: a byte-for-byte copy of the input with new data for some B tensors."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..checkpoints.header import DTYPE_NAMES, raw_bytes, read_header
from .peft import PICKLE_FILE, SAFETENSORS_FILE, LoraAdapter


class AdapterWriter:
    """Fills an (empty, temporary) output folder with a copy of the adapter, then patches B tensors.

    A safetensors input is copied byte for byte and only the data ranges of replaced tensors are
    rewritten (same shape, same dtype, so same length): header, order, metadata and every other tensor
    stay exactly as they were. A pickle input is written as `adapter_model.safetensors` first.
    """

    def __init__(self, adapter: LoraAdapter, destination: Path):
        self.adapter = adapter
        self.folder = destination
        for path in adapter.folder.iterdir():
            if path.is_file() and path.name not in (SAFETENSORS_FILE, PICKLE_FILE, "README.md"):
                shutil.copyfile(path, destination / path.name)
        self.target = destination / SAFETENSORS_FILE
        if adapter.pickled is None:
            shutil.copyfile(adapter.weights_path, self.target)
        else:
            from safetensors.torch import save_file

            tensors = {key: adapter.pickled[key].contiguous().clone() for key in adapter.keys}
            save_file(tensors, str(self.target), metadata={"format": "pt"})
        self.entries = read_header(self.target).entries

    def replace(self, key: str, tensor: torch.Tensor) -> None:
        entry = self.entries[key]
        if tuple(tensor.shape) != entry.shape or DTYPE_NAMES.get(tensor.dtype) != entry.dtype:
            raise AssertionError(f"replacement for {key} changed shape or dtype")
        with open(self.target, "r+b") as handle:
            handle.seek(entry.start)
            handle.write(raw_bytes(tensor))
