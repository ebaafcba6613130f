"""Subspace bases on disk: the per-module cache, and portable subspace folders.

One safetensors file per module holding the max-rank basis, its singular values and a metadata record
(fingerprint, energies, checksum). Files are written to a temporary name and renamed, so several
processes can fill one cache; a file that fails its checksum or fingerprint is reported and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .errors import CsuloraError, FormatError, MissingTensorError, OutputExistsError
from .safetensors_header import raw_bytes, read_header
from .subspace import EstimationParams, SubspaceBasis

# 2: basis files also hold V's right singular vectors. The format is part of every fingerprint, so
# entries of an older format are never found (and are recomputed), never misread.
CACHE_FORMAT = 2
SUBSPACE_MANIFEST = "subspace.json"
SUBSPACE_SCHEMA_VERSION = 2

Warn = Callable[[str], None]


def default_cache_dir() -> Path:
    configured = os.environ.get("CSULORA_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "csulora"


@dataclass(frozen=True)
class BasisRequest:
    """Everything a basis depends on: which weight, in which orientation, from which bytes, how."""

    base_key: str
    transposed: bool  # Conv1D / Embedding weights are transposed to output-space form
    base_content: str
    aligned_content: str
    params: EstimationParams

    @property
    def label(self) -> str:
        return self.base_key + (" (transposed)" if self.transposed else "")


def fingerprint(request: BasisRequest) -> str:
    """The cache key: a hash of content ids, module, orientation and estimation parameters."""
    record = {
        "format": CACHE_FORMAT,
        "base": request.base_content,
        "aligned": request.aligned_content,
        "key": request.base_key,
        "transposed": request.transposed,
        "params": request.params.as_dict(),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _checksum(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(raw_bytes(tensor))
    return digest.hexdigest()


def write_basis_file(path: Path, basis: SubspaceBasis, record: dict) -> None:
    """Write atomically: a reader sees the old file, the new file, or none, never a partial one."""
    tensors = {"basis": basis.basis, "singular_values": basis.singular_values}
    if basis.right is not None:
        tensors["right"] = basis.right
    tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in tensors.items()}
    record = dict(
        record,
        total_energy=basis.total_energy,
        reference_energy=basis.reference_energy,
        checksum=_checksum(*tensors.values()),
        tool_version=__version__,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(handle)
    try:
        save_file(
            tensors,
            temporary,
            metadata={"csulora": json.dumps(record, sort_keys=True)},
        )
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_basis_file(path: Path) -> tuple[SubspaceBasis, dict]:
    """Read and verify one basis file; raises FormatError when it is damaged."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            record = json.loads((handle.metadata() or {})["csulora"])
            basis, values = handle.get_tensor("basis"), handle.get_tensor("singular_values")
            # A subspace folder of schema 1 has no right vectors; the methods that need them say so.
            right = handle.get_tensor("right") if "right" in handle.keys() else None
    except (OSError, SafetensorError, KeyError, ValueError, TypeError) as error:
        raise FormatError(f"damaged subspace file ({type(error).__name__})", where=str(path)) from None
    stored = (basis, values) if right is None else (basis, values, right)
    if record.get("checksum") != _checksum(*stored):
        raise FormatError("damaged subspace file (checksum mismatch)", where=str(path))
    if basis.dim() != 2 or values.shape != (basis.shape[1],):
        raise FormatError("damaged subspace file (inconsistent shapes)", where=str(path))
    if right is not None and (right.dim() != 2 or right.shape[1] != basis.shape[1]):
        raise FormatError("damaged subspace file (inconsistent shapes)", where=str(path))
    energies = float(record["total_energy"]), float(record["reference_energy"])
    return SubspaceBasis(basis, values, *energies, right=right), record


