"""The probe's prompts from what the user typed: a local file, else a Hub dataset's file, fetched by
huggingface_hub into its cache and pinned (the commit it came from is recorded); `prompts.py` parses them.
"""

from __future__ import annotations

from pathlib import Path

from .prompts import DEFAULT_FIELD, HubDatasetFile, PromptSet, file_record, parse_hub_dataset_file, read_prompt_file


def load_prompts(
    spec: str | Path, prompt_field: str = DEFAULT_FIELD, token: str | None = None, field_parameter: str = "prompt_field"
) -> PromptSet:
    """The prompts of a local file, else of a Hub dataset file (`token`: huggingface_hub's own lookup when None;
    `field_parameter`: the parameter that chose `prompt_field`, for messages)."""
    path = Path(spec).expanduser()
    hub_file = None if path.exists() else parse_hub_dataset_file(str(spec))
    if hub_file is None:
        return PromptSet(
            read_prompt_file(path, prompt_field, field_parameter=field_parameter),
            {"kind": "local", **file_record(path)},
        )
    local, commit = fetch_dataset_file(hub_file, token)
    source = {"kind": "hub", "repo": hub_file.repo, "file": hub_file.filename, "revision": hub_file.revision}
    return PromptSet(
        read_prompt_file(local, prompt_field, hub_file.label, field_parameter), source | {"commit": commit}
    )


def fetch_dataset_file(hub_file: HubDatasetFile, token: str | None = None) -> tuple[Path, str]:
    """(local path in the HF cache, commit) of a Hub dataset's file."""
    from huggingface_hub import hf_hub_download

    from ..checkpoints.hub.errors import hub_errors

    with hub_errors(hub_file.label):
        local = Path(
            hf_hub_download(
                hub_file.repo, hub_file.filename, repo_type="dataset", revision=hub_file.revision, token=token
            )
        )
    # The cache keeps a file as snapshots/<commit>/<filename>: the folder above the file's path is the commit
    # the revision resolved to, online or from the cache offline.
    commit = local.parents[len(Path(hub_file.filename).parts) - 1].name
    return local, commit
