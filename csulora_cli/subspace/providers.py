"""Where bases come from at run time: the `BasisProvider` protocol, and `FolderProvider` for a portable
subspace folder. `estimating.py` holds the other provider, which estimates from a base/aligned pair.

Both answer the same questions (which keys exist, what shape, the basis of a module), so the pipeline
never learns which one it is talking to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ..errors import MissingTensorError
from .estimate import SubspaceBasis
from .folder import SubspaceFolder
from .keys import Target


@dataclass(frozen=True)
class BasisOrigin:
    """Where a module's basis came from, for the report's provenance: its file (None when it was never
    written, e.g. an unwritable cache) and the content ids of the checkpoint bytes it was estimated from."""

    file: Path | None
    base_content: str | None
    aligned_content: str | None
    sha256: str | None = None  # the file's, when known without reading it (this run wrote it, or the memo has it)


class BasisProvider(Protocol):
    def keys(self) -> set[str]: ...

    def orientations(self, base_key: str) -> dict[bool, int]:
        """For a provider without shapes: {transposed: out_features} of the bases it holds for a key."""
        ...

    def stored_shape(self, base_key: str) -> tuple[int, ...] | None: ...

    def bases(self, targets: list[Target]) -> Iterator[tuple[Target, SubspaceBasis, bool]]:
        """Yield (target, basis, from_cache) in the order given."""
        ...

    def describe(self) -> dict: ...

    def origin(self, target: Target) -> BasisOrigin: ...


def on_device(basis: SubspaceBasis, device: torch.device) -> SubspaceBasis:
    right = None if basis.right is None else basis.right.to(device)
    return SubspaceBasis(
        basis.basis.to(device), basis.singular_values.to(device), basis.total_energy, basis.reference_energy, right
    )


class FolderProvider:
    """Bases from a portable subspace folder written by `estimate-subspace --out`."""

    def __init__(self, folder: SubspaceFolder, device: torch.device, hub: dict | None = None):
        self.folder = folder
        self.device = device
        self.hub = hub  # the Hub repo the folder was fetched from (repo, revision, commit), if any

    def keys(self) -> set[str]:
        return self.folder.keys()

    def stored_shape(self, base_key: str) -> tuple[int, ...] | None:
        return None

    def orientations(self, base_key: str) -> dict[bool, int]:
        return {
            entry["transposed"]: entry["out_features"]
            for entry in self.folder.modules.values()
            if entry["key"] == base_key
        }

    def bases(self, targets: list[Target]) -> Iterator[tuple[Target, SubspaceBasis, bool]]:
        for target in targets:
            self.folder.entry(target.base_key, target.transposed)  # fail fast on any missing entry
        for target in targets:
            yield target, on_device(self.folder.load(target.base_key, target.transposed), self.device), True

    def describe(self) -> dict:
        return {
            "folder": str(self.folder.folder.resolve()),
            "base": self.folder.sources.get("base"),
            "aligned": self.folder.sources.get("aligned"),
            "estimation": self.folder.estimation,
        } | ({} if self.hub is None else {"hub": self.hub})

    def missing_weight(self, module_name: str, key: str) -> MissingTensorError:
        return MissingTensorError(
            f"no basis for adapter module {module_name} ({key}) in this subspace folder",
            where=str(self.folder.folder),
            hint="estimate it with estimate-subspace {adapter} ADAPTER {out} DIR",
        )

    def origin(self, target: Target) -> BasisOrigin:
        entry = self.folder.entry(target.base_key, target.transposed)
        record = entry["record"]
        return BasisOrigin(entry["path"], record.get("base_content"), record.get("aligned_content"))
