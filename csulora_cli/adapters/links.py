"""Symbolic links among an adapter's files: refused, never followed.

A link in an adapter folder (to a token file, another run's weights) would be read, and its target's bytes
copied into the corrected adapter that is then shared or served. The one exception is a Hugging Face cache
snapshot (`.../models--org--name/snapshots/<commit>/`), which stores every file as a link into its repo's
own `blobs/` folder; a link there that resolves to one of those blobs is the file itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import LinkRefusedError

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def refuse_links(folder: Path) -> None:
    """Raise on the first entry of `folder` that is a symbolic link, unless it is a blob of its HF snapshot.

    `folder` itself may be a link (`latest -> run-17`): the user named it, and only its entries are
    checked. Subfolders are neither read nor copied, so what they hold does not matter.
    """
    blobs = hub_snapshot_blobs(folder)
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() and not _is_blob(entry, blobs):
            raise LinkRefusedError(
                f"is a symbolic link (to {os.readlink(entry)}); links in an adapter folder are never followed, so a "
                "linked file cannot be read or copied into the output by mistake",
                where=str(entry),
                hint="if the file is meant, copy it in with cp -L",
            )


def hub_snapshot_blobs(folder: Path) -> Path | None:
    """The `blobs/` folder of the Hugging Face cache repo whose snapshot holds `folder`, or None."""
    resolved = folder.resolve()
    for snapshot in (resolved, *resolved.parents):
        snapshots = snapshot.parent
        if (
            _COMMIT.match(snapshot.name)
            and snapshots.name == "snapshots"
            and snapshots.parent.name.startswith("models--")
        ):
            return (snapshots.parent / "blobs").resolve()
    return None


def _is_blob(entry: Path, blobs: Path | None) -> bool:
    if blobs is None:
        return False
    try:
        target = entry.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop
        return False
    return target.parent == blobs and target.is_file()
