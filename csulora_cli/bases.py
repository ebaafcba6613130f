"""Where bases come from at run time: estimated from two sources (through the cache), or a subspace folder.

Both providers answer the same questions (which keys exist, what shape, the basis of a module), so
`api.py` never learns which one it is talking to.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import torch

from .cache import BasisCache, BasisRequest, SubspaceFolder
from .errors import CsuloraError, MissingTensorError, ShapeMismatchError
from .sources import TensorSource
from .subspace import EstimationParams, SubspaceBasis, estimate_basis, frobenius_energy

# Modules read ahead of the one being decomposed. Reading a module takes a tenth of decomposing it
# (3.3 s to read every targeted tensor of the 1B pair, 38 s to estimate them), so one is enough to keep
# the disk and the cores busy at once. Local reads ahead go to the page cache, not to this process.
PREFETCH_MODULES = 1
# V is formed this many bytes of float32 rows at a time, from plain reads of the stored tensors.
BLOCK_BYTES = 16 << 20
REFERENCE_ROW_STRIDE = 8


@dataclass(frozen=True)
class Target:
    """One basis to obtain: a base weight key and whether it is transposed to output-space form."""

    base_key: str
    transposed: bool


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


class EstimatingProvider:
    """Bases from a base/aligned pair: looked up in the cache, estimated and stored on a miss."""

    def __init__(
        self,
        base: TensorSource,
        aligned: TensorSource,
        cache: BasisCache,
        params: EstimationParams,
        device: torch.device,
    ):
        self.base = base
        self.aligned = aligned
        self.cache = cache
        self.params = params
        self.device = device
        self._base_keys = set(base.keys())
        self._aligned_keys = set(aligned.keys())

    def keys(self) -> set[str]:
        return self._base_keys

    def stored_shape(self, base_key: str) -> tuple[int, ...] | None:
        return self.base.entry(base_key).shape

    def orientations(self, base_key: str) -> dict[bool, int]:
        shape = self.stored_shape(base_key)
        return {False: shape[0], True: shape[1]}

    def check(self, targets: list[Target]) -> None:
        """Fail before any heavy work when a weight is missing or base and aligned disagree."""
        for target in targets:
            base_entry = self.base.entry(target.base_key)
            if target.base_key not in self._aligned_keys:
                raise MissingTensorError(
                    f"tensor {target.base_key} is in the base but not in the aligned model", where=self.aligned.name
                )
            aligned_entry = self.aligned.entry(target.base_key)
            if base_entry.shape != aligned_entry.shape:
                raise ShapeMismatchError(
                    f"base has shape {list(base_entry.shape)} but aligned has {list(aligned_entry.shape)}",
                    where=target.base_key,
                )
            if len(base_entry.shape) != 2:
                raise ShapeMismatchError(
                    f"expected a 2-D weight, got shape {list(base_entry.shape)}", where=target.base_key
                )
            base_entry.readable_dtype()  # refuse integer / fp8 weights by name before reading
            aligned_entry.readable_dtype()

    def request(self, target: Target) -> BasisRequest:
        return BasisRequest(
            base_key=target.base_key,
            transposed=target.transposed,
            base_content=self.base.content_id(target.base_key),
            aligned_content=self.aligned.content_id(target.base_key),
            params=self.params,
        )

    def bases(self, targets: list[Target]) -> Iterator[tuple[Target, SubspaceBasis, bool]]:
        """Bases in target order; a reader thread hashes, looks up and prefetches the next modules meanwhile.

        At most PREFETCH_MODULES modules are looked ahead, so the disk (or network) and the cores work at
        the same time while memory stays bounded by one module's float32 displacement.
        """
        self.check(targets)
        for source in (self.base, self.aligned):
            source.plan_reads([target.base_key for target in targets])
        remaining = iter(targets)
        in_flight: deque[tuple[Target, Future]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="csulora-reader") as reader:

            def fetch_next() -> None:
                target = next(remaining, None)
                if target is not None:
                    in_flight.append((target, reader.submit(self._fetch, target)))

            for _ in range(PREFETCH_MODULES):
                fetch_next()
            while in_flight:
                target, future = in_flight.popleft()
                request, cached = future.result()
                fetch_next()
                if cached is not None:
                    yield target, _on_device(cached, self.device), True
                    continue
                basis = self._estimate(target)
                self.cache.save(request, basis)
                yield target, basis, False

    def _fetch(self, target: Target) -> tuple[BasisRequest, SubspaceBasis | None]:
        """Reader thread: hash and look up the next module; on a miss, start its bytes moving closer."""
        request = self.request(target)
        cached = self.cache.load(request)
        if cached is None:
            self.base.prefetch(target.base_key)
            self.aligned.prefetch(target.base_key)
        return request, cached

    def _estimate(self, target: Target) -> SubspaceBasis:
        """Basis of V = W_a - W_b, formed block by block in one (m, n) float32 buffer.

        Only V and one block of each stored tensor are ever in memory: the peak is one float32 copy of
        the module plus a few MB, whatever the model size.
        """
        key = target.base_key
        rows, columns = self.base.entry(key).shape
        displacement = torch.empty(rows, columns, dtype=torch.float32, device=self.device)
        step = max(1, BLOCK_BYTES // (columns * 4))
        sampled_energy, sampled_rows = 0.0, 0
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            block = displacement[start:stop]
            block.copy_(self.aligned.read_rows(key, start, stop))
            base_block = self.base.read_rows(key, start, stop).to(self.device)
            block.sub_(base_block)
            # ||W_b||^2 only scales the no-signal threshold (1e-12 of it), so every 8th row estimates it
            # well enough at an eighth of the cost; NaN/Inf anywhere in W_b still shows in V's energy below.
            sampled = base_block[(-start) % REFERENCE_ROW_STRIDE :: REFERENCE_ROW_STRIDE]
            sampled_energy += frobenius_energy(sampled)
            sampled_rows += sampled.shape[0]
            del base_block, sampled
        reference_energy = sampled_energy * rows / max(sampled_rows, 1)
        total_energy = frobenius_energy(displacement)
        if not math.isfinite(total_energy):  # a NaN/Inf weight makes the energy non-finite
            del displacement
            self._refuse_non_finite(key)
        if target.transposed:
            displacement = displacement.T
        return estimate_basis(displacement, self.params, reference_energy=reference_energy, total_energy=total_energy)

    def _refuse_non_finite(self, key: str) -> None:
        rows = self.base.entry(key).shape[0]
        for source in (self.base, self.aligned):
            for start in range(0, rows, 64):
                if not torch.isfinite(source.read_rows(key, start, min(rows, start + 64))).all():
                    raise CsuloraError(f"tensor {key} holds NaN or Inf values", where=source.name)
        raise CsuloraError(f"the displacement of {key} is too large to square in float32", where=self.aligned.name)

    def describe(self) -> dict:
        return {
            "base": self.base.describe(),
            "aligned": self.aligned.describe(),
            "estimation": self.params.as_dict(),
            "cache": str(self.cache.directory),
        }


def _on_device(basis: SubspaceBasis, device: torch.device) -> SubspaceBasis:
    right = None if basis.right is None else basis.right.to(device)
    return SubspaceBasis(
        basis.basis.to(device), basis.singular_values.to(device), basis.total_energy, basis.reference_energy, right
    )


class FolderProvider:
    """Bases from a portable subspace folder written by `estimate-subspace --out`."""

    def __init__(self, folder: SubspaceFolder, device: torch.device):
        self.folder = folder
        self.device = device

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
            yield target, _on_device(self.folder.load(target.base_key, target.transposed), self.device), True

    def describe(self) -> dict:
        return {
            "folder": str(self.folder.folder.resolve()),
            "base": self.folder.sources.get("base"),
            "aligned": self.folder.sources.get("aligned"),
            "estimation": self.folder.estimation,
        }
