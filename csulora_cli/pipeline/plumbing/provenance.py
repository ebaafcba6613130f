"""A report's provenance: digests of the files that went in and came out, and of the bases behind them.

sha256 of whole files, so that `sha256sum` or `csulora verify` can check them without csulora's help.
Links are never followed: an adapter folder's links are refused when it is read, and a link found in an
output folder (csulora writes none) is named by where it points, so it never passes for the file it replaced.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from ...adapters.peft import LoraAdapter
from ...checkpoints.digests import sha256_of_file
from ...report.records import REPORT_FILE
from ...subspace.keys import Target
from ...subspace.providers import BasisProvider


def utc_now() -> str:
    """Now in UTC, or SOURCE_DATE_EPOCH when set (the reproducible-builds convention): two runs of the same
    command then write the same bytes."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def adapter_file_digests(adapter: LoraAdapter) -> dict[str, str]:
    """The adapter's own files, the ones csulora reads or copies."""
    return {name: sha256_of_file(adapter.folder / name) for name in adapter.files}


def output_file_digests(folder: Path) -> dict[str, str]:
    """Every file under an output folder, by relative POSIX path, except the report (which holds these)."""
    return {
        path.relative_to(folder).as_posix(): _entry_digest(path)
        for path in sorted(output_files(folder))
        if path.relative_to(folder).as_posix() != REPORT_FILE
    }


def _entry_digest(path: Path) -> str:
    """A file's sha256; for a link, the sha256 of where it points (a link to a folder has no bytes to hash)."""
    if path.is_symlink():
        return hashlib.sha256(b"link:" + os.fsencode(os.readlink(path))).hexdigest()
    return sha256_of_file(path)


def output_files(folder: Path) -> list[Path]:
    """Every non-folder entry under `folder` (links included, as entries, never followed)."""
    return [path for path in folder.rglob("*") if path.is_symlink() or not path.is_dir()]


def basis_records(provider: BasisProvider, targets: list[Target]) -> tuple[list[dict], dict[str, list[str]]]:
    """Each basis used (its file's digest and the checkpoint bytes behind it), and the checkpoint content
    ids of base and aligned model (the digests their cache keys already use), without the tensor names."""
    bases = []
    checkpoints: dict[str, set[str]] = {"base": set(), "aligned": set()}
    for target in targets:
        origin = provider.origin(target)
        bases.append(
            {
                "base_key": target.base_key,
                "transposed": target.transposed,
                "file": None if origin.file is None else origin.file.name,
                "sha256": None if origin.file is None else origin.sha256 or sha256_of_file(origin.file),
                "base_content": origin.base_content,
                "aligned_content": origin.aligned_content,
            }
        )
        for side, content in (("base", origin.base_content), ("aligned", origin.aligned_content)):
            if content:
                checkpoints[side].add(_without_tensor_name(content, target.base_key))
    return bases, {side: sorted(ids) for side, ids in checkpoints.items()}


def _without_tensor_name(content_id: str, base_key: str) -> str:
    return content_id.removesuffix(f":{base_key}")
