"""Talking to the Hugging Face Hub: resolve a revision, list a commit's files, download, read byte ranges.

Everything goes through `huggingface_hub` (its endpoint, token, offline switch, cache layout and HTTP
client), so `HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME` and `HF_HUB_OFFLINE` mean what they mean to every other
tool. Its exceptions become one-line `HubError`s here; no message ever carries the token.
Nothing here knows about safetensors or subspaces.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlsplit

import torch
from huggingface_hub import HfApi, constants, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status, httpx
from huggingface_hub.utils import tqdm as hf_tqdm

from . import __version__
from .errors import CsuloraError, UsageError
from .events import Advance, Events

COMMIT = re.compile(r"[0-9a-f]{40}")
FETCH_MODES = ("auto", "shards", "ranges")
# Transient failures while streaming a byte range are retried this many times, resuming where they stopped.
RANGE_RETRIES = 3
CHUNK_BYTES = 1 << 20
OFFLINE_MISS = "not in the local Hugging Face cache and HF_HUB_OFFLINE is set"


class HubError(CsuloraError):
    """The Hub (or the local Hugging Face cache standing in for it) cannot give what the run needs."""

    transient = False  # set on failures worth retrying: timeouts, dropped connections, 5xx


@dataclass(frozen=True)
class HubOptions:
    """How to reach the Hub. `token` None means huggingface_hub's own lookup (HF_TOKEN, then `hf auth login`)."""

    fetch: str = "auto"
    token: str | None = field(default=None, repr=False)  # never printed, logged or reported


@dataclass(frozen=True)
class HubRef:
    """`org/name` or `org/name@revision` as the user typed it."""

    repo_id: str
    revision: str  # branch, tag or 40-hex commit; "main" when none was given

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class HubFile:
    name: str
    size: int
    content_hash: str  # "sha256:<hex>" (LFS), "git:<oid>" (plain git blob) or "commit:<sha>/<name>"


@dataclass(frozen=True)
class HubSnapshot:
    """One resolved commit of a repo and the files it holds."""

    ref: HubRef
    commit: str
    files: dict[str, HubFile]

    def where(self, filename: str | None = None) -> str:
        base = f"{self.ref.repo_id}@{self.commit[:12]}"
        return base if filename is None else f"{base}/{filename}"


def parse_hub_ref(spec: str) -> HubRef | None:
    """A repo id with an optional `@revision`, or None when `spec` cannot be one."""
    repo_id, _, revision = spec.partition("@")
    parts = repo_id.split("/")
    if len(parts) > 2 or not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", part or "-") for part in parts):
        return None
    if "--" in repo_id or ".." in repo_id or repo_id.endswith("."):
        return None  # huggingface_hub's repo-id rules
    if "@" in spec and not revision:
        return None
    return HubRef(repo_id, revision or constants.DEFAULT_REVISION)


