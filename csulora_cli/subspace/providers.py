"""Where bases come from at run time: the `BasisProvider` protocol, `SubspaceDescription` (what a provider
says of itself), and `FolderProvider` for a portable subspace folder. `estimating.py` holds the other
provider, which estimates from a base/aligned pair.

Both answer the same questions (which keys exist, what shape, the basis of a module), so the pipeline
never learns which one it is talking to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ..checkpoints.description import SourceDescription
from ..checkpoints.protocol import ModelFiles
from ..checkpoints.recorded import RecordedModel
from ..errors import MissingTensorError
from .estimate import SubspaceBasis
from .folder import SubspaceFolder
from .keys import Target
from .params import OUTPUT_SIDE


@dataclass(frozen=True)
class BasisOrigin:
    """Where a module's basis came from, for the report's provenance: its file (None when it was never
    written, e.g. an unwritable cache) and the content ids of the checkpoint bytes it was estimated from."""

    file: Path | None
    base_content: str | None
    aligned_content: str | None
    sha256: str | None = None  # the file's, when known without reading it (this run wrote it, or the memo has it)


@dataclass(frozen=True)
class SubspaceDescription:
    """Where a run's bases come from: a base/aligned pair through a cache, or a subspace folder (perhaps
    fetched from a Hub repo). `to_dict()` is the start of the report's `subspace` record."""

    base: SourceDescription | None  # None: a folder that does not record it in a form this csulora reads
    aligned: SourceDescription | None
    estimation: dict  # `EstimationParams.as_dict()`, or what the folder records
    cache: Path | None = None  # a pair: the cache its bases go through
    folder: Path | None = None  # a subspace folder, resolved
    hub: SourceDescription | None = None  # the Hub repo the folder was fetched from
    # A folder's `sources` as its manifest holds them: the report repeats them as written, whatever their shape.
    recorded_sources: dict | None = None
    # The space the bases live in (`params.SIDES`): a method reading the other side is refused (`correct.py`).
    side: str = OUTPUT_SIDE

    @property
    def stored_max_rank(self) -> int | None:
        """The most columns a folder stores per module (its `max_rank`); None for a pair, whose bases are
        estimated at the run's own."""
        if self.folder is None or not isinstance(self.estimation, dict):
            return None
        stored = self.estimation.get("max_rank")
        return stored if isinstance(stored, int) else None

    def to_dict(self) -> dict:
        if self.folder is None:
            return {
                "base": None if self.base is None else self.base.to_dict(),
                "aligned": None if self.aligned is None else self.aligned.to_dict(),
                "estimation": self.estimation,
                "cache": str(self.cache),
            }
        recorded = self.recorded_sources or {}
        record = {
            "folder": str(self.folder),
            "base": recorded.get("base"),
            "aligned": recorded.get("aligned"),
            "estimation": self.estimation,
        }
        if self.hub is not None:
            # A subspace repo is always on the Hub: its record names no kind.
            record["hub"] = {key: value for key, value in self.hub.to_dict().items() if key != "kind"}
        return record


class BasisProvider(Protocol):
    side: str  # the space its bases live in (`params.SIDES`)

    def keys(self) -> set[str]: ...

    def orientations(self, base_key: str) -> dict[bool, int]:
        """For a provider without shapes: {transposed: rows} of the bases it holds for a key (out_features on the
        output side, in_features on the input side)."""
        ...

    def stored_shape(self, base_key: str) -> tuple[int, ...] | None: ...

    def bases(self, targets: list[Target]) -> Iterator[tuple[Target, SubspaceBasis, bool]]:
        """Yield (target, basis, from_cache) in the order given."""
        ...

    def describe(self) -> SubspaceDescription: ...

    def models(self) -> tuple[ModelFiles | None, ModelFiles | None]:
        """The base and aligned models the bases come from, as far as they are known (for the order check)."""
        ...

    def origin(self, target: Target) -> BasisOrigin: ...


def on_device(basis: SubspaceBasis, device: torch.device) -> SubspaceBasis:
    right = None if basis.right is None else basis.right.to(device)
    return SubspaceBasis(
        basis.basis.to(device), basis.singular_values.to(device), basis.total_energy, basis.reference_energy, right
    )


class FolderProvider:
    """Bases from a portable subspace folder written by `estimate-subspace --out`."""

    def __init__(self, folder: SubspaceFolder, device: torch.device, hub: SourceDescription | None = None):
        self.folder = folder
        self.device = device
        self.hub = hub  # the Hub repo the folder was fetched from, if any

    @property
    def side(self) -> str:
        return self.folder.side

    def keys(self) -> set[str]:
        return self.folder.keys()

    def stored_shape(self, base_key: str) -> tuple[int, ...] | None:
        return None

    def orientations(self, base_key: str) -> dict[bool, int]:
        return {
            entry["transposed"]: entry["rows"] for entry in self.folder.modules.values() if entry["key"] == base_key
        }

    def bases(self, targets: list[Target]) -> Iterator[tuple[Target, SubspaceBasis, bool]]:
        for target in targets:
            self.folder.entry(target.base_key, target.transposed)  # fail fast on any missing entry
        for target in targets:
            yield target, on_device(self.folder.load(target.base_key, target.transposed), self.device), True

    def describe(self) -> SubspaceDescription:
        sources = self.folder.sources
        return SubspaceDescription(
            base=SourceDescription.from_record(sources.get("base")),
            aligned=SourceDescription.from_record(sources.get("aligned")),
            estimation=self.folder.estimation,
            folder=self.folder.folder.resolve(),
            hub=self.hub,
            recorded_sources=sources,
            side=self.folder.side,
        )

    def models(self) -> tuple[ModelFiles | None, ModelFiles | None]:
        description = self.describe()
        base, aligned = description.base, description.aligned
        return (None if base is None else RecordedModel(base), None if aligned is None else RecordedModel(aligned))

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
