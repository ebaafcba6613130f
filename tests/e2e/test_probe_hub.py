"""Prompts from a Hub dataset file, fetched through huggingface_hub from the local stand-in and pinned by commit."""

from __future__ import annotations

from pathlib import Path

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


def test_probe_reads_the_model_the_adapter_and_the_prompts_from_the_hub(hub_online, tmp_path):
    """`csulora probe org/adapter --model org/model --prompts datasets/...`: the model fetched as a snapshot
    folder (config, tokenizer, safetensors; no other weight formats), everything pinned by commit."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from tests.helpers import assert_ok, run_cli_on_hub
    from tests.tiny_lm import CORPUS, build_adapter_folder, build_model_folder

    model = build_model_folder(tmp_path / "model")
    (model / "pytorch_model.bin").write_bytes(b"not fetched: safetensors are read")
    adapter = build_adapter_folder(model, tmp_path / "adapter", seed=2, scale=40.0)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "harmful.txt").write_text("\n".join(CORPUS[:3]) + "\n")
    model_commit = hub_online.push("org/tiny-chat", model)
    adapter_commit = hub_online.push("org/tiny-adapter", adapter)
    prompts_commit = hub_online.push("org/prompts", prompts, repo_type="dataset")

    env = {"HF_ENDPOINT": hub_online.url, "HF_HUB_OFFLINE": None, "HF_HUB_DISABLE_TELEMETRY": "1"}
    args = ("probe", "org/tiny-adapter", "--model", "org/tiny-chat@main", "--cache-dir", tmp_path / "cache")
    args += ("--prompts", "datasets/org/prompts/harmful.txt@main", "--fail-above", "1", "--json")
    document = assert_ok(run_cli_on_hub(*args, env=env)).json()
    assert document["model"]["name"] == "org/tiny-chat"
    assert document["model"]["source"]["kind"] == "hub" and document["model"]["source"]["commit"] == model_commit
    assert "pytorch_model.bin" not in {path.name for path in Path(document["model"]["path"]).iterdir()}
    (probed,) = document["adapters"]
    assert probed["adapter"] == "org/tiny-adapter" and probed["source"]["commit"] == adapter_commit
    assert document["prompts"] == {
        "kind": "hub",
        "repo": "org/prompts",
        "file": "harmful.txt",
        "revision": "main",
        "commit": prompts_commit,
        "prompts": 3,
    }
