"""What the hardware runs fast, for choices that change speed, never meaning."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

# CPU flags of the bfloat16 matrix units (Intel AMX, AVX-512 BF16 on Intel and AMD): with one of them,
# oneDNN multiplies bfloat16 matrices 3-6x faster than float32 (8192 x 2048 by 2048 x 266 on one core:
# 30 ms against 90 ms, measured); without, bfloat16 products are emulated and slower than float32.
_BFLOAT16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}


def bfloat16_is_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(_cpu_flags() & _BFLOAT16_CPU_FLAGS)


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The `flags` of /proc/cpuinfo (Linux); empty elsewhere, which keeps every product in float32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()
