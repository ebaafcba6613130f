"""The work folder: every model, adapter, generation and score kept under a key hashed from its inputs.

A rerun finds what it already computed by key and recomputes only what changed (`Store.json_step`);
a step killed half-way leaves no entry, since entries are written whole and then renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

WORKDIR_ENV = "CSULORA_REAL_WORKDIR"


def default_workdir(repo: Path) -> Path:
    return Path(os.environ.get(WORKDIR_ENV) or repo / "scripts" / "out" / "real")


def key_of(*parts: object) -> str:
    """A short content key: sha256 over the JSON of everything that decides a result."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digest(folder: Path) -> str:
    """Digest of a model or adapter folder's weights and config (what decides its behaviour)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*")):
        if path.suffix in (".safetensors", ".json") and path.name != "csulora_report.json":
            digest.update(path.name.encode())
            digest.update(file_digest(path).encode())
    return digest.hexdigest()[:16]


class Store:
    def __init__(self, root: Path, quiet: bool = False, cached_only: bool = False, computes: tuple[str, ...] = ()):
        self.root = root
        self.quiet = quiet
        # Report what is already computed and compute nothing: how a run cut short writes its results.
        self.cached_only = cached_only
        # The kinds computed all the same: one part (the probe) computed beside a family read from the cache.
        self.computes = frozenset(computes)
        self.started = time.perf_counter()
        root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def progress(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.started:7.1f} s] {message}", file=sys.stderr, flush=True)

    def cached(self, kind: str, key: str) -> object | None:
        path = self.root / kind / f"{key}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def json_step(self, kind: str, key: str, compute: Callable[[], object]) -> object | None:
        """The cached JSON result of `compute` under kind/key, computing and storing it when missing
        (None when missing and `cached_only`, unless `kind` is one it computes)."""
        path = self.path(kind, f"{key}.json")
        if path.is_file():
            return json.loads(path.read_text())
        if self.cached_only and kind not in self.computes:
            return None
        value = compute()
        # One partial file per process: two runs sharing a work folder may compute the same entry.
        partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
        partial.write_text(json.dumps(value))
        partial.rename(path)
        return value
