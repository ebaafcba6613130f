"""How a run reaches the Hub: plain data, checked when made."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import UsageError

FETCH_MODES = ("auto", "shards", "ranges")


@dataclass(frozen=True)
class HubOptions:
    """`token` None means huggingface_hub's own lookup (HF_TOKEN, then `hf auth login`)."""

    fetch: str = "auto"
    token: str | None = field(default=None, repr=False)  # never printed, logged or reported

    def __post_init__(self) -> None:
        if self.fetch not in FETCH_MODES:
            raise UsageError(
                f"unknown fetch mode {self.fetch!r}; choose one of {', '.join(FETCH_MODES)}", parameter="fetch"
            )