class BasisCache:
    """The shared on-disk cache: `<dir>/bases/<fingerprint[:2]>/<fingerprint>.safetensors`."""

    def __init__(self, directory: Path, warn: Warn):
        self.directory = directory
        self.warn = warn

    def path_for(self, request: BasisRequest) -> Path:
        key = fingerprint(request)
        return self.directory / "bases" / key[:2] / f"{key}.safetensors"

    def load(self, request: BasisRequest) -> SubspaceBasis | None:
        path = self.path_for(request)
        if not path.is_file():
            return None
        try:
            basis, record = read_basis_file(path)
        except FormatError as error:
            self.warn(f"{error.one_line()}; recomputing")
            return None
        if record.get("fingerprint") != fingerprint(request):
            self.warn(f"{path}: cache entry belongs to other inputs; recomputing")
            return None
        return basis

    def save(self, request: BasisRequest, basis: SubspaceBasis) -> None:
        record = {
            "fingerprint": fingerprint(request),
            "module": request.base_key,
            "transposed": request.transposed,
        }
        try:
            write_basis_file(self.path_for(request), basis, record)
        except OSError as error:
            raise CsuloraError(
                f"cannot write the cache ({error.strerror})",
                where=str(self.directory),
                hint="pass --cache-dir to use another folder",
            ) from None

    @property
    def digest_memo_dir(self) -> Path:
        return self.directory / "file-digests"

    @property
    def hub_metadata_dir(self) -> Path:
        """Resolved refs, commit file lists and shard headers of Hub repos (tensor data stays in the HF cache)."""
        return self.directory / "hub"


def _file_name(base_key: str, transposed: bool) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base_key)
    return f"{safe}{'.T' if transposed else ''}.safetensors"


def prepare_subspace_folder(folder: Path, sources: dict, params: EstimationParams, overwrite: bool) -> None:
    """Create (or join) a portable subspace folder before any basis is written into it.

    Several jobs (a Slurm array, a CI matrix) may fill one folder with different modules: a folder that
    already holds a subspace of the same sources and parameters is joined, never replaced. Anything
    else there is kept unless `overwrite` is given.
    """
    manifest = {
        "schema_version": SUBSPACE_SCHEMA_VERSION,
        "tool": {"name": "csulora", "version": __version__},
        "sources": sources,
        "estimation": params.as_dict(),
    }
    manifest_path = folder / SUBSPACE_MANIFEST
    if folder.exists():
        if not folder.is_dir():
            raise CsuloraError("output exists and is not a folder", where=str(folder))
        existing = _read_manifest(manifest_path) if manifest_path.is_file() else None
        # An older schema lacks what this version writes (right vectors): never mixed into one folder.
        compatible = existing is not None and all(
            existing.get(key) == manifest[key] for key in ("schema_version", "sources", "estimation")
        )
        if not compatible and any(folder.iterdir()):
            if not overwrite:
                what = "a subspace of other sources or parameters" if existing else "other files"
                raise OutputExistsError(
                    f"output holds {what}", where=str(folder), hint="pass --overwrite to replace it"
                )
            shutil.rmtree(folder)
    (folder / "bases").mkdir(parents=True, exist_ok=True)
    _write_text_atomically(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def add_to_subspace_folder(folder: Path, request: BasisRequest, basis: SubspaceBasis) -> None:
    record = {"fingerprint": fingerprint(request), "module": request.base_key, "transposed": request.transposed}
    write_basis_file(folder / "bases" / _file_name(request.base_key, request.transposed), basis, record)


def _write_text_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


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
    needs no shared index file.
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
        self.modules = {}
        for path in sorted((folder / "bases").glob("*.safetensors")):
            header = read_header(path)
            try:
                record = json.loads(header.metadata["csulora"])
                key, transposed = record["module"], bool(record["transposed"])
                out_features = header.entries["basis"].shape[0]
            except (KeyError, ValueError, TypeError, IndexError):
                raise FormatError("not a csulora basis file", where=str(path)) from None
            self.modules[_index_key(key, transposed)] = {
                "key": key,
                "transposed": transposed,
                "path": path,
                "out_features": out_features,
            }

    def keys(self) -> set[str]:
        return {entry["key"] for entry in self.modules.values()}

    def entry(self, base_key: str, transposed: bool) -> dict:
        entry = self.modules.get(_index_key(base_key, transposed))
        if entry is None:
            orientation = "transposed " if transposed else ""
            raise MissingTensorError(
                f"no {orientation}basis for {base_key} in this subspace folder",
                where=str(self.folder),
                hint="estimate it with estimate-subspace --adapter ADAPTER --out DIR",
            )
        return entry

    def load(self, base_key: str, transposed: bool) -> SubspaceBasis:
        return read_basis_file(self.entry(base_key, transposed)["path"])[0]


def _index_key(base_key: str, transposed: bool) -> str:
    return f"{base_key}{'|T' if transposed else ''}"
