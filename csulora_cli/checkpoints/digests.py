"""SHA-256 of local shard files: remembered on disk by file identity, and started early when asked.

A cold run hashes every local shard it estimates from once (the content ids in the basis cache's keys,
docs/method.md section 7); a 1 GB shard takes about a second of one core. `hash_ahead` starts that work
on background threads: a `LocalSource` starts the shards of the keys a run will read (`plan_reads`),
and the command line starts them even earlier, as soon as it names local model folders, so that they run
beside the interpreter's imports (1.5 s in which the other core has nothing to do).
Torch-free on purpose: the command line calls it before importing torch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import mmap
import os
import queue
import threading
from collections.abc import Iterable
from concurrent.futures import CancelledError, Future
from pathlib import Path

from ..atomic import write_best_effort
from .layout import INDEX_FILE, SINGLE_FILE

# Threads hashing ahead, one shard each.
AHEAD_WORKERS = 2
# A file is hashed this many mapped bytes at a time: large pieces, because each must take the GIL back
# (small ones starved the hashing threads while the interpreter imported; docs/performance.md), and a
# mapping, resident only while hashed, skips the copy a read makes.
HASH_WINDOW_BYTES = 32 << 20

# Keyed by the file's identity, not its path (a file rewritten since its digest was started is hashed
# anew), and by the memo folder the digest is remembered in (another cache gets its own memo).
_ahead: dict[tuple[str, Path | None], Future] = {}
# Files wait in the order they are needed: each call's n-th file before any call's (n+1)-th, so the first
# shard of the base and of the aligned model (the first module needs both) are hashed first, side by side.
_queue: queue.PriorityQueue[tuple[int, int, Path, Path | None, Future]] = queue.PriorityQueue()
_submitted = itertools.count()
_workers: list[threading.Thread] = []


def file_sha256(path: Path, memo_dir: Path | None) -> str:
    """SHA-256 of a file, remembered by (path, size, mtime, inode) so unchanged shards hash once.

    A digest started ahead for this file is waited for rather than computed twice.
    """
    try:
        started = _ahead.get((_identity(path), memo_dir))
    except OSError:
        started = None  # _compute raises it by name
    if started is not None and not started.cancelled():
        try:
            return started.result()
        except (Exception, CancelledError):  # noqa: BLE001 - computed again below, where an error is raised by name
            pass
    return _compute(path, memo_dir)


def _identity(path: Path) -> str:
    """Path, size, mtime and inode: what the on-disk memo trusts to mean unchanged bytes."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"


def _memo_path(identity: str, memo_dir: Path) -> Path:
    return memo_dir / (hashlib.sha256(identity.encode()).hexdigest() + ".json")


def remember_sha256(path: Path, digest: str, memo_dir: Path) -> None:
    """Record the digest of a file just written, computed from the bytes as they were written: a later
    `file_sha256` of the unchanged file then reads the memo instead of the file."""
    identity = _identity(path)
    write_best_effort(_memo_path(identity, memo_dir), json.dumps({"identity": identity, "sha256": digest}))


def _compute(path: Path, memo_dir: Path | None) -> str:
    identity = _identity(path)
    memo_path = None
    if memo_dir is not None:
        memo_path = _memo_path(identity, memo_dir)
        try:
            memo = json.loads(memo_path.read_text())
            if memo.get("identity") == identity and isinstance(memo.get("sha256"), str):
                return memo["sha256"]
        except (OSError, ValueError):
            pass
    digest = sha256_of_file(path)
    if memo_path is not None:
        write_best_effort(memo_path, json.dumps({"identity": identity, "sha256": digest}))
    return digest


def sha256_of_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, hashed window by window from a read-only mapping."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        for offset in range(0, size, HASH_WINDOW_BYTES):
            length = min(HASH_WINDOW_BYTES, size - offset)
            with mmap.mmap(handle.fileno(), length, access=mmap.ACCESS_READ, offset=offset) as window:
                digest.update(window)
    return digest.hexdigest()


def local_shards(folder: Path) -> list[Path]:
    """The safetensors files of a local model folder, in index order; [] for anything else (the readers
    report a malformed folder by name later, when they open it)."""
    try:
        index = folder / INDEX_FILE
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            names = dict.fromkeys(name for name in weight_map.values() if isinstance(name, str))
            shards = [(folder / name).resolve() for name in names]
            return [shard for shard in shards if shard.parent == folder.resolve() and shard.is_file()]
        single = folder / SINGLE_FILE
        return [single.resolve()] if single.is_file() else []
    except (OSError, ValueError, AttributeError):
        return []


def hash_ahead(paths: Iterable[Path], memo_dir: Path | None) -> None:
    """Start hashing these files, in the order given, on daemon threads (a run that ends early does not
    wait for them). A file already started for the same memo folder is not started again."""
    for rank, path in enumerate(paths):
        try:
            identity = _identity(path)
        except OSError:
            continue  # reported by name when a reader opens it
        if (identity, memo_dir) not in _ahead:
            _ahead[identity, memo_dir] = future = Future()
            _queue.put((rank, next(_submitted), path, memo_dir, future))
    while len(_workers) < AHEAD_WORKERS:
        worker = threading.Thread(target=_work, name="csulora-hash-ahead", daemon=True)
        _workers.append(worker)
        worker.start()


def keep_only(needed: Iterable[Path], among: Iterable[Path]) -> None:
    """Of the files `among`, stop those not `needed` that have not started (a run needs fewer shards)."""
    keep = {path.resolve() for path in needed}
    for path in among:
        if path.resolve() in keep:
            continue
        try:
            identity = _identity(path)
        except OSError:
            continue
        for key in [key for key in _ahead if key[0] == identity]:
            if _ahead[key].cancel():
                del _ahead[key]


def _work() -> None:
    while True:
        _, _, path, memo_dir, future = _queue.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(_compute(path, memo_dir))
        except BaseException as error:  # noqa: BLE001 - handed to whoever asks for this digest
            future.set_exception(error)