def endpoint_label() -> str:
    """The Hub endpoint for reports and messages, without any credentials a URL might carry."""
    parts = urlsplit(constants.ENDPOINT)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class HubClient:
    """One run's view of the Hub: resolved snapshots, downloads into the HF cache, byte ranges."""

    def __init__(self, options: HubOptions, metadata_dir: Path, events: Events):
        if options.fetch not in FETCH_MODES:
            raise UsageError(
                f"unknown fetch mode {options.fetch!r}; choose one of {', '.join(FETCH_MODES)}", where="--fetch"
            )
        self.options = options
        self.metadata_dir = metadata_dir  # csulora's own records: resolved refs, file lists, headers
        self.events = events

    @property
    def offline(self) -> bool:
        return constants.is_offline_mode()

    # Snapshots
    def snapshot(self, ref: HubRef) -> HubSnapshot:
        """Resolve `ref` to a commit and list its files: once per run, from the Hub or, offline, from caches."""
        if COMMIT.fullmatch(ref.revision):
            recorded = self._recorded_snapshot(ref, ref.revision)
            if recorded is not None:
                return recorded  # a commit never changes: no request at all
        if self.offline:
            return self._offline_snapshot(ref)
        try:
            with hub_errors(ref.label):
                info = HfApi(token=self.options.token).model_info(
                    ref.repo_id, revision=ref.revision, files_metadata=True, timeout=constants.HF_HUB_ETAG_TIMEOUT
                )
        except HubError as error:
            if not error.transient:
                raise
            # Like huggingface_hub's downloads: when the Hub cannot be reached, what was resolved before still serves.
            try:
                snapshot = self._offline_snapshot(ref)
            except HubError:
                raise error from None
            self.events.warn(f"{error.one_line()}; using commit {snapshot.commit[:12]} resolved on an earlier run")
            return snapshot
        if not info.sha or not COMMIT.fullmatch(info.sha):
            raise HubError("the Hub did not say which commit this revision is", where=ref.label)
        files = {
            sibling.rfilename: HubFile(sibling.rfilename, _size(sibling), _content_hash(sibling, info.sha))
            for sibling in info.siblings or []
        }
        snapshot = HubSnapshot(ref, info.sha, files)
        self._record(snapshot)
        return snapshot

    def _record_path(self, repo_id: str, commit: str) -> Path:
        return self.metadata_dir / "snapshots" / repo_folder_name(repo_id=repo_id, repo_type="model") / f"{commit}.json"

    def _ref_path(self, ref: HubRef) -> Path:
        folder = repo_folder_name(repo_id=ref.repo_id, repo_type="model")
        return self.metadata_dir / "refs" / folder / quote(ref.revision, safe="")

    def _record(self, snapshot: HubSnapshot) -> None:
        files = {name: [f.size, f.content_hash] for name, f in snapshot.files.items()}
        write_quietly(self._record_path(snapshot.ref.repo_id, snapshot.commit), json.dumps({"files": files}))
        write_quietly(self._ref_path(snapshot.ref), snapshot.commit)

    def _recorded_snapshot(self, ref: HubRef, commit: str) -> HubSnapshot | None:
        try:
            files = json.loads(self._record_path(ref.repo_id, commit).read_text())["files"]
            return HubSnapshot(ref, commit, {name: HubFile(name, int(s), str(h)) for name, (s, h) in files.items()})
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _offline_snapshot(self, ref: HubRef) -> HubSnapshot:
        commit = ref.revision if COMMIT.fullmatch(ref.revision) else self._offline_commit(ref)
        recorded = self._recorded_snapshot(ref, commit)
        if recorded is not None:
            return recorded
        listed = _files_in_hf_cache(ref.repo_id, commit)
        if listed is None:
            raise HubError(
                f"commit {commit[:12]} is not in the local caches and HF_HUB_OFFLINE is set", where=ref.label
            )
        return HubSnapshot(ref, commit, listed)

    def _offline_commit(self, ref: HubRef) -> str:
        """A branch or tag resolved on an earlier online run (by csulora or any huggingface_hub tool)."""
        folder = repo_folder_name(repo_id=ref.repo_id, repo_type="model")
        for path in (Path(constants.HF_HUB_CACHE) / folder / "refs" / ref.revision, self._ref_path(ref)):
            try:
                commit = path.read_text().strip()
            except OSError:
                continue
            if COMMIT.fullmatch(commit):
                return commit
        raise HubError(
            "revision was never resolved on this machine and HF_HUB_OFFLINE is set",
            where=ref.label,
            hint="run once online, or pin a cached commit with @<sha>",
        )

    # Files
    def cached_file(self, snapshot: HubSnapshot, filename: str) -> Path | None:
        """The file in the standard HF cache at this commit, when some tool has downloaded it."""
        found = try_to_load_from_cache(snapshot.ref.repo_id, filename, revision=snapshot.commit)
        return Path(found) if isinstance(found, str) else None

    def download(self, snapshot: HubSnapshot, filename: str) -> Path:
        """A whole file through huggingface_hub (resumable, size-checked, into the HF cache)."""
        # At a commit, huggingface_hub answers from its cache without a request (offline too); offline
        # and missing, it raises what hub_errors turns into the offline message.
        with hub_errors(snapshot.where(filename)):
            path = hf_hub_download(
                snapshot.ref.repo_id,
                filename,
                revision=snapshot.commit,
                token=self.options.token,
                library_name="csulora",
                library_version=__version__,
                tqdm_class=partial(_DownloadBar, self.events, f"downloading {filename}"),
            )
        return Path(path)

    def read_range(
        self, snapshot: HubSnapshot, filename: str, start: int, end: int, advance: Advance | None = None
    ) -> torch.Tensor:
        """Bytes [start, end) of a file as a uint8 tensor, streamed into one buffer (resumed on transient errors).

        `advance(bytes)` reports progress to a task the caller started for a batch of ranges.
        """
        where = snapshot.where(filename)  # offline, the session refuses the request: hub_errors says why
        buffer = torch.empty(end - start, dtype=torch.uint8)
        view = buffer.numpy()
        url = hf_hub_url(snapshot.ref.repo_id, filename, revision=snapshot.commit)
        filled, attempts = 0, 0
        while filled < end - start:
            headers = build_hf_headers(token=self.options.token, library_name="csulora", library_version=__version__)
            headers["Range"] = f"bytes={start + filled}-{end - 1}"
            headers["Accept-Encoding"] = "identity"  # a compressed body would not be the stored bytes
            try:
                with hub_errors(where), _stream(url, headers) as response:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        take = min(len(chunk), end - start - filled)
                        view[filled : filled + take] = memoryview(chunk)[:take]
                        filled += take
                        if advance is not None:
                            advance(take)
            except HubError as error:
                attempts += 1
                if not error.transient or attempts > RANGE_RETRIES:
                    raise
                time.sleep(min(2**attempts, 8))
        return buffer


