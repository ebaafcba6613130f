"""User errors through the CLI (in process, through the console script's own error boundary): exit status,
and exactly one stderr line that names the file, tensor or flag, never a traceback (README, Conventions).
1 error, 2 usage error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from csulora_cli.testing.builders import (
    TinyLlama,
    make_model_pair,
    write_adapter,
    write_checkpoint,
)
from tests.helpers import RANK, assert_one_line_error, run_cli, snapshot

Q_PROJ = "model.layers.0.self_attn.q_proj"


def copy_adapter(adapter: Path, destination: Path) -> Path:
    shutil.copytree(adapter, destination)
    return destination


def assert_nothing_written(workdir: Path, before: dict) -> None:
    assert snapshot(workdir) == before
    assert not [path for path in workdir.rglob(".csulora-tmp*")]


# Inputs that are not what they claim to be (exit 1)


def test_nonexistent_adapter(models, tmp_path):
    base, aligned, _ = models
    missing = tmp_path / "no-such-adapter"
    result = run_cli("correct", missing, "--base", base, "--aligned", aligned, "--out", tmp_path / "out")
    assert_one_line_error(result, 1, str(missing))
    assert list(tmp_path.iterdir()) == []


def test_adapter_without_config(models, tmp_path):
    adapter = copy_adapter(models[2], tmp_path / "adapter")
    (adapter / "adapter_config.json").unlink()
    assert_one_line_error(run_cli("inspect", adapter), 1, "adapter_config.json")


def test_malformed_adapter_config(models, tmp_path):
    adapter = copy_adapter(models[2], tmp_path / "adapter")
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8,')
    assert_one_line_error(run_cli("inspect", adapter), 1, "adapter_config.json")


def test_dora_adapter_refused(models, subspace, tmp_path):
    adapter = copy_adapter(models[2], tmp_path / "dora")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"use_dora": True}))
    before = snapshot(tmp_path)
    result = run_cli("correct", adapter, "--subspace", subspace, "--out", tmp_path / "out")
    line = assert_one_line_error(result, 1, "DoRA")
    assert "use_dora" in line
    assert_nothing_written(tmp_path, before)


def test_base_folder_without_model_safetensors(models, tmp_path):
    _, aligned, adapter = models
    empty_base = tmp_path / "base"
    empty_base.mkdir()
    (empty_base / "config.json").write_text('{"model_type": "llama"}')
    result = run_cli("correct", adapter, "--base", empty_base, "--aligned", aligned, "--out", tmp_path / "out")
    assert_one_line_error(result, 1, "model.safetensors", str(empty_base))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("provider", ["base", "subspace"])
def test_adapter_shapes_do_not_match_the_base(models, subspace, tmp_path, provider):
    base, aligned, _ = models
    generator = torch.Generator().manual_seed(3)
    # q_proj is 64 x 64 in the base; this adapter's update is 48 x 32.
    adapter = tmp_path / "adapter"
    write_adapter(
        adapter,
        {Q_PROJ: (torch.randn(8, 32, generator=generator), torch.randn(48, 8, generator=generator))},
        {"target_modules": ["q_proj"], "base_model_name_or_path": str(aligned)},
    )
    source = ("--base", base) if provider == "base" else ("--subspace", subspace)
    result = run_cli("correct", adapter, *source, "--out", tmp_path / "out")
    assert_one_line_error(result, 1, Q_PROJ)
    assert not (tmp_path / "out").exists()


def test_base_and_aligned_shapes_differ(tmp_path):
    base_weights, aligned_weights = make_model_pair(TinyLlama(), seed=2)
    aligned_weights[f"{Q_PROJ}.weight"] = aligned_weights[f"{Q_PROJ}.weight"][:, :32].contiguous()
    write_checkpoint(tmp_path / "base", base_weights)
    write_checkpoint(tmp_path / "aligned", aligned_weights)
    result = run_cli(
        "estimate-subspace", tmp_path / "base", tmp_path / "aligned", "--modules", "q_proj", "--rank", RANK
    )
    assert_one_line_error(result, 1, f"{Q_PROJ}.weight")


def test_truncated_model_shard(models, tmp_path):
    _, aligned, adapter = models
    base = tmp_path / "base"
    shutil.copytree(models[0], base)
    shard = base / "model-00001-of-00002.safetensors"
    with open(shard, "r+b") as handle:
        handle.truncate(shard.stat().st_size // 2)
    result = run_cli("correct", adapter, "--base", base, "--aligned", aligned, "--out", tmp_path / "out")
    line = assert_one_line_error(result, 1, str(shard))
    assert "truncated" in line
    assert not (tmp_path / "out").exists()


def test_truncated_adapter_weights(models, tmp_path):
    adapter = copy_adapter(models[2], tmp_path / "adapter")
    weights = adapter / "adapter_model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size - 100)
    assert_one_line_error(run_cli("inspect", adapter), 1, str(weights))


def test_nan_in_adapter_tensor(models, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter = copy_adapter(models[2], tmp_path / "adapter")
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    key = f"base_model.model.{Q_PROJ}.lora_B.weight"
    tensors[key][0, 0] = float("nan")
    save_file(tensors, str(weights))
    base, aligned, _ = models
    result = run_cli("correct", adapter, "--base", base, "--aligned", aligned, "--out", tmp_path / "out")
    assert "NaN" in assert_one_line_error(result, 1, key)
    assert not (tmp_path / "out").exists()


def test_missing_shard(models, tmp_path):
    base, aligned, adapter = models
    broken = tmp_path / "aligned"
    shutil.copytree(aligned, broken)
    shard = broken / "model-00002-of-00002.safetensors"
    shard.unlink()
    result = run_cli(
        "correct", adapter, "--base", base, "--aligned", broken, "--confirm-models", "--out", tmp_path / "out"
    )
    assert_one_line_error(result, 1, str(shard))
    assert not (tmp_path / "out").exists()


def test_index_cannot_escape_the_model_folder(models, tmp_path):
    base, aligned, adapter = models
    broken = tmp_path / "aligned"
    shutil.copytree(aligned, broken)
    index_path = broken / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"][f"{Q_PROJ}.weight"] = "../../outside.safetensors"
    index_path.write_text(json.dumps(index))
    result = run_cli("correct", adapter, "--base", base, "--aligned", broken, "--out", tmp_path / "out")
    assert "outside the model folder" in assert_one_line_error(result, 1, str(index_path))


def test_malicious_pickle_is_refused(models, tmp_path):
    import pickle

    adapter = copy_adapter(models[2], tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").unlink()
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    with open(adapter / "adapter_model.bin", "wb") as handle:
        pickle.dump({f"base_model.model.{Q_PROJ}.lora_A.weight": RunsCode()}, handle)
    result = run_cli("inspect", adapter)
    assert "refused to load" in assert_one_line_error(result, 1, str(adapter / "adapter_model.bin"))
    assert not marker.exists()


def test_destination_that_cannot_be_created(models, tmp_path):
    base, aligned, adapter = models
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("a file")
    result = run_cli("correct", adapter, "--base", base, "--aligned", aligned, "--out", not_a_folder / "out")
    assert_one_line_error(result, 1, str(not_a_folder))


# Flags and options that cannot be used (exit 2)


@pytest.mark.parametrize(
    ("flag", "value", "mention"),
    [
        ("--method", "bogus", "--method"),
        ("--lambda", "-1", "--lambda"),
        ("--eps", "1.5", "--eps"),
        ("--energy", "0", "--energy"),
        ("--rank", "0", "--rank"),
        ("--safelora-select", "all", "--safelora-select"),
        ("--safelora-threshold", "1.5", "--safelora-threshold"),
        ("--safelora-layers", "-1", "--safelora-layers"),
    ],
)
def test_bad_correct_values(models, tmp_path, flag, value, mention):
    base, aligned, adapter = models
    before = snapshot(tmp_path)
    result = run_cli("correct", adapter, "--base", base, "--aligned", aligned, "--out", tmp_path / "out", flag, value)
    assert_one_line_error(result, 2, mention)
    assert_nothing_written(tmp_path, before)


@pytest.mark.parametrize(("flag", "value"), [("--energy", "0"), ("--rank", "0")])
def test_bad_estimation_values(models, tmp_path, flag, value):
    base, aligned, _ = models
    result = run_cli("estimate-subspace", base, aligned, "--out", tmp_path / "sub", flag, value)
    assert_one_line_error(result, 2, flag)
    assert not (tmp_path / "sub").exists()


@pytest.mark.parametrize(("flag", "value"), [("--energy", "0"), ("--rank", "0")])
def test_bad_estimation_values_with_subspace(models, subspace, tmp_path, flag, value):
    _, _, adapter = models
    result = run_cli("correct", adapter, "--subspace", subspace, "--out", tmp_path / "out", flag, value)
    assert_one_line_error(result, 2, flag)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(models, tmp_path):
    base, aligned, _ = models
    result = run_cli("estimate-subspace", base, aligned, "--modules", "q_proj", "--device", "cuda")
    assert_one_line_error(result, 2, "--device")


def test_unknown_config_key(models, tmp_path):
    base, aligned, _ = models
    config = tmp_path / "preset.yaml"
    config.write_text("rank: 8\nno-such-option: 3\n")
    result = run_cli("estimate-subspace", base, aligned, "--config", config)
    assert_one_line_error(result, 2, "no-such-option", str(config))


def test_correct_needs_out(models):
    base, aligned, adapter = models
    result = run_cli("correct", adapter, "--base", base, "--aligned", aligned)
    assert_one_line_error(result, 2, "--out")


def test_invalid_modules_regex(models):
    base, aligned, _ = models
    assert_one_line_error(run_cli("estimate-subspace", base, aligned, "--modules", "q_proj("), 2, "--modules")


@pytest.mark.parametrize(
    "arguments",
    [
        ("--rank", "many"),
        ("--no-such-flag",),
        ("--modules", "q_proj", "--adapter", "ADAPTER"),
    ],
    ids=["bad-int", "unknown-flag", "modules-and-adapter"],
)
def test_click_usage_errors(models, arguments):
    base, aligned, adapter = models
    arguments = tuple(str(adapter) if argument == "ADAPTER" else argument for argument in arguments)
    line = assert_one_line_error(run_cli("estimate-subspace", base, aligned, *arguments), 2)
    assert "internal error" not in line


# Every value is checked when it is given, even where the run would never read it.


@pytest.mark.parametrize(
    "arguments",
    [
        ("correct", "ADAPTER", "--subspace", "SUBSPACE", "--out", "OUT", "--fetch", "everything"),
        ("inspect", "ADAPTER", "--method", "bogus"),
        ("inspect", "ADAPTER", "--device", "tpu"),
        ("inspect", "ADAPTER", "--safelora-select", "all"),
        ("inspect", "ADAPTER", "--method", "safelora", "--two-sided"),
    ],
    ids=["fetch-with-subspace", "method-without-subspace", "device", "select", "two-sided-without-subspace"],
)
def test_values_the_run_would_not_read_are_still_checked(models, subspace, tmp_path, arguments):
    _, _, adapter = models
    names = {"ADAPTER": adapter, "SUBSPACE": subspace, "OUT": tmp_path / "out"}
    flag = next(argument for argument in arguments[::-1] if argument.startswith("--"))
    result = run_cli(*(names.get(argument, argument) for argument in arguments))
    assert_one_line_error(result, 2, flag)
    assert not (tmp_path / "out").exists()


def test_library_errors_name_the_parameter_and_the_cli_its_flag(models, subspace, tmp_path):
    from csulora_cli.api import CorrectRequest, SubspaceSpec
    from csulora_cli.checkpoints.hub.options import HubOptions
    from csulora_cli.errors import UsageError

    with pytest.raises(UsageError) as raised:
        SubspaceSpec(subspace=subspace, hub=HubOptions(fetch="everything"))
    assert raised.value.parameter == "fetch" and raised.value.one_line().startswith("fetch: unknown fetch mode")
    with pytest.raises(UsageError) as raised:
        CorrectRequest(adapters=(models[2],), out=None, subspace=SubspaceSpec(subspace=subspace))
    assert (
        raised.value.one_line() == "out: an output is needed: out for one adapter or out_dir for several (or dry_run)"
    )
    line = assert_one_line_error(run_cli("correct", models[2], "--subspace", subspace), 2)
    assert line == (
        "csulora: error: --out: an output is needed: --out for one adapter or --out-dir for several (or --dry-run)"
    )
