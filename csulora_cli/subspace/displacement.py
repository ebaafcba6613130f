"""V = W_aligned - W_base of one module, formed block by block from two tensor sources.

Only V and one block of each stored tensor are ever in memory: the peak is one float32 copy of the
module plus a few MB, whatever the model size. Nothing here estimates anything; `estimate.py` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checkpoints.protocol import TensorSource
from ..errors import CsuloraError
from .estimate import frobenius_energy

# V is formed this many bytes of float32 rows at a time: a block stays in the core's cache for the
# subtraction, its energy and its bfloat16 copy (block sizes compared in docs/performance.md).
BLOCK_BYTES = 2 << 20
# ||W_b||^2 only scales the no-signal threshold (1e-12 of it), so every 8th row estimates it well enough
# at an eighth of the cost; NaN/Inf anywhere in W_b still shows in V's energy.
REFERENCE_ROW_STRIDE = 8


@dataclass(frozen=True)
class Displacement:
    """matrix: (m, n) float32 as stored (not yet oriented); its exact energy and the base's, estimated.

    low_precision: the same matrix rounded to a cheaper dtype, when asked for (`estimate_basis` uses it).
    """

    matrix: torch.Tensor
    total_energy: float
    reference_energy: float
    low_precision: torch.Tensor | None = None


class Workspace:
    """Memory for V (and its bfloat16 steering copy) kept from one module to the next: each estimator thread has one.

    A fresh 64 MB tensor is mapped anew by the allocator and faults in page by page on first touch: 30 ms
    of the 100 ms it took to form an 8192 x 2048 V (measured), more than reading both tensors. A module's
    V lives only until its basis is estimated, so the next module may reuse the memory.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def tensor(self, rows: int, columns: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, torch.device(device))
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < rows * columns:
            self._buffers.pop(key, None)  # let the smaller one go before the larger one is made
            buffer = self._buffers[key] = torch.empty(rows * columns, dtype=dtype, device=device)
        return buffer[: rows * columns].view(rows, columns)


def form_displacement(
    base: TensorSource,
    aligned: TensorSource,
    key: str,
    device: torch.device,
    low_precision_dtype: torch.dtype | None = None,
    workspace: Workspace | None = None,
) -> Displacement:
    """V of `key`; in `workspace`'s memory when given (then valid only until its next use)."""
    rows, columns = base.entry(key).shape
    space = workspace or Workspace()
    matrix = space.tensor(rows, columns, torch.float32, device)
    # Rounded block by block while each block is in the cache: a pass of its own over V cost as much as
    # a bfloat16 product with it.
    low_precision = None if low_precision_dtype is None else space.tensor(rows, columns, low_precision_dtype, device)
    step = max(1, BLOCK_BYTES // (columns * 4))
    sampled_energy, sampled_rows, total_energy = 0.0, 0, 0.0
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        block = matrix[start:stop]
        block.copy_(aligned.read_rows(key, start, stop))
        base_block = base.read_rows(key, start, stop).to(device)
        block.sub_(base_block)
        total_energy += frobenius_energy(block)  # while the block is still in the CPU's caches
        if low_precision is not None:
            low_precision[start:stop].copy_(block)
        sampled = base_block[(-start) % REFERENCE_ROW_STRIDE :: REFERENCE_ROW_STRIDE]
        sampled_energy += frobenius_energy(sampled)
        sampled_rows += sampled.shape[0]
        del base_block, sampled
    reference_energy = sampled_energy * rows / max(sampled_rows, 1)
    if not math.isfinite(total_energy):  # a NaN/Inf weight makes the energy non-finite
        del matrix
        _refuse_non_finite(base, aligned, key)
    return Displacement(matrix, total_energy, reference_energy, low_precision)


def holds_the_same_weights(base: TensorSource, aligned: TensorSource, key: str) -> bool:
    """Whether both models store the same `key`, compared a block of rows at a time as stored: an unchanged
    weight (an embedding alignment left alone) is found with a few MB in memory, never a whole V.

    Tensors stored in different dtypes count as different; forming V then decides.
    """
    rows, columns = base.entry(key).shape
    step = max(1, BLOCK_BYTES // (columns * 4))
    return all(
        torch.equal(
            base.read_rows(key, start, min(rows, start + step)), aligned.read_rows(key, start, min(rows, start + step))
        )
        for start in range(0, rows, step)
    )


def _refuse_non_finite(base: TensorSource, aligned: TensorSource, key: str) -> None:
    rows = base.entry(key).shape[0]
    for source in (base, aligned):
        for start in range(0, rows, 64):
            if not torch.isfinite(source.read_rows(key, start, min(rows, start + 64))).all():
                raise CsuloraError(f"tensor {key} holds NaN or Inf values", where=source.name)
    raise CsuloraError(f"the displacement of {key} is too large to square in float32", where=aligned.name)
