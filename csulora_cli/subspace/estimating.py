"""Bases estimated from a base/aligned pair, through the cache: looked up first, estimated and stored on a
miss, with reads, lookups and estimation overlapped on threads (docs/performance.md).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import torch

from ..checkpoints.protocol import ModelFiles, TensorSource
from ..errors import MissingTensorError, ShapeMismatchError
from . import linalg
from .displacement import Workspace, form_displacement, holds_the_same_weights
from .estimate import EstimationParams, SubspaceBasis, estimate_basis, no_displacement, uses_sketch
from .hardware import bfloat16_is_fast
from .keys import Target
from .params import OUTPUT_SIDE
from .providers import BasisOrigin, SubspaceDescription, on_device
from .store import BasisCache, BasisRequest

# Modules read ahead of those being decomposed: reading takes a tenth of decomposing (docs/performance.md).
PREFETCH_MODULES = 1
# Estimated bases that may wait for an earlier module to finish (see `_bases_in_order`).
MAX_WAITING_BASES = 4
# Modules estimated at once on the CPU, one thread each: one module's factorisations overlap the other's
# products (docs/performance.md); each holds a displacement in memory, hence no more than two.
MAX_ESTIMATION_WORKERS = 2


class EstimatingProvider:
    """Bases from a base/aligned pair: looked up in the cache, estimated and stored on a miss."""

    side = OUTPUT_SIDE  # V's left singular vectors: each module's output space

    def __init__(
        self,
        base: TensorSource,
        aligned: TensorSource,
        cache: BasisCache,
        params: EstimationParams,
        device: torch.device,
        *,
        compare_first: bool = False,
    ):
        self.base = base
        self.aligned = aligned
        self.cache = cache
        self.params = params
        self.device = device
        # Estimating every weight of a model (no adapter named them) meets weights alignment left alone, the
        # embedding among them: compared block by block first, they never cost a whole V in memory.
        self.compare_first = compare_first
        # Each estimator thread forms V in memory of its own, reused from module to module.
        self._per_thread = threading.local()
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

        Beyond the modules the estimators work on, at most PREFETCH_MODULES are looked up and prefetched
        ahead, so the disk (or network) and the cores work at the same time while memory stays bounded by
        one module's displacement per estimator and MAX_WAITING_BASES finished bases.
        """
        self.check(targets)
        # Local sources start hashing the shards the targets need now, not when each shard's first module
        # comes up (checkpoints/digests.py); Hub sources choose between whole shards and byte ranges.
        for source in (self.base, self.aligned):
            source.plan_reads([target.base_key for target in targets])
        yield from self._bases_in_order(targets)

    def _bases_in_order(self, targets: list[Target]) -> Iterator[tuple[Target, SubspaceBasis, bool]]:
        """Modules go to `workers` estimators; the reader looks each one up (and prefetches it) first.

        Bases are yielded in target order, but an estimator that finishes is given the next module at once
        rather than when the oldest one is done: with a large module at the head of the line (an MLP
        projection, 0.3 s) and small ones behind it (k/v, 0.05 s), the other estimator otherwise sat idle
        for the difference, about a second of a cold 1B run (measured). Finished bases wait for their turn,
        at most MAX_WAITING_BASES of them (a basis is a few MB); modules not yet started are at most
        PREFETCH_MODULES, which bounds what a prefetch holds in memory.
        """
        workers, threads_each = estimation_workers(self.device)
        remaining = iter(targets)
        in_order: deque[tuple[Target, Future]] = deque()
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csulora-reader")
        estimators = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="csulora-estimate")

        def submit_more() -> None:
            while len(in_order) < workers + PREFETCH_MODULES + MAX_WAITING_BASES and (
                sum(not produced.done() for _, produced in in_order) < workers + PREFETCH_MODULES
            ):
                target = next(remaining, None)
                if target is None:
                    return
                lookup = reader.submit(self._fetch, target)
                in_order.append((target, estimators.submit(self._produce, target, lookup)))

        try:
            with linalg.threads(threads_each, self.device):
                submit_more()
                while in_order:
                    target, produced = in_order[0]
                    if not produced.done():
                        unfinished = [future for _, future in in_order if not future.done()]
                        wait(unfinished, return_when=FIRST_COMPLETED)  # the head, or one that frees an estimator
                        submit_more()
                        continue
                    in_order.popleft()
                    basis, from_cache = produced.result()
                    submit_more()
                    yield target, basis, from_cache
        finally:
            for pool in (estimators, reader):
                pool.shutdown(wait=True, cancel_futures=True)

    def _produce(self, target: Target, lookup: Future) -> tuple[SubspaceBasis, bool]:
        """Estimator thread: the cached basis, or one estimated now and stored."""
        request, cached = lookup.result()
        if cached is not None:
            return on_device(cached, self.device), True
        basis = self._estimate(target)
        self.cache.save(request, basis)
        return basis, False

    def _fetch(self, target: Target) -> tuple[BasisRequest, SubspaceBasis | None]:
        """Reader thread: hash and look up the next module; on a miss, start its bytes moving closer."""
        request = self.request(target)
        cached = self.cache.load(request)
        if cached is None:
            self.base.prefetch(target.base_key)
            self.aligned.prefetch(target.base_key)
        return request, cached

    def _estimate(self, target: Target) -> SubspaceBasis:
        rows, columns = self.base.entry(target.base_key).shape
        oriented = (columns, rows) if target.transposed else (rows, columns)
        if self.compare_first and holds_the_same_weights(self.base, self.aligned, target.base_key):
            return no_displacement(*oriented)
        steering = steering_dtype(oriented, self.params, self.device)
        if not hasattr(self._per_thread, "workspace"):
            self._per_thread.workspace = Workspace()
        displacement = form_displacement(
            self.base, self.aligned, target.base_key, self.device, steering, self._per_thread.workspace
        )
        matrix, low_precision = displacement.matrix, displacement.low_precision
        if target.transposed:
            matrix = matrix.T
            low_precision = None if low_precision is None else low_precision.T
        return estimate_basis(
            matrix,
            self.params,
            reference_energy=displacement.reference_energy,
            total_energy=displacement.total_energy,
            low_precision=low_precision,
        )

    def describe(self) -> SubspaceDescription:
        return SubspaceDescription(
            base=self.base.describe(),
            aligned=self.aligned.describe(),
            estimation=self.params.as_dict(),
            cache=self.cache.directory,
        )

    def models(self) -> tuple[ModelFiles | None, ModelFiles | None]:
        return self.base, self.aligned

    def missing_weight(self, module_name: str, key: str) -> MissingTensorError:
        return MissingTensorError(
            f"the base model has no weight for adapter module {module_name} (looked for {key})",
            where=self.base.name,
        )

    def origin(self, target: Target) -> BasisOrigin:
        request = self.request(target)
        path = self.cache.path_for(request)
        if not path.is_file():
            return BasisOrigin(None, request.base_content, request.aligned_content)
        return BasisOrigin(path, request.base_content, request.aligned_content, self.cache.sha256_of(path))


def steering_dtype(shape: tuple[int, int], params: EstimationParams, device: torch.device) -> torch.dtype | None:
    """The dtype of the copy of V that steers the randomized finder (estimate._randomized_singular):
    bfloat16 where bfloat16 products are fast and the matrix takes the randomized path, else none."""
    return torch.bfloat16 if uses_sketch(shape, params) and bfloat16_is_fast(device) else None


def estimation_workers(device: torch.device) -> tuple[int, int]:
    """(estimators, torch threads for each): several only on a CPU with a thread to spare for each."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2:
        return 1, threads
    workers = min(MAX_ESTIMATION_WORKERS, threads)
    return workers, threads // workers
