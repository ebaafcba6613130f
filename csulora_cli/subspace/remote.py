"""A subspace folder published on the Hub (`--subspace org/name[@revision]`), fetched as little as needed.

Its description (`subspace.json`) is read first, then only the basis files of the modules the adapters
target: a repo of another schema, or one that lacks a targeted module, is refused before any basis moves.
The files land in the standard HF cache at the resolved commit; the snapshot is then read as a folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..adapters.peft import LoraAdapter
from ..checkpoints.description import SourceDescription
from ..checkpoints.hub.client import HubClient
from ..checkpoints.hub.refs import HubRef, endpoint_label
from ..errors import FormatError, MissingTensorError
from .folder import SUBSPACE_MANIFEST, SUBSPACE_SCHEMA_VERSION
from .targets import base_weight_key

BASES = "bases/"
SUFFIX = ".safetensors"


def fetch_subspace(ref: HubRef, hub: HubClient, adapters: list[LoraAdapter]) -> tuple[Path, SourceDescription]:
    """(the local snapshot folder holding the description and the needed bases, where it came from)."""
    snapshot = hub.snapshot(ref)
    if SUBSPACE_MANIFEST not in snapshot.files:
        raise MissingTensorError(f"not a csulora subspace repo: no {SUBSPACE_MANIFEST}", where=snapshot.where())
    manifest_path = hub.download(snapshot, SUBSPACE_MANIFEST)
    try:
        schema = json.loads(manifest_path.read_text()).get("schema_version")
    except (OSError, ValueError, AttributeError):
        raise FormatError("not a subspace description", where=snapshot.where(SUBSPACE_MANIFEST)) from None
    if schema != SUBSPACE_SCHEMA_VERSION:
        raise FormatError(
            f"a subspace of schema {schema}; this csulora reads schema {SUBSPACE_SCHEMA_VERSION}",
            where=snapshot.where(SUBSPACE_MANIFEST),
        )
    files_by_key = _basis_files(snapshot.files)
    needed: dict[str, None] = {}
    for adapter in adapters:
        for module in adapter.modules:
            try:
                key = base_weight_key(module, files_by_key)
            except MissingTensorError:
                raise MissingTensorError(
                    f"does not cover adapter module {module.name}: no basis for {module.name}.weight",
                    where=snapshot.where(),
                ) from None
            needed.update(dict.fromkeys(files_by_key[key]))
    for name in needed:
        hub.download(snapshot, name)
    return manifest_path.parent, SourceDescription.hub(ref.repo_id, ref.revision, snapshot.commit, endpoint_label())


def _basis_files(listing) -> dict[str, list[str]]:
    """{base key: its basis files (one per stored orientation)}, from the repo's file names alone."""
    files: dict[str, list[str]] = {}
    for name in listing:
        stem = name.removeprefix(BASES).removesuffix(SUFFIX)
        if not name.startswith(BASES) or not name.endswith(SUFFIX) or "/" in stem or stem.startswith("."):
            continue
        files.setdefault(stem.removesuffix(".T"), []).append(name)
    return files
