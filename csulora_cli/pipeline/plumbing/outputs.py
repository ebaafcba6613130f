"""Where `correct` writes: each adapter's output folder, checked before any work, filled in a temporary
folder and renamed into place whole; the model card and the report are the last files written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import replace
from pathlib import Path

from ...adapters.peft import LoraAdapter
from ...atomic import atomic_folder, check_destination, write_new_file
from ...errors import CsuloraError, UsageError
from ...report.card import render_card
from ...report.records import REPORT_FILE, AdapterReport
from ..types.requests import CorrectRequest
from .adapter_source import OpenedAdapter
from .provenance import output_file_digests


def planned_output_folders(
    opened: list[OpenedAdapter], request: CorrectRequest, unopened: tuple[Path, ...] = ()
) -> list[Path]:
    """Where the outputs go, or would go without `dry_run` (none when no output was named); a dry run
    checks these as the real run does. `unopened`: local adapter folders that could not be read
    (`keep_going`), which keep their place in the common parent so the others land where they would."""
    if request.out is None and request.out_dir is None:
        return []
    if request.out is not None:
        return [request.out]
    return [request.out_dir / path for path in relative_output_paths(opened, unopened)]


def relative_output_paths(opened: list[OpenedAdapter], unopened: tuple[Path, ...] = ()) -> list[Path]:
    """Where each adapter goes below `--out-dir`: a local folder by its path relative to the common parent
    of the local ones (`runs/a/adapter`, `runs/b/adapter` -> `a/adapter`, `b/adapter`; one -> its folder
    name), a Hub repo by its id (`org/name`).

    Two inputs that would land in one folder, or one inside the other, are refused naming both.
    """
    local = [item.adapter.folder.resolve() for item in opened if item.output_name is None]
    parents = [folder.parent for folder in local] + [folder.resolve().parent for folder in unopened]
    common = Path(os.path.commonpath(parents)) if local else None
    relative = [
        item.output_name if item.output_name is not None else item.adapter.folder.resolve().relative_to(common)
        for item in opened
    ]
    for i, first in enumerate(relative):
        for j in range(i + 1, len(relative)):
            second = relative[j]
            if first == second or first in second.parents or second in first.parents:
                how = "are the same folder" if first == second else "would nest one output inside the other"
                raise UsageError(
                    f"adapters {opened[i].label} and {opened[j].label} {how} under {{out_dir}} ({first} and {second})",
                    parameter="adapters",
                )
    return relative


def files_csulora_did_not_write(folder: Path) -> list[str]:
    """What an output folder holds that its csulora_report.json does not record as written by csulora
    (everything, in a folder without one): what replacing the folder would delete of the user's."""
    try:
        recorded = json.loads((folder / REPORT_FILE).read_text())["provenance"]["output_files"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    own = set(recorded) | {REPORT_FILE} if isinstance(recorded, dict) else set()
    foreign = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            inside = [path.relative_to(folder).as_posix() for path in entry.rglob("*") if not path.is_dir()]
            if not inside or any(name not in own for name in inside):
                foreign.append(entry.name + "/")
        elif entry.name not in own:
            foreign.append(entry.name)
    return foreign


def check_out_dir(request: CorrectRequest) -> None:
    """Refuse before any work an `--out-dir` that is not a folder, or where a new one cannot be made."""
    out_dir = request.out_dir
    if out_dir is None:
        return
    if not out_dir.exists():
        check_destination(out_dir, overwrite=False)
    elif not out_dir.is_dir():
        raise CsuloraError("output exists and is not a folder", where=str(out_dir))


def check_output_folder(request: CorrectRequest, destination: Path) -> None:
    """Refuse before any work: an existing output without --overwrite, a folder we cannot write, or one
    holding files csulora did not write (which replacing it would delete). A new `--out-dir` holds nothing."""
    if request.out_dir is not None and not request.out_dir.exists():
        return
    check_destination(destination, request.overwrite, files_csulora_did_not_write)


def open_output_folders(outputs: ExitStack, request: CorrectRequest, destinations: list) -> list[Path | None]:
    """Temporary folders to fill, renamed into place when `outputs` closes without an error.

    A new `--out-dir` appears whole, in one rename; adding to an existing one renames each adapter's
    folder on its own (each whole), creating the folders above it as needed (removed again on failure
    when they stay empty).
    """
    if request.dry_run:
        return [None] * len(destinations)
    if request.out is not None:
        return [outputs.enter_context(atomic_folder(destinations[0], request.overwrite, files_csulora_did_not_write))]
    out_dir = request.out_dir
    if not out_dir.exists():
        batch = outputs.enter_context(atomic_folder(out_dir, overwrite=False))
        folders = [batch / destination.relative_to(out_dir) for destination in destinations]
        for folder in folders:
            folder.mkdir(parents=True)
        return folders
    folders = []
    for destination in destinations:
        outputs.enter_context(_parents_created_for(destination.parent, out_dir))
        folders.append(
            outputs.enter_context(atomic_folder(destination, request.overwrite, files_csulora_did_not_write))
        )
    return folders


@contextmanager
def _parents_created_for(folder: Path, root: Path) -> Iterator[None]:
    """Create `folder` (below `root`) if needed; on failure remove what was created and is still empty."""
    created = [parent for parent in [folder, *folder.parents] if parent != root and root in parent.parents]
    created = [parent for parent in reversed(created) if not parent.exists()]
    for parent in created:
        parent.mkdir()
    try:
        yield
    except BaseException:
        for parent in reversed(created):
            with suppress(OSError):
                parent.rmdir()
        raise


def finish_output(folder: Path, adapter: LoraAdapter, report: AdapterReport) -> AdapterReport:
    """Write the model card, then the report holding the digests of every other file written."""
    write_new_file(folder / "README.md", render_card(adapter, report).encode())
    provenance = replace(report.provenance, outputs=output_file_digests(folder))
    report = replace(report, provenance=provenance)
    # A corrected adapter corrected again (--recorrect) brought its old report along with its other files.
    (folder / REPORT_FILE).unlink(missing_ok=True)
    write_new_file(folder / REPORT_FILE, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    return report
