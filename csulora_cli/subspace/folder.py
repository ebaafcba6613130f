"""Portable subspace folders (`estimate-subspace --out`): a manifest and one basis file per module.

Several jobs (a Slurm array, a CI matrix) may fill one folder with different modules; the module index
is read from the basis files' own headers, so the jobs need no shared index file.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from .. import __version__
from ..atomic import refuse_foreign_entries, refuse_working_folder, reporting_full_disk, write_atomically
from ..checkpoints.header import read_header
from ..errors import CsuloraError, FormatError, MissingTensorError, OutputExistsError, first_few
from .estimate import EstimationParams, SubspaceBasis
from .params import OUTPUT_SIDE, SIDES
from .store import BasisRequest, basis_record, read_basis_file, write_basis_file

SUBSPACE_MANIFEST = "subspace.json"
SUBSPACE_SCHEMA_VERSION = 2
# One record per estimation job that wrote into the folder: the modules it was asked for, whether it
# finished, and those it skipped because alignment left them unchanged. A folder is complete when every
# module some job was asked for is there (or was skipped): several jobs fill one folder in parts, so a
# folder knows what it lacks without knowing the jobs still to come.
JOBS_FOLDER = "jobs"


def _file_name(base_key: str, transposed: bool) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base_key)
    return f"{safe}{'.T' if transposed else ''}.safetensors"


def _manifest(sources: dict, params: EstimationParams | dict, storage: str) -> dict:
    """`params`: how a weight-difference folder was estimated, or an activation folder's own record (a dict
    with its `kind` and `side`)."""
    return {
        "schema_version": SUBSPACE_SCHEMA_VERSION,
        "tool": {"name": "csulora", "version": __version__},
        "sources": sources,
        "estimation": params if isinstance(params, dict) else params.as_dict(),
        "storage": storage,
    }


def check_subspace_folder(
    folder: Path, sources: dict, params: EstimationParams | dict, overwrite: bool, storage: str = "float32"
) -> bool:
    """Whether `folder` may receive this subspace; refuses, before any work, a folder holding something else.

    Several jobs (a Slurm array, a CI matrix) may fill one folder with different modules: a folder that
    already holds a subspace of the same sources and parameters is joined, never replaced. Anything
    else there is kept unless `overwrite` is given. Returns True when it must be cleared first.
    """
    refuse_working_folder(folder)
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise CsuloraError("output exists and is not a folder", where=str(folder))
    manifest_path = folder / SUBSPACE_MANIFEST
    manifest = _manifest(sources, params, storage)
    existing = _read_manifest(manifest_path) if manifest_path.is_file() else None
    # An older schema lacks what this version writes (right vectors): never mixed into one folder; nor
    # are two storages (a folder written before `storage` existed is float32).
    compatible = (
        existing is not None
        and all(existing.get(key) == manifest[key] for key in ("schema_version", "sources", "estimation"))
        and existing.get("storage", "float32") == storage
    )
    if compatible or not any(folder.iterdir()):
        return False
    if not overwrite:
        what = "a subspace of other sources or parameters" if existing else "other files"
        raise OutputExistsError(f"output holds {what}", where=str(folder), hint="pass {overwrite} to replace it")
    refuse_foreign_entries(folder, entries_not_of_a_subspace_folder(folder))
    return True


# What csulora writes into a subspace folder: the manifest, the card a push adds, and basis files.
_SUBSPACE_FILES = (SUBSPACE_MANIFEST, "README.md", ".gitattributes")


def entries_not_of_a_subspace_folder(folder: Path) -> list[str]:
    """What a folder holds that csulora did not write there as a subspace folder (everything, without a
    manifest): what replacing it would delete of the user's."""
    if not (folder / SUBSPACE_MANIFEST).is_file():
        return sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    foreign = []
    for entry in sorted(folder.iterdir()):
        if entry.name == "bases" and entry.is_dir() and not entry.is_symlink():
            foreign += [f"bases/{path.name}" for path in sorted(entry.iterdir()) if not _a_basis_file(path)]
        elif entry.name == JOBS_FOLDER and entry.is_dir() and not entry.is_symlink():
            foreign += [f"{JOBS_FOLDER}/{path.name}" for path in sorted(entry.iterdir()) if not _a_job_record(path)]
        elif entry.name not in _SUBSPACE_FILES or not entry.is_file():
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign


