"""Resolving `org/name@revision` to one commit and the files it holds: from the Hub, or offline from caches.

csulora records each resolved ref and each commit's file listing under its own cache (`metadata_dir`):
the HF cache keeps files and refs but not a listing with the files' LFS hashes, which the basis cache
keys on, so without the record an offline run could not name a file's bytes it never downloaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from huggingface_hub import HfApi, constants, scan_cache_dir
from huggingface_hub.errors import CacheNotFound
from huggingface_hub.file_download import repo_folder_name

from ...atomic import write_best_effort
from .errors import HubError, hub_errors
from .refs import HubRef

COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubFile:
    name: str
    size: int | None  # None when the listing did not say (a mirror, or a Hub answer without file metadata)
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


class SnapshotResolver:
    """Resolves each ref once per run (later asks are answered from memory); records what it resolved for
    offline and unreachable-Hub runs."""

    def __init__(self, api: HfApi, metadata_dir: Path, warn: Callable[[str], None]):
        self.api = api
        self.metadata_dir = metadata_dir
        self.warn = warn
        self._resolved: dict[HubRef, HubSnapshot] = {}

    def resolve(self, ref: HubRef) -> HubSnapshot:
        if ref not in self._resolved:
            self._resolved[ref] = self._resolve(ref)
        return self._resolved[ref]

    def _resolve(self, ref: HubRef) -> HubSnapshot:
        if COMMIT.fullmatch(ref.revision):
            recorded = self._recorded_snapshot(ref, ref.revision)
            if recorded is not None:
                return recorded  # a commit never changes: no request at all
        if constants.is_offline_mode():
            return self._offline_snapshot(ref)
        try:
            with hub_errors(ref.label):
                info = self.api.model_info(
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
            self.warn(f"{error.one_line()}; using commit {snapshot.commit[:12]} resolved on an earlier run")
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
        write_best_effort(self._record_path(snapshot.ref.repo_id, snapshot.commit), json.dumps({"files": files}))
        write_best_effort(self._ref_path(snapshot.ref), snapshot.commit)

    def _recorded_snapshot(self, ref: HubRef, commit: str) -> HubSnapshot | None:
        try:
            files = json.loads(self._record_path(ref.repo_id, commit).read_text())["files"]
            listed = {name: HubFile(name, None if s is None else int(s), str(h)) for name, (s, h) in files.items()}
            return HubSnapshot(ref, commit, listed)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _offline_snapshot(self, ref: HubRef) -> HubSnapshot:
        cached = _cached_revisions(ref.repo_id)
        commit = ref.revision if COMMIT.fullmatch(ref.revision) else self._offline_commit(ref, cached)
        recorded = self._recorded_snapshot(ref, commit)
        if recorded is not None:
            return recorded
        if commit not in cached:
            raise HubError(
                f"commit {commit[:12]} is not in the local caches and HF_HUB_OFFLINE is set", where=ref.label
            )
        return HubSnapshot(ref, commit, _listed_files(cached[commit]))

    def _offline_commit(self, ref: HubRef, cached: dict) -> str:
        """A branch or tag resolved on an earlier online run (by csulora or any huggingface_hub tool)."""
        for commit, revision in cached.items():
            if ref.revision in revision.refs:
                return commit
        try:
            commit = self._ref_path(ref).read_text().strip()
        except OSError:
            commit = ""
        if COMMIT.fullmatch(commit):
            return commit
        raise HubError(
            "revision was never resolved on this machine and HF_HUB_OFFLINE is set",
            where=ref.label,
            hint="run once online, or pin a cached commit with @<sha>",
        )


def _cached_revisions(repo_id: str) -> dict:
    """{commit: CachedRevisionInfo} of a model repo in the standard HF cache (empty when it holds none)."""
    try:
        cache = scan_cache_dir(constants.HF_HUB_CACHE)
    except (CacheNotFound, OSError, ValueError):
        return {}
    for repo in cache.repos:
        if repo.repo_id == repo_id and repo.repo_type == "model":
            return {revision.commit_hash: revision for revision in repo.revisions}
    return {}


def _listed_files(revision) -> dict[str, HubFile]:
    """The files of a cached commit, named by their blobs (an LFS file's blob is its sha256)."""
    files = {}
    for cached in revision.files:
        name = cached.file_path.relative_to(revision.snapshot_path).as_posix()
        blob = cached.blob_path.name
        content = f"sha256:{blob}" if len(blob) == 64 else f"git:{blob}"
        files[name] = HubFile(name, cached.size_on_disk, content)
    return files


def _size(sibling) -> int | None:
    if sibling.lfs is not None and sibling.lfs.size is not None:
        return int(sibling.lfs.size)
    return None if sibling.size is None else int(sibling.size)


def _content_hash(sibling, commit: str) -> str:
    """A name for the file's bytes: its LFS sha256 (the same as a local file's), else its git oid."""
    if sibling.lfs is not None and sibling.lfs.sha256:
        return f"sha256:{sibling.lfs.sha256}"
    if sibling.blob_id:
        return f"git:{sibling.blob_id}"
    return f"commit:{commit}/{sibling.rfilename}"
