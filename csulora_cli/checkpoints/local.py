"""A local checkpoint folder as a `TensorSource`: `model.safetensors`, or shards with an index.

Tensors are read one at a time, only those asked for, grouped by shard, with plain reads; shards are
hashed for their content ids by `digests.py`. The helpers for reading a local file (rows of a tensor, a
JSON object) serve Hub files already on disk too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import CsuloraError, FormatError, MissingTensorError
from .description import SourceDescription, TextFile
from .digests import file_sha256, hash_ahead, keep_only
from .header import SafetensorsHeader, TensorEntry, read_header
from .layout import INDEX_FILE, SINGLE_FILE, read_weight_map
from .recorded import read_text_file


class LocalSource:
    """A local folder with `model.safetensors`, or shards listed in `model.safetensors.index.json`."""

    def __init__(self, folder: Path, *, digest_memo_dir: Path | None = None):
        self.folder = folder
        self.name = str(folder)
        self._digest_memo_dir = digest_memo_dir
        self._shard_of = self._read_layout()
        self._headers: dict[Path, SafetensorsHeader] = {}
        self._digests: dict[Path, str] = {}

    def _read_layout(self) -> dict[str, Path]:
        if not self.folder.is_dir():
            raise CsuloraError("model folder does not exist", where=str(self.folder))
        index_path = self.folder / INDEX_FILE
        if index_path.is_file():
            return self._layout_from_index(index_path)
        single = self.folder / SINGLE_FILE
        if single.is_file():
            return {key: single for key in read_header(single).entries}
        raise MissingTensorError(f"no {SINGLE_FILE} or {INDEX_FILE} in this folder", where=str(self.folder))

    def _layout_from_index(self, index_path: Path) -> dict[str, Path]:
        weight_map = read_weight_map(index_path, str(index_path))
        root = self.folder.resolve()
        layout: dict[str, Path] = {}
        for key, shard_name in weight_map.items():
            shard = (self.folder / str(shard_name)).resolve()
            # A shard name such as "../../secret" must not read outside the model folder.
            if not isinstance(shard_name, str) or shard.parent != root:
                raise FormatError(
                    f"shard {shard_name!r} for tensor {key} is outside the model folder",
                    where=str(index_path),
                )
            layout[key] = shard
        return layout

    def keys(self) -> list[str]:
        return list(self._shard_of)

    def header(self, shard: Path) -> SafetensorsHeader:
        if shard not in self._headers:
            if not shard.is_file():
                raise MissingTensorError("shard listed in the index is missing", where=str(shard))
            self._headers[shard] = read_header(shard)
        return self._headers[shard]

    def entry(self, key: str) -> TensorEntry:
        shard = self._shard_of.get(key)
        if shard is None:
            raise MissingTensorError(f"tensor {key} not found", where=self.name)
        entry = self.header(shard).entries.get(key)
        if entry is None:
            raise MissingTensorError(f"tensor {key} is in the index but not in its shard", where=str(shard))
        return entry

    def plan_reads(self, keys: Iterable[str]) -> None:
        # Every byte is already on disk. The shards these keys need are hashed from now on, in the order
        # the keys come (content_id waits for a digest under way rather than hashing twice); shards
        # started earlier that no key needs are not hashed after all.
        needed = list(dict.fromkeys(self._shard_of[key] for key in keys if key in self._shard_of))
        keep_only(needed, set(self._shard_of.values()))
        hash_ahead(needed, self._digest_memo_dir)

    def read_many(self, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        by_shard: dict[Path, list[str]] = {}
        for key in keys:
            self.entry(key)  # fail before reading anything when a key is missing
            by_shard.setdefault(self._shard_of[key], []).append(key)
        for shard, shard_keys in by_shard.items():
            with safe_open(str(shard), framework="pt") as handle:
                for key in shard_keys:
                    self.entry(key).readable_dtype()  # refuses integer / fp8 tensors by name
                    yield key, handle.get_tensor(key)

    def read(self, key: str) -> torch.Tensor:
        return next(iter(self.read_many([key])))[1]

    def read_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        # Plain reads rather than safetensors' mmap: mapped pages count in the process's resident set
        # until the file is closed, so a mapped 8192 x 3072 weight would sit in RSS beside its float32 copy.
        entry = self.entry(key)
        return read_rows_from_file(self._shard_of[key], entry, start, stop)

    def prefetch(self, key: str) -> None:
        entry = self.entry(key)
        try:
            with open(self._shard_of[key], "rb") as handle:
                os.posix_fadvise(handle.fileno(), entry.start, entry.end - entry.start, os.POSIX_FADV_WILLNEED)
        except (OSError, AttributeError):
            pass  # only a hint (AttributeError: a platform without posix_fadvise)

    def content_id(self, key: str) -> str:
        self.entry(key)
        shard = self._shard_of[key]
        if shard not in self._digests:
            self._digests[shard] = file_sha256(shard, self._digest_memo_dir)
        return f"sha256:{self._digests[shard]}:{key}"

    def describe(self) -> SourceDescription:
        return SourceDescription.local(self.folder)

    def text_file(self, name: str) -> TextFile | None:
        return read_text_file(self.folder.resolve() / name)

    def model_config(self) -> dict:
        return read_json_object(self.folder / "config.json")


def read_rows_from_file(path: Path, entry: TensorEntry, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of the tensor `entry` of a local safetensors file, read with one plain read."""
    dtype = entry.readable_dtype()
    row_shape = entry.shape[1:]
    row_bytes = math.prod(row_shape) * dtype.itemsize
    buffer = torch.empty((stop - start) * row_bytes, dtype=torch.uint8)
    view = memoryview(buffer.numpy())
    filled = 0
    try:
        with open(path, "rb", buffering=0) as handle:
            handle.seek(entry.start + start * row_bytes)
            while filled < len(view):
                count = handle.readinto(view[filled:])
                if not count:
                    raise FormatError(f"tensor {entry.name} ends early (truncated file?)", where=str(path))
                filled += count
    except OSError as error:
        raise FormatError(f"cannot read tensor {entry.name}: {error.strerror or error}", where=str(path)) from None
    return buffer.view(dtype).reshape(stop - start, *row_shape)


def read_json_object(path: Path) -> dict:
    """A JSON object from a file, or {} when it is absent or not an object (config files are optional)."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
