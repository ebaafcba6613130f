"""Basis files and the shared basis cache (docs/method.md section 7).

One safetensors file per module holding the max-rank basis, its singular values, V's right singular
vectors and a metadata record (fingerprint, energies, checksum). Files are written to a temporary name
and renamed, so several processes can fill one cache; a file that fails its checksum or fingerprint is
reported and recomputed. Portable subspace folders use the same files (`folder.py`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .. import __version__
from ..atomic import write_atomically
from ..checkpoints.digests import file_sha256, remember_sha256
from ..checkpoints.header import raw_bytes
from ..errors import CsuloraError, DiskFullError, FormatError
from .estimate import EstimationParams, SubspaceBasis

# 2: basis files also hold V's right singular vectors. The format is part of every fingerprint, so
# entries of an older format are never found (and are recomputed), never misread.
CACHE_FORMAT = 2

Warn = Callable[[str], None]


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


def basis_record(request: BasisRequest) -> dict:
    """What a basis file says of itself: its cache key, its module, and the checkpoint bytes behind it
    (the content ids the key hashes, kept readable so that a report can name the shards it came from)."""
    return {
        "fingerprint": fingerprint(request),
        "module": request.base_key,
        "transposed": request.transposed,
        "base_content": request.base_content,
        "aligned_content": request.aligned_content,
    }


def _checksum(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(raw_bytes(tensor))
    return digest.hexdigest()


# The dtypes a basis file may store its vectors in (`--storage`); singular values stay float32.
_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def write_basis_file(path: Path, basis: SubspaceBasis, record: dict, storage: str = "float32") -> str:
    """Write atomically: a reader sees the old file, the new file, or none, never a partial one.

    `storage` is the dtype of the basis and right vectors; readers upcast them to float32. Returns the
    file's sha256, hashed from the bytes in memory (a report then need not read the file back).
    """
    vectors = _STORAGE_DTYPES[storage]
    tensors = {
        "basis": basis.basis.to("cpu", vectors),
        "singular_values": basis.singular_values.to("cpu", torch.float32),
    }
    if basis.right is not None:
        tensors["right"] = basis.right.to("cpu", vectors)
    tensors = {name: tensor.detach().contiguous() for name, tensor in tensors.items()}
    record = dict(
        record,
        total_energy=basis.total_energy,
        reference_energy=basis.reference_energy,
        checksum=_checksum(*tensors.values()),
        tool_version=__version__,
    )
    # Serialized in memory and written by `write_atomically`, so a full disk is one error naming this file
    # and its size (safetensors' own file writer reports it as a generic SafetensorError).
    file_bytes = save(tensors, metadata={"csulora": json.dumps(record, sort_keys=True)})
    write_atomically(path, file_bytes, fsync=True)
    return hashlib.sha256(file_bytes).hexdigest()


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
    right = None if right is None else right.float()
    return SubspaceBasis(basis.float(), values.float(), *energies, right=right), record


class BasisCache:
    """The shared on-disk cache: `<dir>/bases/<fingerprint[:2]>/<fingerprint>.safetensors`.

    Unless the cache is the run's product (`required`: `estimate-subspace` without a folder to write),
    a cache that cannot be written (full, read-only, not a folder) is one warning: the run goes on with
    its bases in memory and stops trying to store them.
    """

    def __init__(self, directory: Path, warn: Warn, *, required: bool = False, digest_memo_dir: Path | None = None):
        self.directory = directory
        self.warn = warn
        self.required = required
        # Where file digests are remembered (checkpoints/digests.py): a basis file is hashed as it is written,
        # and a warm run reads that digest back instead of hashing the file again for its report.
        self.digest_memo_dir = digest_memo_dir
        self.writable = True
        # Estimators save from several threads: the first failure turns saving off and warns, once.
        self._failure = threading.Lock()
        # sha256 of the files this run wrote, by path, for the report's provenance.
        self.written: dict[Path, str] = {}

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

    def sha256_of(self, path: Path) -> str:
        """A basis file's digest for the report: from this run's write, the memo, or (once) the file."""
        return self.written.get(path) or file_sha256(path, self.digest_memo_dir)

    def save(self, request: BasisRequest, basis: SubspaceBasis) -> None:
        if not self.writable:
            return
        path = self.path_for(request)
        try:
            self.written[path] = write_basis_file(path, basis, basis_record(request))
            if self.digest_memo_dir is not None:
                remember_sha256(path, self.written[path], self.digest_memo_dir)
        except (OSError, DiskFullError) as error:
            if self.required:
                raise _cache_write_error(error, path, hint="pass {cache_dir} to use another folder") from None
            with self._failure:
                if not self.writable:
                    return
                self.writable = False
            # A warning, not a request: the run goes on, so no hint to act (nor a flag the API would not know).
            failure = _cache_write_error(error, path, hint=None)
            self.warn(f"{failure.one_line()}; the bases of this run are kept in memory and not cached")


def _cache_write_error(error: OSError | DiskFullError, path: Path, hint: str | None) -> CsuloraError:
    if isinstance(error, DiskFullError):
        return DiskFullError(f"cannot write the basis cache, {error.message}", where=error.where, hint=hint)
    return CsuloraError(f"cannot write the basis cache ({error.strerror or error})", where=str(path), hint=hint)
