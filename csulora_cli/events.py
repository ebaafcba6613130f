"""The sink for progress and warnings that long operations report to (the CLI's output, or nothing).

It lives apart from the requests so the I/O layer (Hub downloads) can report progress without
learning about requests or results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Advance = Callable[..., None]  # advance(steps=1): move a task forward


class Events(Protocol):
    def warn(self, message: str) -> None: ...

    def start(self, description: str, total: int | None, *, in_bytes: bool = False) -> Advance:
        """Begin a task of `total` steps (bytes when `in_bytes`); returns `advance(steps=1)`."""
        ...


class SilentEvents:
    def warn(self, message: str) -> None:
        pass

    def start(self, description: str, total: int | None, *, in_bytes: bool = False) -> Advance:
        return _ignore


def _ignore(steps: int = 1) -> None:
    pass
