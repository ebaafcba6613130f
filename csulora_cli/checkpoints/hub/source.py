"""A Hugging Face Hub repo as a `TensorSource`: only the tensors a job needs are fetched.

The layout comes first (the index, or the single file's header), then each needed shard's header by
byte range, so a missing tensor or a shape mismatch fails before any large download. Tensor data then
comes from the standard HF cache when some tool already downloaded the shard, else from a whole-shard
download into that cache, or from byte ranges of just the needed tensors (`--fetch auto` picks per
shard by the share of its bytes the job needs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ...atomic import write_best_effort
from ...errors import MissingTensorError
from ...events import Advance
from ..description import SourceDescription, TextFile
from ..header import SafetensorsHeader, TensorEntry, header_length_of, parse_header, read_header
from ..layout import INDEX_FILE, SINGLE_FILE, read_weight_map
from ..local import read_json_object, read_rows_from_file
from ..recorded import read_text_file
from .client import HubClient
from .errors import HubError
from .refs import HubRef, endpoint_label
from .snapshots import HubSnapshot

# Under --fetch auto a shard is downloaded whole when the job needs at least this share of its bytes:
# the whole file is then barely more traffic, and it lands checksummed in the cache other tools share.
WHOLE_SHARD_SHARE = 0.5
CONFIG_FILE = "config.json"


class HubSource:
    """One commit of a Hub model repo, read tensor by tensor."""

    def __init__(self, ref: HubRef, client: HubClient):
        self.client = client
        self.snapshot: HubSnapshot = client.snapshot(ref)
        self.name = self.snapshot.where()
        self._headers: dict[str, SafetensorsHeader] = {}
        self._sizes: dict[str, int] = {}  # sizes the listing left out, learned from the Hub's answers
        self._local: dict[str, Path] = {}
        self._whole_shard: dict[str, bool] = {}
        self._advance_ranges: Advance | None = None
        self._prefetched: dict[str, torch.Tensor] = {}
        self._text_files: dict[str, TextFile | None] = {}
        self._file_of = self._read_layout()

    # Layout and headers (small reads only)
    def _read_layout(self) -> dict[str, str]:
        files = self.snapshot.files
        if INDEX_FILE in files:
            return self._layout_from_index(self.client.download(self.snapshot, INDEX_FILE))
        if SINGLE_FILE in files:
            return {key: SINGLE_FILE for key in self.header(SINGLE_FILE).entries}
        raise MissingTensorError(
            f"no {SINGLE_FILE} or {INDEX_FILE} at this commit (only safetensors checkpoints are read)",
            where=self.name,
        )

    def _layout_from_index(self, index_path: Path) -> dict[str, str]:
        where = self.snapshot.where(INDEX_FILE)
        weight_map = read_weight_map(index_path, where)
        for key, shard in weight_map.items():
            if not isinstance(shard, str) or shard not in self.snapshot.files:
                raise MissingTensorError(f"shard {shard!r} for tensor {key} is not in the repo", where=where)
        return dict(weight_map)

    def header(self, filename: str) -> SafetensorsHeader:
        if filename not in self._headers:
            self._headers[filename] = self._load_header(filename)
        return self._headers[filename]

    def _load_header(self, filename: str) -> SafetensorsHeader:
        local = self.client.cached_file(self.snapshot, filename)
        if local is not None:
            self._local[filename] = local
            self._sizes[filename] = local.stat().st_size
            return read_header(local)
        where = self.snapshot.where(filename)
        memo = self._memo(filename, "header")
        # Not huggingface_hub's parse_safetensors_file_metadata: its offsets are relative to the data section
        # and it drops the header length (needed for absolute offsets) and the raw bytes (memoised here); it
        # checks no offset against the file size and reads by plain GET (no retries, no 206 check). Two
        # range reads give the length and the bytes, with huggingface_hub's retries and csulora's checks.
        try:
            header_bytes = memo.read_bytes()
        except OSError:
            prefix, reported_size = self.client.read_range_and_size(self.snapshot, filename, 0, 8)
            size = self.file_size(filename, reported_size)
            length = header_length_of(prefix.numpy().tobytes(), size, where)
            header_bytes = self.client.read_range(self.snapshot, filename, 8, 8 + length).numpy().tobytes()
            write_best_effort(memo, header_bytes)
        return parse_header(header_bytes, self.file_size(filename), Path(where))

    def file_size(self, filename: str, reported: int | None = None) -> int:
        """The listing's size of a file; when the listing leaves it out (some mirrors do), the size an answer
        reported (`Content-Range`), an earlier run's record, or the Hub's HEAD answer, in that order."""
        listed = self.snapshot.files[filename].size
        if listed is not None:
            return listed
        if filename not in self._sizes:
            memo = self._memo(filename, "size")
            if reported is None:
                try:
                    reported = int(memo.read_text())
                except (OSError, ValueError):
                    reported = self.client.remote_size(self.snapshot, filename)
            write_best_effort(memo, str(reported))
            self._sizes[filename] = reported
        return self._sizes[filename]

    def _memo(self, filename: str, kind: str) -> Path:
        """Headers and learned sizes are kept by content hash, so a later run (or an offline one) needs no request."""
        content = self.snapshot.files[filename].content_hash.replace(":", "-").replace("/", "_")
        return self.client.metadata_dir / "headers" / f"{content}.{kind}"

    # TensorSource
    def keys(self) -> list[str]:
        return list(self._file_of)

    def entry(self, key: str) -> TensorEntry:
        filename = self._file_of.get(key)
        if filename is None:
            raise MissingTensorError(f"tensor {key} not found", where=self.name)
        entry = self.header(filename).entries.get(key)
        if entry is None:
            raise MissingTensorError(
                f"tensor {key} is in the index but not in its shard", where=self.snapshot.where(filename)
            )
        return entry

    def plan_reads(self, keys: Iterable[str]) -> None:
        """Decide per shard, before reading, between a whole download and byte ranges."""
        needed: dict[str, int] = {}
        for key in keys:
            entry = self.entry(key)
            filename = self._file_of[key]
            needed[filename] = needed.get(filename, 0) + entry.end - entry.start
        for filename, needed_bytes in needed.items():
            self._whole_shard[filename] = self._prefers_whole(filename, needed_bytes)
        by_range = sum(
            size for name, size in needed.items() if not self._whole_shard[name] and not self._is_cached(name)
        )
        if by_range:
            # One progress line for all of this repo's ranges; shards show their own download bars.
            self._advance_ranges = self.client.events.start(
                f"fetching tensors from {self.snapshot.ref.repo_id}", by_range, in_bytes=True
            )

    def _is_cached(self, filename: str) -> bool:
        return filename in self._local or self.client.cached_file(self.snapshot, filename) is not None

    def _prefers_whole(self, filename: str, needed_bytes: int) -> bool:
        mode = self.client.options.fetch
        if mode != "auto":
            return mode == "shards"
        return needed_bytes >= WHOLE_SHARD_SHARE * self.file_size(filename)

    def read_many(self, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        keys = list(keys)
        for key in keys:
            self.entry(key)  # fail before reading anything when a key is missing
        for key in keys:
            yield key, self.read(key)

    def read(self, key: str) -> torch.Tensor:
        entry = self.entry(key)
        return self._fetch_rows(key, 0, entry.shape[0] if entry.shape else 1).reshape(entry.shape)

    def read_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        prefetched = self._prefetched.get(key)
        if prefetched is None:
            return self._fetch_rows(key, start, stop)
        if stop == self.entry(key).shape[0]:
            del self._prefetched[key]  # the last rows: the whole tensor is no longer needed
        return prefetched[start:stop]

    def _fetch_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows from the shard on disk when there is one, else by byte range."""
        entry = self.entry(key)
        filename = self._file_of[key]
        local = self._local_file(filename)
        if local is not None:
            return read_rows_from_file(local, entry, start, stop)
        row_bytes = (entry.end - entry.start) // max(entry.shape[0] if entry.shape else 1, 1)
        raw_rows = self.client.read_range(
            self.snapshot,
            filename,
            entry.start + start * row_bytes,
            entry.start + stop * row_bytes,
            self._advance_ranges,
        )
        return raw_rows.view(entry.readable_dtype()).reshape(stop - start, *entry.shape[1:])

    def prefetch(self, key: str) -> None:
        """A shard chosen whole is downloaded now; a tensor fetched by range is held in memory until read."""
        filename = self._file_of[key]
        if self._local_file(filename) is None:
            self._prefetched[key] = self.read(key)

    def _local_file(self, filename: str) -> Path | None:
        """The shard on disk (already cached, or downloaded now when whole shards were chosen); else None."""
        if filename not in self._local:
            cached = self.client.cached_file(self.snapshot, filename)
            if cached is not None:
                self._local[filename] = cached
            elif self._whole_shard.get(filename, self.client.options.fetch == "shards"):
                self._local[filename] = self.client.download(self.snapshot, filename)
        return self._local.get(filename)

    def content_id(self, key: str) -> str:
        # The file's content hash from the commit's listing: a moved branch that changed the file changes
        # it, and the same bytes under another commit (or in a local copy) share cached bases.
        self.entry(key)
        return f"{self.snapshot.files[self._file_of[key]].content_hash}:{key}"

    def model_config(self) -> dict:
        if CONFIG_FILE not in self.snapshot.files:
            return {}
        return read_json_object(self.client.download(self.snapshot, CONFIG_FILE))

    def describe(self) -> SourceDescription:
        ref = self.snapshot.ref
        return SourceDescription.hub(ref.repo_id, ref.revision, self.snapshot.commit, endpoint_label())

    def text_file(self, name: str) -> TextFile | None:
        if name not in self._text_files:
            self._text_files[name] = self._fetch_text_file(name)
        return self._text_files[name]

    def _fetch_text_file(self, name: str) -> TextFile | None:
        """The file at the resolved commit, through the HF cache (a request only the first time on a machine).
        One that cannot be fetched (offline, never downloaded) counts as absent: what reads these files (the
        base/aligned order check) works with what it has rather than failing the run."""
        if name not in self.snapshot.files:
            return None
        try:
            found = read_text_file(self.client.download(self.snapshot, name))
        except HubError:
            return None
        return None if found is None else TextFile(self.snapshot.where(name), found.text)
