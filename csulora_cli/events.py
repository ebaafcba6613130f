"""The sink for progress and warnings that long operations report to (the CLI's output, or nothing).

It lives apart from the requests so the I/O layer (Hub downloads) can report progress without
learning about requests or results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Advance = Callable[..., None]  # advance(steps=1): move a task forward


class Events(Protocol):
    """What a command reports while it runs; pass one to `estimate_subspace`, `correct`, `inspect` or
    `push_output` to see it (the CLI's `Output` prints it). The default, `SilentEvents`, drops everything."""

    def warn(self, message: str) -> None:
        """Called for what the user should know that does not stop the run: a base/aligned order the sources
        contradict, an adapter's full weight tensors copied uncorrected, a cache entry recomputed. `message` is
        one line; flags in it are still `{parameter}` placeholders (the CLI spells them)."""
        ...

    def start(self, description: str, total: int | None, *, in_bytes: bool = False) -> Advance:
        """Called when a task begins (estimating bases, reading shards, a Hub transfer): `total` steps, or
        bytes when `in_bytes`, None when unknown. Returns `advance(steps=1)`, which the task calls as it moves
        on; the task is over when its steps reach `total`."""
        ...


class SilentEvents:
    """The `Events` that reports nothing: the API's default, for scripts that only want the results."""

    def warn(self, message: str) -> None:
        """Drops the warning; the result still carries what the report records."""

    def start(self, description: str, total: int | None, *, in_bytes: bool = False) -> Advance:
        """Returns an `advance` that does nothing."""
        return _ignore


def _ignore(steps: int = 1) -> None:
    pass
