"""How a basis is estimated and how much of it is kept: plain data, checked when made.

Kept apart from the numerics in `estimate.py` so that the command line can show these defaults
without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

# The share of ||V||^2 a basis keeps unless asked otherwise (`energy` of every command and request).
DEFAULT_ENERGY = 0.99


@dataclass(frozen=True)
class EstimationParams:
    """How a basis is estimated; part of every cache key."""

    max_rank: int = 256
    exact: bool = False
    oversample: int = 10
    # One round of subspace iteration: on the synthetic Llama-3.2-1B pair it matched two rounds to
    # 0.01 degree of principal angle at 20-35% less time (docs/performance.md).
    power_iterations: int = 1
    seed: int = 0

    def check(self) -> None:
        """Refuse what a user may not ask for (the math itself handles max_rank 0: an empty basis)."""
        if self.max_rank < 1:
            raise UsageError(f"must be at least 1, got {self.max_rank}", parameter="max_rank")
        if self.power_iterations < 0:
            raise UsageError(f"must be at least 0, got {self.power_iterations}", parameter="power_iterations")

    def as_dict(self) -> dict:
        return {
            "max_rank": self.max_rank,
            "exact": self.exact,
            "oversample": self.oversample,
            "power_iterations": self.power_iterations,
            "seed": self.seed,
        }


def check_energy(energy: float) -> None:
    """The share of ||V||^2 to keep; also refuses NaN."""
    if not 0.0 < energy <= 1.0:
        raise UsageError(f"must be in (0, 1], got {energy}", parameter="energy")


# How a portable subspace folder stores its bases and right vectors: float16 halves a published folder
# (docs/performance.md, "Size of a published subspace folder"); readers upcast to float32. The basis
# cache always keeps float32.
STORAGES = ("float32", "float16")


def check_storage(storage: str) -> None:
    if storage not in STORAGES:
        raise UsageError(f"unknown storage {storage!r}; choose float32 or float16", parameter="storage")


# Which space a folder's basis vectors live in. Output: each module's output space (rows = out_features), what
# the weight-difference bases and a refusal direction hold, and what B's columns live in. Input: the module's
# input space (rows = in_features), what an activation folder of input directions holds, read by A's rows.
OUTPUT_SIDE = "output"
INPUT_SIDE = "input"
SIDES = (OUTPUT_SIDE, INPUT_SIDE)

# The ridge of an activation subspace, relative to the contrast's mean eigenvalue (docs/method.md section 12):
# Sigma_contrast + RIDGE * tr(Sigma_contrast) / n * I is invertible however few contrast tokens there are.
DEFAULT_RIDGE = 1e-2
