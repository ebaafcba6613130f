"""Where model tensors come from: the `TensorSource` protocol and local safetensors folders.

Tensors are read one at a time, only those asked for, grouped by shard; nothing here knows about
subspaces or adapters. Hub repositories implement the same protocol in `hub.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open

from .errors import CsuloraError, FormatError, MissingTensorError
from .hub_client import HubClient, parse_hub_ref
from .safetensors_header import INDEX_FILE, SINGLE_FILE, SafetensorsHeader, TensorEntry, read_header


class TensorSource(Protocol):
    """A model checkpoint that can be read tensor by tensor."""

    name: str  # what the user passed, for messages and reports

    def keys(self) -> list[str]: ...

    def entry(self, key: str) -> TensorEntry: ...

    def plan_reads(self, keys: Iterable[str]) -> None:
        """The keys a job is about to read, so a remote source can choose how to fetch them."""
        ...

    def read_many(self, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (key, tensor) for each key, in an order that reads each file once."""
        ...

    def read_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of a tensor, in its stored dtype, in memory of their own (no file mapping)."""
        ...

    def prefetch(self, key: str) -> None:
        """`key` is read soon: start moving its bytes closer (page cache, or memory for remote sources)."""
        ...

    def content_id(self, key: str) -> str:
        """A string that changes whenever the bytes of `key` may have changed (a content hash)."""
        ...

    def describe(self) -> dict:
        """What the report records about this source."""
        ...

    def model_config(self) -> dict:
        """The checkpoint's `config.json` ({} when absent or unreadable): its `model_type` names layouts."""
        ...


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
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise FormatError(f"not a safetensors index ({error})", where=str(index_path)) from None
        if not isinstance(weight_map, dict):
            raise FormatError("weight_map is not a JSON object", where=str(index_path))
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
        pass  # every byte is already on disk

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

    def describe(self) -> dict:
        return {"kind": "local", "path": str(self.folder.resolve())}

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


def file_sha256(path: Path, memo_dir: Path | None) -> str:
    """SHA-256 of a file, remembered by (path, size, mtime, inode) so unchanged shards hash once."""
    stat = path.stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    memo_path = None
    if memo_dir is not None:
        memo_path = memo_dir / (hashlib.sha256(identity.encode()).hexdigest() + ".json")
        try:
            memo = json.loads(memo_path.read_text())
            if memo.get("identity") == identity and isinstance(memo.get("sha256"), str):
                return memo["sha256"]
        except (OSError, ValueError):
            pass
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if memo_path is not None:
        try:
            memo_dir.mkdir(parents=True, exist_ok=True)
            temporary = memo_path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"identity": identity, "sha256": digest}))
            os.replace(temporary, memo_path)
        except OSError:
            pass  # the memo only saves time; a read-only cache must not fail the run
    return digest


def open_source(spec: str, *, digest_memo_dir: Path | None = None, hub: HubClient | None = None) -> TensorSource:
    """A model source from what the user typed: a local folder if one exists, else a Hub repo id."""
    path = Path(spec).expanduser()
    if path.exists():
        return LocalSource(path, digest_memo_dir=digest_memo_dir)
    ref = parse_hub_ref(spec)
    if ref is None or hub is None:
        raise CsuloraError(
            "no such local folder, and not a Hugging Face repo id (org/name or org/name@revision)", where=spec
        )
    from .hub import HubSource  # hub.py builds on this module's helpers

    return HubSource(ref, hub)
