"""How many threads torch runs a model with on the CPU: never more than this process may run at once, and
one for a model too narrow to gain from more.

torch starts with one thread per core it counts, but a container's CPU quota or a task's affinity mask can
allow fewer, and threads beyond those wait on each other at every matrix product. A narrow model's products
are too small to split: its threads mostly wait for each other (docs/performance.md, "The probe on the CPU").
A smaller count the user set (OMP_NUM_THREADS, or `torch.set_num_threads` before the run) is kept.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
# Below this hidden size a matrix product is split across threads at a loss (measured: docs/performance.md).
NARROW_HIDDEN_SIZE = 256


def usable_cpus() -> int:
    """The CPUs this process may run on at once: its affinity mask, capped by a cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def cpu_threads(current: int, usable: int, hidden_size: int | None) -> int:
    """The thread count for a model of `hidden_size` on the CPU, from torch's `current` one."""
    if hidden_size is not None and hidden_size < NARROW_HIDDEN_SIZE:
        return 1
    return max(1, min(current, usable))


@contextmanager
def settled_cpu_threads(device: torch.device, hidden_size: int | None) -> Iterator[int]:
    """torch's intra-op threads set for the block (`cpu_threads`) when the model runs on the CPU, and
    restored after, so a Python caller's own setting outlives the run; yields the count used."""
    previous = torch.get_num_threads()
    if device.type != "cpu":
        yield previous
        return
    threads = cpu_threads(previous, usable_cpus(), hidden_size)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
