"""One run's view of the Hub, in one object: refs resolved (each once), downloads, byte ranges and pushes.

Everything goes through `huggingface_hub` (its endpoint, token, offline switch, cache layout and HTTP
client; one `HfApi` per run), so `HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME` and `HF_HUB_OFFLINE` mean what they
mean to every other tool. Nothing here knows about safetensors or subspaces.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...events import Advance, Events
from . import transfer
from .options import HubOptions
from .refs import HubRef
from .snapshots import HubSnapshot, SnapshotResolver
from .upload import PushResult, PushTarget, new_api, push_folder


class HubClient:
    """Resolved snapshots, downloads into the HF cache, byte ranges and pushes, with one run's options."""

    def __init__(self, options: HubOptions, metadata_dir: Path, events: Events):
        self.options = options
        self.metadata_dir = metadata_dir  # csulora's own records: resolved refs, file lists, headers
        self.events = events
        self.api = new_api(options.token)  # the run's one huggingface_hub client: repo info and pushes
        self._resolver = SnapshotResolver(self.api, metadata_dir, events.warn)

    def snapshot(self, ref: HubRef) -> HubSnapshot:
        """Resolve `ref` to a commit and list its files: the first ask of a run from the Hub (or, offline, from
        the caches), every later one from memory."""
        return self._resolver.resolve(ref)

    def push(self, local_dir: Path, target: PushTarget, *, private: bool | None, commit_message: str) -> PushResult:
        """A finished folder to `target` in one commit (`upload.push_folder`), with the run's token."""
        return push_folder(
            local_dir,
            target.repo_id,
            repo_type=target.repo_type,
            private=private,
            revision=target.revision,
            commit_message=commit_message,
            api=self.api,
        )

    def cached_file(self, snapshot: HubSnapshot, filename: str) -> Path | None:
        return transfer.cached_file(snapshot, filename)

    def download(self, snapshot: HubSnapshot, filename: str) -> Path:
        return transfer.download(snapshot, filename, self.options.token, self.events)

    def read_range(
        self, snapshot: HubSnapshot, filename: str, start: int, end: int, advance: Advance | None = None
    ) -> torch.Tensor:
        return transfer.read_range(snapshot, filename, start, end, self.options.token, advance)

    def read_range_and_size(
        self, snapshot: HubSnapshot, filename: str, start: int, end: int
    ) -> tuple[torch.Tensor, int | None]:
        """A byte range, and the file's size when the answer's Content-Range gives it."""
        return transfer.read_range_and_size(snapshot, filename, start, end, self.options.token)

    def remote_size(self, snapshot: HubSnapshot, filename: str) -> int:
        """A file's size from the Hub's HEAD answer: for listings that leave sizes out."""
        return transfer.remote_size(snapshot, filename, self.options.token)