@contextmanager
def _stream(url: str, headers: dict[str, str]) -> Iterator:
    with get_session().stream("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
        if response.status_code >= 400:
            response.read()  # the Hub's error headers and body, for hf_raise_for_status's message
        hf_raise_for_status(response)
        if response.status_code != 206:
            # A server that ignores Range would send the whole file for every tensor.
            raise HubError(
                f"the server ignored the byte range (HTTP {response.status_code})",
                where=url.split("?")[0],
                hint="use --fetch shards",
            )
        yield response


class _DownloadBar(hf_tqdm):
    """huggingface_hub's progress bar, silenced and forwarded to csulora's own display.

    A disabled tqdm keeps every method huggingface_hub may call (HTTP and Xet paths alike), so only
    `update` needs to be passed on.
    """

    def __init__(self, events: Events, description: str, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)
        self._forward = events.start(description, kwargs.get("total"), in_bytes=True)
        if kwargs.get("initial"):
            self._forward(kwargs["initial"])

    def update(self, n=1):
        self._forward(n or 0)
        return super().update(n)


@contextmanager
def hub_errors(where: str) -> Iterator[None]:
    """huggingface_hub and HTTP exceptions as one-line HubErrors; the most specific cause first."""
    try:
        yield
    except GatedRepoError:
        raise HubError(
            "gated repository: request access on its Hub page, then pass a token that has it",
            where=where,
            hint="--token or HF_TOKEN",
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            "repository not found, or private and the token (if any) has no access",
            where=where,
            hint="check the name; for a private repo pass --token or set HF_TOKEN",
        ) from None
    except RevisionNotFoundError:
        raise HubError("revision not found in this repository", where=where) from None
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as error:
        raise _unreachable(error.__cause__ or error, where) from None
    except EntryNotFoundError:
        raise HubError("file not found at this revision", where=where) from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise HubError(
                "the Hub refused the token (HTTP 401)", where=where, hint="check --token or HF_TOKEN"
            ) from None
        failure = HubError(f"the Hub answered HTTP {status}", where=where)
        failure.transient = status in (429, 500, 502, 503, 504)
        raise failure from None
    except httpx.TransportError as error:
        raise _unreachable(error, where) from None
    except FileMetadataError:
        raise HubError(
            "the endpoint answered without a commit or ETag: it does not look like a Hugging Face Hub",
            where=where,
            hint="check HF_ENDPOINT",
        ) from None
    except OSError as error:  # a size-check failure after a dropped download, or a full/read-only HF cache
        raise HubError(f"download failed: {error.strerror or error}", where=where) from None


def _unreachable(error: BaseException, where: str) -> HubError:
    endpoint = endpoint_label()
    if isinstance(error, OfflineModeIsEnabled) or constants.is_offline_mode():
        return HubError(OFFLINE_MISS, where=where)
    if isinstance(error, httpx.TimeoutException):
        failure = HubError(
            f"timed out waiting for the Hub at {endpoint}",
            where=where,
            hint="retry, or raise HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT",
        )
    else:
        failure = HubError(
            f"cannot reach the Hub at {endpoint}",
            where=where,
            hint="check the network or HF_ENDPOINT; with HF_HUB_OFFLINE=1 only cached files are used",
        )
    failure.transient = True
    return failure


def _size(sibling) -> int:
    if sibling.lfs is not None:
        return int(sibling.lfs.size)
    return int(sibling.size or 0)


def _content_hash(sibling, commit: str) -> str:
    """A name for the file's bytes: its LFS sha256 (the same as a local file's), else its git oid."""
    if sibling.lfs is not None and sibling.lfs.sha256:
        return f"sha256:{sibling.lfs.sha256}"
    if sibling.blob_id:
        return f"git:{sibling.blob_id}"
    return f"commit:{commit}/{sibling.rfilename}"


def _files_in_hf_cache(repo_id: str, commit: str) -> dict[str, HubFile] | None:
    """The files of a commit that the HF cache holds, named by their blobs (which are their etags)."""
    snapshot = (
        Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots" / commit
    )
    if not snapshot.is_dir():
        return None
    files = {}
    for path in snapshot.rglob("*"):
        if path.is_file():
            name = path.relative_to(snapshot).as_posix()
            blob = Path(os.path.realpath(path)).name
            content = f"sha256:{blob}" if len(blob) == 64 else f"git:{blob}"
            files[name] = HubFile(name, path.stat().st_size, content)
    return files


def write_quietly(path: Path, data: str | bytes) -> None:
    """Records only save requests next time; a read-only cache must not fail the run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(temporary, path)
    except OSError:
        pass
