"""Files and folders that appear whole or not at all: the one place csulora writes atomically.

`atomic_file` and `write_atomically` write a file under a temporary name beside it and rename it into
place. `atomic_folder` fills a hidden temporary sibling of an output folder, fsyncs it and renames it
into place; on any error or SIGINT/SIGTERM the temporary folder is removed. A SIGKILL can leave only a
hidden `.csulora-tmp-<pid>-*` folder behind, never a folder under the destination's name; the next run
that writes beside it removes it once that process is gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CsuloraError, OutputExistsError

TEMP_PREFIX = ".csulora-tmp-"
# mkstemp creates files 0600; what csulora writes is for other users too (a server, a colleague), so
# finished files get the permissions the umask gives. Read once, at import, in the main thread.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_file(path: Path, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed over `path` when the block ends without an error.

    A reader (or a concurrent writer) sees the old file, the new file or none, never a partial one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_UMASK)
        if fsync:
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: str | bytes, *, fsync: bool = False) -> None:
    with atomic_file(path, fsync=fsync) as temporary:
        temporary.write_bytes(data.encode() if isinstance(data, str) else data)


def write_best_effort(path: Path, data: str | bytes) -> bool:
    """For records that only save work next time (memos, Hub metadata): a read-only cache must not fail the run."""
    try:
        write_atomically(path, data)
    except OSError:
        return False
    return True


def check_destination(destination: Path, overwrite: bool) -> None:
    """Fail before any work when the destination exists (without `overwrite`) or cannot be written."""
    if destination.exists() and not overwrite:
        raise OutputExistsError("output already exists", where=str(destination), hint="pass {overwrite} to replace it")
    if destination.exists() and not destination.is_dir():
        raise CsuloraError("output exists and is not a folder", where=str(destination))
    parent = destination.parent
    if not parent.is_dir():
        raise CsuloraError("parent folder of the output does not exist", where=str(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CsuloraError("cannot write here (permission denied)", where=str(parent))


@contextmanager
def atomic_folder(destination: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `destination` in one rename."""
    check_destination(destination, overwrite)
    remove_stale_temporaries(destination.parent)
    try:
        temporary = Path(tempfile.mkdtemp(prefix=_own_prefix(), dir=destination.parent))
    except OSError as error:
        raise CsuloraError(f"cannot create a folder here ({error.strerror})", where=str(destination.parent)) from None
    with _cleanup_on_signal(temporary):
        try:
            yield temporary
            _fsync_tree(temporary)
            _replace(temporary, destination, overwrite)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise


def _own_prefix() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-"


def remove_stale_temporaries(parent: Path) -> None:
    """Remove temporary folders left by killed runs (their process no longer exists)."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX) or not entry.is_dir():
            continue
        pid_text = entry.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _replace(temporary: Path, destination: Path, overwrite: bool) -> None:
    if destination.exists():
        if not overwrite:  # appeared while we worked: never clobber it
            raise OutputExistsError("output appeared while writing", where=str(destination))
        retired = Path(tempfile.mkdtemp(prefix=_own_prefix(), dir=destination.parent))
        os.replace(destination, retired / destination.name)
        os.replace(temporary, destination)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(temporary, destination)
    _fsync_dir(destination.parent)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems do not support fsync on directories
    finally:
        os.close(descriptor)


@contextmanager
def _cleanup_on_signal(temporary: Path) -> Iterator[None]:
    """Turn SIGTERM into an exception while writing, so the `except` above removes the folder."""

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupted)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
