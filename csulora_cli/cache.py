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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import CsuloraError, FormatError, MissingTensorError
from .subspace import EstimationParams, SubspaceBasis

CACHE_FORMAT = 1
SUBSPACE_MANIFEST = "subspace.json"
SUBSPACE_SCHEMA_VERSION = 1

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


def _checksum(basis: torch.Tensor, singular_values: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in (basis, singular_values):
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_basis_file(path: Path, basis: SubspaceBasis, record: dict) -> None:
    """Write atomically: a reader sees the old file, the new file, or none, never a partial one."""
    basis_tensor = basis.basis.detach().to("cpu", torch.float32).contiguous()
    values = basis.singular_values.detach().to("cpu", torch.float32).contiguous()
    record = dict(
        record,
        total_energy=basis.total_energy,
        reference_energy=basis.reference_energy,
        checksum=_checksum(basis_tensor, values),
        tool_version=__version__,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(handle)
    try:
        save_file(
            {"basis": basis_tensor, "singular_values": values},
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
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            record = json.loads((handle.metadata() or {})["csulora"])
        basis, values = tensors["basis"], tensors["singular_values"]
    except (OSError, SafetensorError, KeyError, ValueError, TypeError) as error:
        raise FormatError(f"damaged subspace file ({type(error).__name__})", where=str(path)) from None
    if record.get("checksum") != _checksum(basis, values):
        raise FormatError("damaged subspace file (checksum mismatch)", where=str(path))
    if basis.dim() != 2 or values.shape != (basis.shape[1],):
        raise FormatError("damaged subspace file (inconsistent shapes)", where=str(path))
    return SubspaceBasis(basis, values, float(record["total_energy"]), float(record["reference_energy"])), record


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


def _file_name(base_key: str, transposed: bool) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base_key)
    return f"{safe}{'.T' if transposed else ''}.safetensors"


def write_subspace_folder(folder: Path, entries: list[tuple[BasisRequest, SubspaceBasis]], sources: dict) -> None:
    """A portable subspace folder: a manifest and one basis file per module (what CI uploads)."""
    modules = {}
    (folder / "bases").mkdir()
    for request, basis in entries:
        name = _file_name(request.base_key, request.transposed)
        write_basis_file(
            folder / "bases" / name,
            basis,
            {
                "fingerprint": fingerprint(request),
                "module": request.base_key,
                "transposed": request.transposed,
            },
        )
        modules[f"{request.base_key}{'|T' if request.transposed else ''}"] = {
            "key": request.base_key,
            "transposed": request.transposed,
            "file": f"bases/{name}",
            "out_features": basis.out_features,
            "stored_rank": basis.basis.shape[1],
            "total_energy": basis.total_energy,
        }
    params = entries[0][0].params.as_dict() if entries else {}
    manifest = {
        "schema_version": SUBSPACE_SCHEMA_VERSION,
        "tool": {"name": "csulora", "version": __version__},
        "sources": sources,
        "estimation": params,
        "modules": modules,
    }
    (folder / SUBSPACE_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


class SubspaceFolder:
    """A portable subspace folder read back: bases looked up by base key and orientation."""

    def __init__(self, folder: Path):
        self.folder = folder
        manifest_path = folder / SUBSPACE_MANIFEST
        if not folder.is_dir():
            raise CsuloraError("subspace folder does not exist", where=str(folder))
        try:
            self.manifest = json.loads(manifest_path.read_text())
            self.modules = self.manifest["modules"]
            self.sources = self.manifest.get("sources", {})
            self.estimation = self.manifest.get("estimation", {})
        except FileNotFoundError:
            raise MissingTensorError(f"not a subspace folder: no {SUBSPACE_MANIFEST}", where=str(folder)) from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise FormatError(f"not a subspace manifest ({error})", where=str(manifest_path)) from None
        if not isinstance(self.modules, dict):
            raise FormatError("modules is not a JSON object", where=str(manifest_path))

    def keys(self) -> set[str]:
        return {entry["key"] for entry in self.modules.values()}

    def entry(self, base_key: str, transposed: bool) -> dict:
        entry = self.modules.get(f"{base_key}{'|T' if transposed else ''}")
        if not isinstance(entry, dict):
            orientation = "transposed " if transposed else ""
            raise MissingTensorError(
                f"no {orientation}basis for {base_key} in this subspace folder",
                where=str(self.folder),
                hint="estimate it with estimate-subspace --adapter ADAPTER --out DIR",
            )
        return entry

    def load(self, base_key: str, transposed: bool) -> SubspaceBasis:
        entry = self.entry(base_key, transposed)
        path = (self.folder / str(entry.get("file", ""))).resolve()
        if self.folder.resolve() not in path.parents:
            raise FormatError(
                f"file for {base_key} points outside the folder", where=str(self.folder / SUBSPACE_MANIFEST)
            )
        return read_basis_file(path)[0]
