"""A model to run, from what the user typed: a local folder if one exists, else a Hub repo's snapshot folder.

A Hub model is fetched through the run's one Hub client, at the commit its ref resolved to, into the standard
HF cache: its top-level files but weights in formats other than safetensors (the config, the tokenizer's files,
the safetensors shards and their index), so that transformers loads the snapshot folder as it would a local one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...checkpoints.description import SourceDescription
from ...checkpoints.hub.client import HubClient
from ...checkpoints.hub.refs import endpoint_label
from ...checkpoints.resolve import hub_snapshot
from ...errors import CsuloraError, FormatError

CONFIG_FILE = "config.json"
# Weights in other formats than safetensors: a repo often holds the same weights in several; never fetched.
OTHER_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".ot", ".onnx", ".gguf", ".pkl")


@dataclass(frozen=True)
class ModelFolder:
    """A folder transformers can load, where it came from, and the Hub id typed for it (None for a folder)."""

    folder: Path
    source: SourceDescription
    hub_id: str | None = None


def model_repo_files(names: list[str]) -> list[str]:
    """The files of a model repo a run needs: top-level, and no weights but safetensors ones."""
    return sorted(name for name in names if "/" not in name and not name.lower().endswith(OTHER_WEIGHT_SUFFIXES))


def open_model_folder(spec: str | Path, hub: HubClient) -> ModelFolder:
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CsuloraError("a model is a folder (config, tokenizer and weights), not a file", where=str(path))
        return ModelFolder(path, SourceDescription.local(path))
    ref, snapshot = hub_snapshot(str(spec), hub, "model")
    files = model_repo_files(list(snapshot.files))
    if CONFIG_FILE not in files:
        raise FormatError(f"not a transformers model repo: no {CONFIG_FILE}", where=snapshot.where())
    if not any(name.endswith(".safetensors") for name in files):
        raise FormatError("holds no safetensors weights (the only format read)", where=snapshot.where())
    folder = None
    for name in files:
        folder = hub.download(snapshot, name).parent
    source = SourceDescription.hub(ref.repo_id, ref.revision, snapshot.commit, endpoint_label())
    return ModelFolder(folder, source, ref.repo_id)
