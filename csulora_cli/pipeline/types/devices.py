"""The devices a run may ask for: plain data, so that the command line lists them without importing torch.

`basis_source.resolve_device` turns a name into a torch device.
"""

from __future__ import annotations

from ...errors import UsageError

DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose cpu, cuda or auto", parameter="device")
