"""Files and folders that appear whole or not at all: the one place csulora writes atomically.

`write_atomically` writes a file under a temporary name beside it and renames it into place.
`atomic_folder` fills a hidden temporary sibling of an output folder, fsyncs it and renames it into
place; on any error or SIGINT/SIGTERM the temporary folder is removed. A SIGKILL can leave only a hidden
`.csulora-tmp-<pid>-*` folder behind, never a folder under the destination's name; the next run that
writes beside it removes it once that process is gone. A full disk (or quota) at any of these writes is
a `DiskFullError` naming the file and the space it needed.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CsuloraError, DiskFullError, OutputExistsError, UsageError, first_few

TEMP_PREFIX = ".csulora-tmp-"
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_COPY_CHUNK = 1 << 20
# O_NOFOLLOW: a link planted under the temporary name is refused rather than written through.
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def write_atomically(path: Path, data: str | bytes, *, fsync: bool = False) -> None:
    """Write `data` to `path` through a temporary file beside it, renamed over `path` once complete.

    A reader (or a concurrent writer) sees the old file, the new file or none, never a partial one.
    """
    data = data.encode() if isinstance(data, str) else data
    with reporting_full_disk(path, len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = _create_unique(path.parent, ".tmp-", path.suffix, _new_file)
        try:
            try:
                _write_all(descriptor, data)
                if fsync:
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def write_best_effort(path: Path, data: str | bytes) -> bool:
    """For records that only save work next time (memos, Hub metadata): a read-only or full cache must not fail
    the run."""
    try:
        write_atomically(path, data)
    except (OSError, DiskFullError):
        return False
    return True


def write_new_file(path: Path, data: bytes) -> None:
    """Write a file that does not exist yet (inside a temporary output folder), with the umask's permissions."""
    with reporting_full_disk(path, len(data)):
        descriptor = os.open(path, _NEW_FILE_FLAGS, 0o666)
        try:
            _write_all(descriptor, data)
        finally:
            os.close(descriptor)


def copy_new_file(source: Path, destination: Path) -> None:
    """Copy `source`'s bytes into a new file `destination` (created with the umask's permissions)."""
    with open(source, "rb") as reader, reporting_full_disk(destination, os.fstat(reader.fileno()).st_size):
        descriptor = os.open(destination, _NEW_FILE_FLAGS, 0o666)
        try:
            while chunk := reader.read(_COPY_CHUNK):
                _write_all(descriptor, chunk)
        finally:
            os.close(descriptor)


def _write_all(descriptor: int, data: bytes | memoryview) -> None:
    # The one call every file csulora writes goes through (tests make the disk "full" here).
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


