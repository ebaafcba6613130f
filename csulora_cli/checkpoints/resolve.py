"""A tensor source from what the user typed: a local folder if one exists, else a Hub repo id."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CsuloraError
from .hub.client import HubClient
from .hub.refs import HubRef, parse_hub_ref
from .hub.snapshots import HubSnapshot
from .hub.source import HubSource
from .local import LocalSource
from .protocol import TensorSource


def resolve_model(spec: str, *, digest_memo_dir: Path | None = None, hub: HubClient | None = None) -> TensorSource:
    """A model source from what the user typed: a local folder if one exists, else a Hub repo id."""
    path = Path(spec).expanduser()
    if path.exists():
        return LocalSource(path, digest_memo_dir=digest_memo_dir)
    ref = parse_hub_ref(spec)
    if ref is None or hub is None:
        raise CsuloraError(
            "no such local folder, and not a Hugging Face repo id (org/name or org/name@revision)", where=spec
        )
    with no_local_folder(spec):
        return HubSource(ref, hub)


def hub_snapshot(spec: str, hub: HubClient, what: str) -> tuple[HubRef, HubSnapshot]:
    """The Hub snapshot a name that is no local folder stands for, resolved through the run's client; a name
    that is not a repo id either is one error naming `what` (an adapter, a model) was looked for."""
    ref = parse_hub_ref(spec)
    if ref is None:
        raise CsuloraError(
            f"{what} folder does not exist, and it is not a Hugging Face repo id (org/name or org/name@revision)",
            where=spec,
        )
    with no_local_folder(spec):
        return ref, hub.snapshot(ref)


@contextmanager
def no_local_folder(spec: str) -> Iterator[None]:
    """A Hub failure for a name that is no local folder either says that first: `adaptr` is more often a
    typo for a folder than a repo id, and a Hub error alone sends the reader looking at the network."""
    try:
        yield
    except CsuloraError as error:
        as_repo = error.where or spec
        error.message = f"no local folder of that name, and as a Hub repo ({as_repo}): {error.message}"
        error.where = spec
        raise
