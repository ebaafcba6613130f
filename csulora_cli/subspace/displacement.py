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

# V is formed this many bytes of float32 rows at a time, from plain reads of the stored tensors.
BLOCK_BYTES = 16 << 20
# ||W_b||^2 only scales the no-signal threshold (1e-12 of it), so every 8th row estimates it well enough
# at an eighth of the cost; NaN/Inf anywhere in W_b still shows in V's energy.
REFERENCE_ROW_STRIDE = 8


@dataclass(frozen=True)
class Displacement:
    """matrix: (m, n) float32 as stored (not yet oriented); its exact energy and the base's, estimated."""

    matrix: torch.Tensor
    total_energy: float
    reference_energy: float


def form_displacement(base: TensorSource, aligned: TensorSource, key: str, device: torch.device) -> Displacement:
    rows, columns = base.entry(key).shape
    matrix = torch.empty(rows, columns, dtype=torch.float32, device=device)
    step = max(1, BLOCK_BYTES // (columns * 4))
    sampled_energy, sampled_rows, total_energy = 0.0, 0, 0.0
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        block = matrix[start:stop]
        block.copy_(aligned.read_rows(key, start, stop))
        base_block = base.read_rows(key, start, stop).to(device)
        block.sub_(base_block)
        total_energy += frobenius_energy(block)  # while the block is still in the CPU's caches
        sampled = base_block[(-start) % REFERENCE_ROW_STRIDE :: REFERENCE_ROW_STRIDE]
        sampled_energy += frobenius_energy(sampled)
        sampled_rows += sampled.shape[0]
        del base_block, sampled
    reference_energy = sampled_energy * rows / max(sampled_rows, 1)
    if not math.isfinite(total_energy):  # a NaN/Inf weight makes the energy non-finite
        del matrix
        _refuse_non_finite(base, aligned, key)
    return Displacement(matrix, total_energy, reference_energy)


def _refuse_non_finite(base: TensorSource, aligned: TensorSource, key: str) -> None:
    rows = base.entry(key).shape[0]
    for source in (base, aligned):
        for start in range(0, rows, 64):
            if not torch.isfinite(source.read_rows(key, start, min(rows, start + 64))).all():
                raise CsuloraError(f"tensor {key} holds NaN or Inf values", where=source.name)
    raise CsuloraError(f"the displacement of {key} is too large to square in float32", where=aligned.name)