@contextmanager
def reporting_full_disk(path: Path, needed: int | None) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT while writing `path` (`needed` bytes) into one `DiskFullError` naming both."""
    try:
        yield
    except OSError as error:
        if error.errno not in FULL_DISK_ERRNOS:
            raise
        raise full_disk_error(error.errno, path, needed) from None


def full_disk_error(code: int, path: Path, needed: int | None) -> DiskFullError:
    if code == errno.EDQUOT:
        what = "disk quota exceeded"
        free = None  # the disk's free space says nothing of the quota
    else:
        what = "no space left on device"
        free = _free_space(path)
    amounts = [f"needs {format_size(needed)}"] if needed is not None else []
    if free is not None:
        amounts.append(f"{format_size(free)} free")
    return DiskFullError(f"{what}: {', '.join(amounts)}" if amounts else what, where=str(path))


def format_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _free_space(path: Path) -> int | None:
    for folder in path.parents:
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def _new_file(path: Path) -> tuple[int, Path]:
    return os.open(path, _NEW_FILE_FLAGS, 0o666), path


def _new_folder(path: Path) -> Path:
    os.mkdir(path, 0o777)
    return path


def _create_unique(parent: Path, prefix: str, suffix: str, create: Callable[[Path], object]):
    """Create a new file or folder under a random unused name.

    Unlike tempfile's mkstemp (0600) and mkdtemp (0700), it is created with the default modes (0666, 0777)
    so the umask decides who may read what csulora writes: a vLLM server or a colleague running as another
    user must be able to read a corrected adapter or a shared cache.
    """
    for _ in range(100):
        try:
            return create(parent / f"{prefix}{secrets.token_hex(6)}{suffix}")
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(parent))


def check_destination(
    destination: Path, overwrite: bool, foreign_entries: Callable[[Path], list[str]] | None = None
) -> None:
    """Fail before any work when the destination cannot be (re)placed.

    An empty folder counts as free. A folder holding something needs `overwrite`, and then, when
    `foreign_entries` is given, may hold only what csulora wrote there: it lists the entries csulora
    did not write (every entry of a folder that is no csulora output), and any of them refuses the run,
    since replacing the folder would delete them. Missing parents are created when the output is written.
    """
    refuse_working_folder(destination)
    if destination.exists() and not destination.is_dir():
        raise CsuloraError("output exists and is not a folder", where=str(destination))
    if holds_something(destination):
        if not overwrite:
            raise OutputExistsError(
                "output already exists", where=str(destination), hint="pass {overwrite} to replace it"
            )
        if foreign_entries is not None:
            refuse_foreign_entries(destination, foreign_entries(destination))
    ancestor = _nearest_existing(destination.parent)
    if not ancestor.is_dir():
        raise CsuloraError("parent of the output is not a folder", where=str(ancestor))
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CsuloraError("cannot write here (permission denied)", where=str(ancestor))


def holds_something(folder: Path) -> bool:
    """Whether `folder` is an existing folder with at least one entry (an empty one is free to use)."""
    try:
        return folder.is_dir() and any(folder.iterdir())
    except OSError:
        return True  # unreadable: never taken for empty


def refuse_working_folder(destination: Path) -> None:
    """An output is replaced whole, by a rename: never the folder a command runs in, nor one above it
    (`.`, `..`, and an empty value, which a path reads as `.`)."""
    try:
        resolved, working = destination.resolve(), Path.cwd().resolve()
    except OSError:
        return
    if resolved == working or resolved in working.parents:
        what = "the current folder" if resolved == working else "a folder above the current one"
        raise UsageError(
            f"is {what}; an output folder is replaced whole, so name a folder of its own (an empty value reads as '.')",
            where=str(destination),
        )


def refuse_foreign_entries(destination: Path, foreign: list[str]) -> None:
    if not foreign:
        return
    shown = first_few(foreign, 5)
    raise OutputExistsError(
        f"{{overwrite}} replaces only a folder csulora wrote, and this one holds what csulora did not write "
        f"({shown}); replacing it would delete them",
        where=str(destination),
        hint="move them away, or name another output folder",
    )


def _nearest_existing(folder: Path) -> Path:
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate
    return folder


@contextmanager
def atomic_folder(
    destination: Path, overwrite: bool, foreign_entries: Callable[[Path], list[str]] | None = None
) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `destination` in one rename.

    The checks of `check_destination` run before, and again just before the rename (the folder may have
    changed while the output was computed). Parents that do not exist are created, and removed again,
    while still empty, when the output is not written.
    """
    check_destination(destination, overwrite, foreign_entries)
    with _parents_created(destination.parent):
        remove_stale_temporaries(destination.parent)
        try:
            temporary = _create_unique(destination.parent, _own_prefix(), "", _new_folder)
        except OSError as error:
            if error.errno in FULL_DISK_ERRNOS:
                raise full_disk_error(error.errno, destination, None) from None
            raise CsuloraError(
                f"cannot create a folder here ({error.strerror})", where=str(destination.parent)
            ) from None
        with _cleanup_on_signal(temporary):
            try:
                yield temporary
                _fsync_tree(temporary)
                _replace(temporary, destination, overwrite, foreign_entries)
            except BaseException as error:
                shutil.rmtree(temporary, ignore_errors=True)
                full = _full_disk_in(error, temporary, destination)
                if full is not None:
                    raise full from None
                raise


@contextmanager
def _parents_created(folder: Path) -> Iterator[None]:
    """Create `folder` and its missing parents; on failure remove those created that are still empty."""
    created = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    try:
        with reporting_full_disk(folder, None):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CsuloraError(f"cannot create the output's folder ({error.strerror})", where=str(folder)) from None
    try:
        yield
    except BaseException:
        for parent in created:  # deepest first
            try:
                parent.rmdir()
            except OSError:
                break
        raise


def _full_disk_in(error: BaseException, temporary: Path, destination: Path) -> DiskFullError | None:
    """A full disk met while filling `temporary`, as an error naming the file by its place under `destination`.

    The temporary folder is gone by then, and the user knows the output by its own name. The file's size
    is known where it was written (`reporting_full_disk`); a bare OSError (a small file written with
    plain `open`) is named without it.
    """
    if isinstance(error, DiskFullError):
        if not error.where or not error.where.startswith(str(temporary)):
            return None
        return DiskFullError(error.message, where=str(destination) + error.where[len(str(temporary)) :])
    if not isinstance(error, OSError) or error.errno not in FULL_DISK_ERRNOS:
        return None
    written = Path(error.filename) if isinstance(error.filename, str) else temporary
    try:
        path = destination / written.relative_to(temporary)
    except ValueError:
        path = destination
    return full_disk_error(error.errno, path, None)


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


def _replace(
    temporary: Path, destination: Path, overwrite: bool, foreign_entries: Callable[[Path], list[str]] | None
) -> None:
    if holds_something(destination) or (destination.exists() and not destination.is_dir()):
        if not overwrite:  # appeared while we worked: never clobber it
            raise OutputExistsError("output appeared while writing", where=str(destination))
        if foreign_entries is not None:
            refuse_foreign_entries(destination, foreign_entries(destination))
        retired = _create_unique(destination.parent, _own_prefix(), "", _new_folder)
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
