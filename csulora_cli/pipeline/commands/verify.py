"""`verify`: re-hash output folders against the digests their reports recorded (a deploy gate's check), and
check subspace folders: every basis file whole (its own checksum) and every module a job was asked for there."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import CsuloraError
from ...report.records import REPORT_FILE
from ...subspace.folder import SUBSPACE_MANIFEST, SubspaceFolder
from ...subspace.store import read_basis_file
from ..plumbing.provenance import output_file_digests
from ..types.results import VerifyResult


def verify_outputs(folders: tuple[Path, ...]) -> list[VerifyResult]:
    """One result per folder; `problem` names the first file (in path order) that differs, is missing or
    is extra, or the report that cannot be read.

        from pathlib import Path
        from csulora_cli.api import verify_outputs
        (result,) = verify_outputs((Path("adapter-safe"),))
        assert result.problem is None, result.problem
    """
    return [_verify(Path(folder)) for folder in folders]


def _verify(folder: Path) -> VerifyResult:
    if not (folder / REPORT_FILE).exists() and (folder / SUBSPACE_MANIFEST).is_file():
        return _verify_subspace(folder)
    report_path = folder / REPORT_FILE
    expected, problem = _recorded_digests(folder, report_path)
    if problem is None:
        problem = _first_difference(folder, expected, output_file_digests(folder))
    return VerifyResult(str(folder), REPORT_FILE, expected, problem)


def _recorded_digests(folder: Path, report_path: Path) -> tuple[dict[str, str], str | None]:
    if not folder.is_dir():
        return {}, f"{folder}: not a folder"
    try:
        report = json.loads(report_path.read_text())
    except FileNotFoundError:
        return {}, f"{report_path}: missing (not a folder written by csulora correct)"
    except (OSError, ValueError) as error:
        return {}, f"{report_path}: not a readable report ({type(error).__name__})"
    recorded = (report.get("provenance") or {}).get("output_files") if isinstance(report, dict) else None
    if not isinstance(recorded, dict):
        return {}, f"{report_path}: records no output files (a report of schema 1, or of a dry run)"
    return recorded, None


def _first_difference(folder: Path, expected: dict[str, str], actual: dict[str, str]) -> str | None:
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            return f"{folder / name}: missing (recorded in {REPORT_FILE})"
        if name not in expected:
            return f"{folder / name}: extra file (not recorded in {REPORT_FILE})"
        if actual[name] != expected[name]:
            found, recorded = actual[name][:12], expected[name][:12]
            return f"{folder / name}: differs from {REPORT_FILE} (sha256 {found}..., recorded {recorded}...)"
    return None


def _verify_subspace(folder: Path) -> VerifyResult:
    """A subspace folder: each basis file read back against its own checksum, and nothing missing that some
    job was asked for (a job split by layers still to run is not known; one that started and stopped is)."""
    try:
        subspace = SubspaceFolder(folder)
        files = {
            entry["path"].relative_to(folder).as_posix(): entry["record"].get("checksum", "")
            for entry in subspace.modules.values()
        }
        for entry in subspace.modules.values():
            read_basis_file(entry["path"])
        lacking = subspace.what_is_missing()
    except CsuloraError as error:
        return VerifyResult(str(folder), SUBSPACE_MANIFEST, {}, error.one_line())
    problem = None if lacking is None else f"{folder}: incomplete subspace folder: {lacking}"
    return VerifyResult(str(folder), SUBSPACE_MANIFEST, files, problem)
