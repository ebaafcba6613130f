"""What the hardware runs fast, for choices that change speed, never meaning."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

# CPU flags of the bfloat16 matrix units (Intel AMX, AVX-512 BF16): with one, bfloat16 products beat
# float32 several times over; without, they are emulated and slower (docs/performance.md).
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