def _a_job_record(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and path.suffix == ".json"


def _a_basis_file(path: Path) -> bool:
    # Hidden names are basis files still being written, or left by a killed job.
    return path.is_file() and not path.is_symlink() and path.name.endswith(".safetensors")


def prepare_subspace_folder(
    folder: Path,
    sources: dict,
    params: EstimationParams | dict,
    overwrite: bool,
    storage: str = "float32",
    order: dict | None = None,
) -> None:
    """Create (or join) a portable subspace folder before any basis is written into it.

    `order` records which side is which (the displacement's sign) and what confirmed it.
    """
    if check_subspace_folder(folder, sources, params, overwrite, storage):
        shutil.rmtree(folder)
    with reporting_full_disk(folder / "bases", None):
        (folder / "bases").mkdir(parents=True, exist_ok=True)
    manifest = _manifest(sources, params, storage) | ({} if order is None else {"order": order})
    write_atomically(folder / SUBSPACE_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def record_job(folder: Path, asked: list, finished: bool, unchanged: list = ()) -> None:
    """Write (or, once it `finished`, rewrite) the record of the job asked for `asked` (`Target`s): a rerun of
    the same job, asked for the same modules, finds and completes the same record."""
    keys = sorted(_index_key(target.base_key, target.transposed) for target in asked)
    name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    record = {
        "asked": [{"module": target.base_key, "transposed": target.transposed} for target in asked],
        "finished": finished,
        "unchanged": [{"module": target.base_key, "transposed": target.transposed} for target in unchanged],
    }
    write_atomically(folder / JOBS_FOLDER / f"{name}.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def add_to_subspace_folder(folder: Path, request: BasisRequest, basis: SubspaceBasis, storage: str = "float32") -> None:
    add_basis_to_folder(folder, basis_record(request), basis, storage)


def add_basis_to_folder(folder: Path, record: dict, basis: SubspaceBasis, storage: str = "float32") -> None:
    """One module's basis file; `record` names it (`module`, `transposed`) and says where it came from."""
    write_basis_file(folder / "bases" / _file_name(record["module"], record["transposed"]), basis, record, storage)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FormatError(f"not a subspace manifest ({error})", where=str(path)) from None
    if not isinstance(manifest, dict):
        raise FormatError("not a subspace manifest (not a JSON object)", where=str(path))
    return manifest


class SubspaceFolder:
    """A portable subspace folder read back: bases looked up by base key and orientation.

    The module index is read from the basis files' own headers, so a folder filled by several jobs
    needs no shared index file. `side` is the space its basis vectors live in (`params.SIDES`): a basis
    has the module's out_features rows on the output side, its in_features rows on the input side.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        manifest_path = folder / SUBSPACE_MANIFEST
        if not folder.is_dir():
            raise CsuloraError("subspace folder does not exist", where=str(folder))
        if not manifest_path.is_file():
            raise MissingTensorError(f"not a subspace folder: no {SUBSPACE_MANIFEST}", where=str(folder))
        self.manifest = _read_manifest(manifest_path)
        self.sources = self.manifest.get("sources", {})
        self.estimation = self.manifest.get("estimation", {})
        # Folders written before activation folders existed record no side: theirs is the output side.
        self.side = self.estimation.get("side", OUTPUT_SIDE) if isinstance(self.estimation, dict) else OUTPUT_SIDE
        if self.side not in SIDES:
            raise FormatError(
                f"not a subspace manifest (side {self.side!r}; expected {' or '.join(SIDES)})", where=str(manifest_path)
            )
        self.modules = {}
        # Hidden names are files still being written (or left by a killed job), never bases.
        for path in sorted((folder / "bases").glob("[!.]*.safetensors")):
            header = read_header(path)
            try:
                record = json.loads(header.metadata["csulora"])
                key, transposed = record["module"], bool(record["transposed"])
                rows = header.entries["basis"].shape[0]
            except (KeyError, ValueError, TypeError, IndexError):
                raise FormatError("not a csulora basis file", where=str(path)) from None
            self.modules[_index_key(key, transposed)] = {
                "key": key,
                "transposed": transposed,
                "path": path,
                "rows": rows,  # out_features on the output side, in_features on the input side
                "record": record,
            }

    def keys(self) -> set[str]:
        return {entry["key"] for entry in self.modules.values()}

    def what_is_missing(self) -> str | None:
        """What an incomplete folder lacks, in words (`verify` fails on it, `push` warns); None when complete."""
        missing, unfinished = self.missing()
        if not missing:
            return None
        jobs = f"; {unfinished} job(s) did not finish" if unfinished else ""
        return f"{len(missing)} module(s) asked for are missing ({first_few(missing, 3)}){jobs}"

    def missing(self) -> tuple[list[str], int]:
        """(modules some job was asked for that the folder lacks, how many jobs have not finished): what
        an interrupted job left out, or what a job still running has yet to write."""
        asked, skipped, unfinished = set(), set(), 0
        for path in sorted((self.folder / JOBS_FOLDER).glob("[!.]*.json")):
            try:
                record = json.loads(path.read_text())
                asked |= {_index_key(item["module"], bool(item["transposed"])) for item in record["asked"]}
                skipped |= {_index_key(item["module"], bool(item["transposed"])) for item in record["unchanged"]}
                unfinished += not record["finished"]
            except (OSError, ValueError, KeyError, TypeError):
                raise FormatError("not a csulora job record", where=str(path)) from None
        return sorted(asked - skipped - set(self.modules)), unfinished

    def entry(self, base_key: str, transposed: bool) -> dict:
        entry = self.modules.get(_index_key(base_key, transposed))
        if entry is None:
            orientation = "transposed " if transposed else ""
            raise MissingTensorError(
                f"no {orientation}basis for {base_key} in this subspace folder",
                where=str(self.folder),
                hint="estimate it with estimate-subspace {adapter} ADAPTER {out} DIR",
            )
        return entry

    def load(self, base_key: str, transposed: bool) -> SubspaceBasis:
        return read_basis_file(self.entry(base_key, transposed)["path"])[0]


def _index_key(base_key: str, transposed: bool) -> str:
    return f"{base_key}{'|T' if transposed else ''}"
