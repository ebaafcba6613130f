"""What a corrected folder holds: the adapter and its card, never a training run's state, and a second
adapter or a config that disagrees with the tensors is named rather than passed over."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from tests.helpers import RANK, assert_ok, assert_one_line_error, read_report, run_cli

TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json")


@pytest.fixture
def checkpoint(models, tmp_path):
    """A Trainer checkpoint folder: the adapter, plus the state to resume training."""
    folder = tmp_path / "runs" / "checkpoint-500"
    shutil.copytree(models[2], folder)
    for name in TRAINING_STATE:
        (folder / name).write_bytes(b"resume state")
    return folder


def test_training_state_is_left_out_and_listed(checkpoint, subspace, tmp_path):
    out = tmp_path / "safe"
    result = assert_ok(run_cli("correct", checkpoint, "--subspace", subspace, "--rank", RANK, "--out", out))
    shipped = {path.name for path in out.iterdir()}
    assert not shipped & set(TRAINING_STATE)
    assert "left out of the output" in result.stderr and "optimizer.pt" in result.stderr
    report = read_report(out)
    assert sorted(report["provenance"]["left_out"]) == sorted(TRAINING_STATE)
    assert not set(report["provenance"]["adapter_files"]) & set(TRAINING_STATE)
    assert_ok(run_cli("verify", out))


def test_a_second_adapter_in_a_subfolder_is_named(checkpoint, subspace, tmp_path):
    shutil.copytree(checkpoint, checkpoint / "second", ignore=shutil.ignore_patterns(*TRAINING_STATE))
    out = tmp_path / "safe"
    result = assert_ok(run_cli("correct", checkpoint, "--subspace", subspace, "--rank", RANK, "--out", out))
    assert "second/ holds another adapter, which is not corrected" in result.stderr
    assert "second/" in read_report(out)["provenance"]["left_out"]
    assert not (out / "second").exists()


def test_keys_carrying_the_adapters_name_are_read(models, subspace, tmp_path):
    folder = tmp_path / "named"
    shutil.copytree(models[2], folder)
    weights = folder / "adapter_model.safetensors"
    tensors = load_file(weights)
    save_file({key.replace(".weight", ".default.weight"): value for key, value in tensors.items()}, weights)
    out = tmp_path / "safe"
    assert_ok(run_cli("correct", folder, "--subspace", subspace, "--rank", RANK, "--out", out))
    assert set(load_file(out / "adapter_model.safetensors")) == set(load_file(weights))
    # Two adapters' factors in one file cannot be told apart by module: refused, naming both.
    save_file(
        {key.replace(".weight", ".default.weight"): value for key, value in tensors.items()}
        | {key.replace(".weight", ".other.weight"): value.clone() for key, value in tensors.items()},
        weights,
    )
    assert_one_line_error(run_cli("inspect", folder), 1, "several adapters", "default", "other")


def test_a_config_that_does_not_match_the_tensors_is_named(models, subspace, tmp_path):
    folder = tmp_path / "copied-config"
    shutil.copytree(models[2], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["target_modules"] = ["gate_proj"]
    config["layers_to_transform"] = [0]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    result = assert_ok(run_cli("correct", folder, "--subspace", subspace, "--rank", RANK, "--dry-run"))
    assert "adapter_config.json disagrees with the tensors" in result.stderr
    assert "not among target_modules" in result.stderr
