"""Adapters from what the user typed: a local folder if one exists, else a Hub repo id (`org/name[@revision]`).

A repo's adapter files (`adapters/repo_files.py`) are fetched through huggingface_hub into the standard
HF cache at the resolved commit, so offline mode, pinned commits, private and gated repos and every
failure behave as they do for models; the adapter is then read from that snapshot like any folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...adapters.peft import CONFIG_FILE, LoraAdapter, read_adapter
from ...adapters.repo_files import adapter_repo_files
from ...checkpoints.description import SourceDescription
from ...checkpoints.hub.client import HubClient
from ...checkpoints.hub.refs import endpoint_label
from ...checkpoints.resolve import hub_snapshot
from ...errors import MissingTensorError


@dataclass(frozen=True)
class OpenedAdapter:
    """An adapter and where it came from (the report records `source.to_dict()`); `output_name` is the path
    its output takes below `--out-dir` (None for a local folder: placed by its path below the common parent)."""

    adapter: LoraAdapter
    source: SourceDescription
    output_name: Path | None = None

    @property
    def label(self) -> str:
        """How the report and card name the input: the folder, or `org/name` for a Hub repo."""
        return self.source.label


def open_adapter(spec: str | Path, hub: HubClient) -> OpenedAdapter:
    path = Path(spec).expanduser()
    if path.exists():
        adapter = read_adapter(path)
        return OpenedAdapter(adapter, SourceDescription.local(path))
    ref, snapshot = hub_snapshot(str(spec), hub, "adapter")
    if CONFIG_FILE not in snapshot.files:
        raise MissingTensorError(f"not a PEFT adapter repo: no {CONFIG_FILE}", where=snapshot.where())
    files = adapter_repo_files({name: file.size for name, file in snapshot.files.items()})
    # What the repo holds besides (training state, checkpoints in subfolders): never fetched, listed.
    left_out = tuple(
        sorted(
            {name.split("/")[0] + ("/" if "/" in name else "") for name in snapshot.files if name != ".gitattributes"}
            - set(files)
        )
    )
    folder = None
    for name in files:
        folder = hub.download(snapshot, name).parent
    adapter = read_adapter(folder, files, left_out)
    source = SourceDescription.hub(ref.repo_id, ref.revision, snapshot.commit, endpoint_label())
    return OpenedAdapter(adapter, source, Path(ref.repo_id))
