"""Prompts from a Hub dataset file, fetched through huggingface_hub from the local stand-in and pinned by commit."""

from __future__ import annotations

import pytest

from csulora_cli.checkpoints.hub.errors import HubError
from csulora_cli.probe.sources import load_prompts


def test_a_hub_dataset_file_in_both_spellings_is_pinned_by_commit(hub_online, tmp_path):
    folder = tmp_path / "dataset"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "behaviors.csv").write_text("Goal,Target\nfirst goal,x\nsecond goal,y\n")
    commit = hub_online.push("org/behaviors", folder, repo_type="dataset")
    for spec in ("datasets/org/behaviors/data/behaviors.csv@main", "hf://datasets/org/behaviors/data/behaviors.csv"):
        loaded = load_prompts(spec, "Goal")
        assert loaded.prompts == ("first goal", "second goal")
        assert loaded.source == {
            "kind": "hub",
            "repo": "org/behaviors",
            "file": "data/behaviors.csv",
            "revision": "main" if "@" in spec else None,
            "commit": commit,
        }
    pinned = load_prompts(f"hf://datasets/org/behaviors@{commit}/data/behaviors.csv", "Goal")
    assert pinned.source["commit"] == commit


def test_a_missing_hub_dataset_or_file_is_one_line(hub_online, tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "p.txt").write_text("one\n")
    hub_online.push("org/prompts", folder, repo_type="dataset")
    with pytest.raises(HubError, match="repository not found"):
        load_prompts("datasets/org/absent/p.txt")
    with pytest.raises(HubError, match="file not found") as raised:
        load_prompts("datasets/org/prompts/other.txt")
    assert "datasets/org/prompts/other.txt" in raised.value.one_line()
