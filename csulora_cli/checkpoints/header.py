"""Reading and checking a safetensors header without touching tensor data.

The format: 8 bytes little-endian header length N, N bytes of JSON mapping tensor names to
{dtype, shape, data_offsets}, then the data. Checking it ourselves lets a truncated or hostile file
fail with one clear line naming the file and tensor before any bytes are mapped.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FormatError

# safetensors itself refuses headers above 100 MB; a larger one is not a checkpoint.
MAX_HEADER_BYTES = 100_000_000

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
DTYPE_NAMES = {value: key for key, value in DTYPES.items()}

# Other dtypes may sit in the same shard (int buffers, fp8 scales); their sizes let the header be
# checked, and only tensors the work reads must be one of DTYPES.
OTHER_DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "I32": 4,
    "U32": 4,
    "I64": 8,
    "U64": 8,
}


def raw_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's data exactly as safetensors stores it (little-endian, row-major)."""
    if tensor.numel() == 0:
        return b""
    # Flattened first: a contiguous tensor with a dimension of size 1 (a one-column basis from QR) may keep a
    # stride there that `view` refuses, though its bytes are already in row-major order.
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    def readable_dtype(self) -> torch.dtype:
        """The dtype to read this tensor as; refuses integer and 8-bit tensors with a clear line."""
        if self.dtype not in DTYPES:
            supported = ", ".join(sorted(DTYPES))
            raise FormatError(
                f"stored dtype {self.dtype} cannot be corrected (supported: {supported})", where=self.name
            )
        return DTYPES[self.dtype]


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    header_bytes: bytes
    data_start: int
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and validate the header of `path`; raises FormatError naming the file and tensor."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            header_length = header_length_of(prefix, size, str(path))
            header_bytes = handle.read(header_length)
    except OSError as error:
        raise FormatError(f"cannot read: {error.strerror or error}", where=str(path)) from None
    return parse_header(header_bytes, size, path)


def header_length_of(prefix: bytes, file_size: int, where: str) -> int:
    """The header length N from a file's first 8 bytes, checked against the file size."""
    if len(prefix) < 8:
        raise FormatError("not a safetensors file: shorter than its 8-byte header length", where=where)
    (header_length,) = struct.unpack("<Q", prefix[:8])
    if header_length > MAX_HEADER_BYTES or 8 + header_length > file_size:
        raise FormatError(
            f"not a safetensors file: header length {header_length} exceeds the file size {file_size}",
            where=where,
        )
    return header_length


def parse_header(header_bytes: bytes, file_size: int, path: Path) -> SafetensorsHeader:
    """Validate the N header bytes of a file of `file_size` bytes (local, or read by range from the Hub).

    `path` names the file in messages: a local path, or `repo@commit/filename` for a remote file.
    """
    try:
        raw = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"not a safetensors file: header is not valid JSON ({error})", where=str(path)) from None
    if not isinstance(raw, dict):
        raise FormatError("not a safetensors file: header is not a JSON object", where=str(path))
    data_start = 8 + len(header_bytes)
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise FormatError("__metadata__ is not a JSON object", where=str(path))
    entries = {name: _entry(path, name, info, data_start, file_size) for name, info in raw.items()}
    return SafetensorsHeader(path, header_bytes, data_start, entries, metadata)


def _entry(path: Path, name: str, info: object, data_start: int, size: int) -> TensorEntry:
    where = f"{path} [{name}]"
    if not isinstance(info, dict):
        raise FormatError("tensor entry is not a JSON object", where=where)
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise FormatError(f"bad shape {shape!r}", where=where)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise FormatError(f"bad data_offsets {offsets!r}", where=where)
    if dtype in DTYPES:
        itemsize = DTYPES[dtype].itemsize
    elif dtype in OTHER_DTYPE_SIZES:
        itemsize = OTHER_DTYPE_SIZES[dtype]
    else:
        itemsize = None  # a dtype this version does not know (sub-byte formats): not checked, never read
    if not isinstance(dtype, str):
        raise FormatError(f"bad dtype {dtype!r}", where=where)
    expected = None if itemsize is None else math.prod(shape) * itemsize
    if expected is not None and offsets[1] - offsets[0] != expected:
        raise FormatError(
            f"data_offsets span {offsets[1] - offsets[0]} bytes but shape {shape} in {dtype} needs {expected}",
            where=where,
        )
    start, end = data_start + offsets[0], data_start + offsets[1]
    if end > size:
        raise FormatError(f"data ends at byte {end} but the file has {size} bytes (truncated?)", where=where)
    return TensorEntry(name, dtype, tuple(shape), start, end)
