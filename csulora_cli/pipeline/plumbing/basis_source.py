"""Wiring a run: its one Hub client, the device, and which provider serves the bases.

The one place that knows that a `SubspaceSpec` names either a subspace folder or a base/aligned pair
(the cache folder's layout is `cache_layout.py`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...adapters.peft import CONFIG_FILE, LoraAdapter
from ...checkpoints.hub.client import HubClient
from ...checkpoints.hub.options import HubOptions
from ...checkpoints.hub.refs import parse_hub_ref
from ...checkpoints.protocol import TensorSource
from ...checkpoints.resolve import no_local_folder, resolve_model
from ...errors import CsuloraError, UsageError
from ...events import Events
from ...subspace.estimate import EstimationParams
from ...subspace.estimating import EstimatingProvider
from ...subspace.folder import SubspaceFolder
from ...subspace.providers import BasisProvider, FolderProvider
from ...subspace.remote import fetch_subspace
from ...subspace.store import BasisCache
from ..types.requests import SubspaceSpec
from .cache_layout import CacheLayout
from .pairs import check_models_agree


def resolve_device(name: str) -> torch.device:
    """The torch device for "auto" (a GPU when torch sees one), "cpu" or "cuda": `resolve_device("auto")`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA was asked for but torch sees no CUDA device", parameter="device")
    return torch.device(name)


def hub_client(cache_dir: Path | None, options: HubOptions, events: Events) -> HubClient:
    """The run's one Hub client, keeping its records (refs, listings, headers) under the cache folder: made
    once by each command and handed to everything that reads from or pushes to the Hub."""
    return HubClient(options, CacheLayout.at(cache_dir).hub_metadata, events)


def estimating_provider(
    base: str,
    aligned: str,
    params: EstimationParams,
    cache_dir: Path | None,
    device: torch.device,
    hub: HubClient,
    events: Events,
    *,
    aligned_origin: str | None = None,
    cache_required: bool = False,
    compare_first: bool = False,
) -> EstimatingProvider:
    """A provider estimating from `base` and `aligned` through the cache.

    `aligned_origin` says where the aligned model's name came from when the user did not type it
    (an adapter's config), so an error opening it says so; `cache_required` when the cache is the
    run's only product, so a cache that cannot be written fails the run instead of being a warning.
    """
    layout = CacheLayout.at(cache_dir)
    return EstimatingProvider(
        resolve_model(base, digest_memo_dir=layout.file_digests, hub=hub),
        _open_named_source(aligned, aligned_origin, digest_memo_dir=layout.file_digests, hub=hub),
        BasisCache(layout.root, events.warn, required=cache_required, digest_memo_dir=layout.file_digests),
        params,
        device,
        compare_first=compare_first,
    )


def _open_named_source(spec: str, origin: str | None, **options) -> TensorSource:
    try:
        return resolve_model(spec, **options)
    except CsuloraError as error:
        # A path the user never typed (a relative base_model_name_or_path read from another folder, a
        # Hub id) is a puzzle unless the error says where it came from.
        if origin is not None:
            error.where = f"{error.where or spec} ({origin})"
        raise


def open_provider(spec: SubspaceSpec, adapters: list[LoraAdapter], hub: HubClient, events: Events) -> BasisProvider:
    """Bases from the spec's subspace folder, or estimated from its pair (the aligned model defaulting to the
    adapters' common `base_model_name_or_path`), refused when the pair is not the one the adapters were
    trained on (`pairs.py`)."""
    device = resolve_device(spec.device)
    if spec.subspace is not None:
        provider = _folder_provider(spec, adapters, device, hub)
    elif spec.base is None:
        raise UsageError("a subspace is needed: pass {subspace} DIR or {base} BASE", parameter="base")
    else:
        if spec.aligned:
            aligned, origin = spec.aligned, None
        else:
            aligned, origin = _aligned_from_adapters(adapters)
        provider = estimating_provider(
            spec.base, aligned, spec.estimation, spec.cache_dir, device, hub, events, aligned_origin=origin
        )
    check_models_agree(
        *provider.models(), [(str(adapter.folder), adapter.config) for adapter in adapters], spec.confirm_models
    )
    return provider


def _folder_provider(spec: SubspaceSpec, adapters: list[LoraAdapter], device, hub: HubClient) -> FolderProvider:
    """A local subspace folder if one exists at that path, else a subspace repo on the Hub."""
    path = Path(spec.subspace).expanduser()
    ref = None if path.exists() else parse_hub_ref(str(spec.subspace))
    if ref is None:
        return FolderProvider(SubspaceFolder(path), device)
    with no_local_folder(str(spec.subspace)):
        hub.snapshot(ref)  # resolved here, where a failure names the spec; fetch_subspace's ask is answered from memory
    folder, origin = fetch_subspace(ref, hub, adapters)
    return FolderProvider(SubspaceFolder(folder), device, hub=origin)


def _aligned_from_adapters(adapters: list[LoraAdapter]) -> tuple[str, str]:
    """The adapters' common `base_model_name_or_path`, and where it was read (for error messages)."""
    names = {adapter.config.get("base_model_name_or_path") for adapter in adapters}
    if len(names) != 1 or None in names or not all(isinstance(n, str) and n for n in names):
        raise UsageError(
            "the adapters do not name one common base_model_name_or_path; pass the aligned model",
            parameter="aligned",
        )
    origin = f"base_model_name_or_path in {adapters[0].folder / CONFIG_FILE}"
    if len(adapters) > 1:
        origin += f" and {len(adapters) - 1} other adapter(s)"
    return names.pop(), origin
