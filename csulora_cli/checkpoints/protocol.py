"""What every checkpoint source provides: `LocalSource` (local.py) and `HubSource` (hub/source.py).

`ModelFiles` is the part that needs no tensors (where the model is, its card and config): a model known
only from what a subspace folder recorded (`recorded.py`) offers that much too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import torch

from .description import SourceDescription, TextFile
from .header import TensorEntry


class ModelFiles(Protocol):
    """A model named by where it is, whose small text files can be read."""

    def describe(self) -> SourceDescription:
        """Where the model is, as reports record it."""
        ...

    def text_file(self, name: str) -> TextFile | None:
        """A small text file of the model (`README.md`, `config.json`), read once; None when it is absent or
        cannot be read."""
        ...


class TensorSource(ModelFiles, Protocol):
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

    def model_config(self) -> dict:
        """The checkpoint's `config.json` ({} when absent or unreadable): its `model_type` names layouts."""
        ...
