"""What every checkpoint source provides: `LocalSource` (local.py) and `HubSource` (hub/source.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import torch

from .header import TensorEntry


class TensorSource(Protocol):
    """A model checkpoint that can be read tensor by tensor."""

    name: str  # what the user passed, for messages and reports

    def keys(self) -> list[str]: ...

    def entry(self, key: str) -> TensorEntry: ...

    def plan_reads(self, keys: Iterable[str]) -> None:
        """The keys a job is about to read, so a remote source can choose how to fetch them."""
        ...

    def read_many(self, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (key, tensor) for each key, in an order that reads each file once."""
        ...

    def read_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of a tensor, in its stored dtype, in memory of their own (no file mapping)."""
        ...

    def prefetch(self, key: str) -> None:
        """`key` is read soon: start moving its bytes closer (page cache, or memory for remote sources)."""
        ...

    def content_id(self, key: str) -> str:
        """A string that changes whenever the bytes of `key` may have changed (a content hash)."""
        ...

    def describe(self) -> dict:
        """What the report records about this source."""
        ...

    def model_config(self) -> dict:
        """The checkpoint's `config.json` ({} when absent or unreadable): its `model_type` names layouts."""
        ...
