"""The dtypes a model may be loaded in: plain data, so that a request checks them without importing torch."""

from __future__ import annotations

from ..errors import UsageError

# "auto": float32 on the CPU (bf16 matmuls there are slow and round log-probabilities), bfloat16 on a GPU.
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPE_NAMES:
        raise UsageError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_NAMES)}", parameter="dtype")
