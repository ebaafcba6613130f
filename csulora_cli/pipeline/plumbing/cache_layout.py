"""The cache folder: where it is, and its three kinds of record (bases, file digests, Hub metadata).

Torch-free, so that the command line can start hashing shards (`checkpoints/digests.py`) before it
imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...checkpoints import digests


def default_cache_dir() -> Path:
    configured = os.environ.get("CSULORA_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "csulora"


@dataclass(frozen=True)
class CacheLayout:
    """What lives under the cache folder: bases (`BasisCache`), file digests, and Hub metadata."""

    root: Path

    @classmethod
    def at(cls, cache_dir: Path | None) -> CacheLayout:
        """The layout under `cache_dir`, or under the default cache folder when none was given: the one place
        that resolves where the cache is."""
        return cls(cache_dir or default_cache_dir())

    @property
    def file_digests(self) -> Path:
        return self.root / "file-digests"

    @property
    def hub_metadata(self) -> Path:
        """Resolved refs, commit file lists and shard headers of Hub repos (tensor data stays in the HF cache)."""
        return self.root / "hub"


def hash_local_models_ahead(models: list[str | None], cache_dir: Path | None) -> None:
    """Start hashing the shards of the named models that are local folders (Hub ids need no hashing:
    their shards are named by their LFS sha256)."""
    folders = [Path(model) for model in models if model and Path(model).is_dir()]
    if folders:
        memo_dir = CacheLayout.at(cache_dir).file_digests
        for folder in folders:
            digests.hash_ahead(digests.local_shards(folder), memo_dir)
