"""The methods that try to bring refusals back (docs/method.md section 11), end to end on the demo pair.

Each written adapter is read back and its update s' B' A' compared with a dense float64 reference built
here from the model files: scale, remove-top, readd (extra rank, loaded by PEFT and checked by `verify`),
merge-safety (a second adapter merged into the modules Safe LoRA's test flags) and Safe LoRA by share.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from csulora_cli.testing.builders import TinyLlama, make_adapter_factors, write_adapter
from tests.cli.test_correct import REPORT, WEIGHTS, adapter_modules, factors, relative_error, scale_of
from tests.cli.test_safelora import dense_safelora
from tests.helpers import FULL_RANK, assert_ok, assert_one_line_error, model_tensor, run_cli, validate_against_schema


@pytest.fixture(scope="module")
def safety_adapter(root):
    """Another adapter of the demo model, on a subset of its modules and at another rank."""
    folder = root / "safety-adapter"
    modules = make_adapter_factors(TinyLlama(), ("q_proj", "down_proj"), rank=4, seed=7)
    write_adapter(folder, modules, {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "down_proj"]})
    return folder


def displacement(models, module: str) -> torch.Tensor:
    base, aligned, _ = models
    key = f"{module}.weight"
    return model_tensor(aligned, key).double() - model_tensor(base, key).double()


def written_update(folder, module: str) -> torch.Tensor:
    """s' B' A' as PEFT computes it from the output's own config."""
    lora_a, lora_b = factors(folder, module)
    return scale_of(folder) * lora_b.double() @ lora_a.double()


def original_update(adapter, module: str) -> torch.Tensor:
    lora_a, lora_b = factors(adapter, module)
    return scale_of(adapter) * lora_b.double() @ lora_a.double()


def correct(adapter, subspace, out, *options) -> dict:
    return assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out, "--json", *options)).report()


def test_scale_multiplies_every_update_and_reports_what_it_removed(models, full_subspace, tmp_path):
    _, _, adapter = models
    report = correct(adapter, full_subspace, tmp_path / "out", "--method", "scale", "--alpha", "0.25")
    assert report["method"]["params"] == {"alpha": 0.25}
    for module in adapter_modules(adapter):
        expected = 0.25 * original_update(adapter, module)
        assert relative_error(written_update(tmp_path / "out", module), expected) < 1e-6
    assert report["totals"]["attenuation_energy"] == pytest.approx(0.75**2, rel=1e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_remove_top_takes_out_the_top_k_output_directions(models, full_subspace, tmp_path, k):
    _, _, adapter = models
    correct(adapter, full_subspace, tmp_path / "out", "--method", "remove-top", "--rank", k)
    for module in adapter_modules(adapter):
        top = torch.linalg.svd(displacement(models, module), full_matrices=False)[0][:, :k]
        update = original_update(adapter, module)
        expected = update - top @ (top.T @ update)
        assert relative_error(written_update(tmp_path / "out", module), expected) < 1e-5


def test_readd_appends_the_alignment_as_extra_rank_that_peft_loads(models, full_subspace, tmp_path):
    base, aligned, adapter = models
    out = tmp_path / "out"
    report = correct(adapter, full_subspace, out, "--method", "readd", "--alpha", "0.5", "--rank", "4")
    validate_against_schema(report, "report")
    config = json.loads((out / "adapter_config.json").read_text())
    # One rank for the whole adapter (r + k), scale 1 with each module's own scale folded into B.
    assert config["r"] == config["lora_alpha"] == 8 + 4 and not config["rank_pattern"]
    assert {entry["output_rank"] for entry in report["modules"]} == {12}
    for module in adapter_modules(adapter):
        left, sigma, right_t = torch.linalg.svd(displacement(models, module), full_matrices=False)
        readded = 0.5 * left[:, :4] @ torch.diag(sigma[:4]) @ right_t[:4]
        expected = original_update(adapter, module) + readded
        assert relative_error(written_update(out, module), expected) < 1e-5
        entry = next(e for e in report["modules"] if e["module"] == module)
        # The report's "removed" energy is ||dW' - dW||^2: what was added.
        assert entry["removed_energy"] == pytest.approx(float(readded.square().sum()), rel=1e-4)
    assert_ok(run_cli("verify", out))

    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(aligned, torch_dtype=torch.float32)
    module = adapter_modules(adapter)[0]
    before = model.get_submodule(module).weight.detach().double().clone()
    merged = peft.PeftModel.from_pretrained(model, out).merge_and_unload()
    delta = merged.get_submodule(module).weight.detach().double() - before
    expected = written_update(out, module)
    assert relative_error(delta, expected) < 1e-5


def test_merge_safety_merges_the_safety_adapter_into_the_flagged_modules(
    models, full_subspace, safety_adapter, tmp_path
):
    _, _, adapter = models
    out = tmp_path / "out"
    report = correct(
        adapter, full_subspace, out, "--method", "merge-safety", "--safety-adapter", safety_adapter,
        "--safety-weight", "0.5", "--safelora-share", "0.5", "--energy", "1", "--rank", FULL_RANK,
    )  # fmt: skip
    validate_against_schema(report, "report")
    assert report["method"]["safety_adapter"]["kind"] == "local"
    modules = adapter_modules(adapter)
    similarities = {name: similarity for name, (_, similarity) in dense_safelora(models, adapter).items()}
    flagged = sorted(similarities, key=similarities.get)[: math.ceil(0.5 * len(modules))]
    safety_modules = set(adapter_modules(safety_adapter))
    entries = {entry["module"]: entry for entry in report["modules"]}
    for module in modules:
        expected = original_update(adapter, module)
        merged = module in flagged and module in safety_modules
        if merged:
            expected = 0.5 * expected + 0.5 * original_update(safety_adapter, module)
        assert relative_error(written_update(out, module), expected) < 1e-5, module
        assert entries[module]["selected"] == (module in flagged)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8 + 4
    assert_ok(run_cli("verify", out))


def test_safelora_share_selects_that_share_of_the_modules(models, full_subspace, tmp_path):
    _, _, adapter = models
    report = correct(
        adapter, full_subspace, tmp_path / "out", "--method", "safelora", "--safelora-share", "0.34",
        "--energy", "1", "--rank", FULL_RANK,
    )  # fmt: skip
    count = len(adapter_modules(adapter))
    assert report["method"]["selected_modules"] == math.ceil(0.34 * count)
    assert report["method"]["params"] == {"select": "number", "share": 0.34}


def test_only_readd_and_merge_safety_change_the_rank(models, full_subspace, tmp_path):
    _, _, adapter = models
    out = tmp_path / "out"
    correct(adapter, full_subspace, out, "--method", "remove-top", "--rank", "2")
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    assert (out / WEIGHTS).stat().st_size == (adapter / WEIGHTS).stat().st_size
    assert (out / REPORT).is_file()


@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        (["--method", "merge-safety"], ["--safety-adapter", "merge-safety"]),
        (["--method", "scale", "--safety-adapter", "x"], ["--safety-adapter", "merge-safety"]),
        (["--method", "scale", "--alpha", "-1"], ["--alpha"]),
        (["--method", "safelora", "--safelora-share", "0"], ["--safelora-share"]),
        (["--method", "merge-safety", "--safety-adapter", "x", "--safety-weight", "2"], ["--safety-weight"]),
    ],
)
def test_bad_knobs_are_one_line_errors_naming_the_flag(models, full_subspace, tmp_path, options, mentions):
    _, _, adapter = models
    result = run_cli("correct", adapter, "--subspace", full_subspace, "--out", tmp_path / "out", *options)
    assert_one_line_error(result, 2, *mentions)
    assert not (tmp_path / "out").exists()


def test_a_safety_adapter_of_another_model_is_refused_naming_its_tensor(models, full_subspace, tmp_path):
    _, _, adapter = models
    other = tmp_path / "other"
    modules = make_adapter_factors(TinyLlama(hidden=32, kv_hidden=16, intermediate=64), ("q_proj",), rank=2)
    write_adapter(other, modules, {"r": 2, "lora_alpha": 2, "target_modules": ["q_proj"]})
    result = run_cli(
        "correct", adapter, "--subspace", full_subspace, "--out", tmp_path / "out", "--method", "merge-safety",
        "--safety-adapter", other, "--safelora-share", "1",
    )  # fmt: skip
    message = assert_one_line_error(result, 1, "lora_B")
    assert str(other) in message
    assert not (tmp_path / "out").exists()


def test_readd_everywhere_adds_the_folders_other_modules_and_peft_loads_them(models, full_subspace, tmp_path):
    base, aligned, adapter = models
    narrow = tmp_path / "narrow"
    modules = {name: pair for name, pair in make_adapter_factors(TinyLlama(), ("q_proj",), rank=2, seed=3).items()}
    write_adapter(
        narrow, modules, {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
                          "base_model_name_or_path": str(aligned.resolve())},
    )  # fmt: skip
    out = tmp_path / "out"
    report = correct(
        narrow, full_subspace, out, "--method", "readd", "--alpha", "1", "--rank", "2", "--readd-everywhere"
    )
    validate_against_schema(report, "report")
    wide = adapter_modules(adapter)  # the folder's modules
    added = [entry["module"] for entry in report["modules"] if entry["status"] == "added"]
    assert sorted(added) == sorted(set(wide) - set(modules))
    config = json.loads((out / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(set(wide) | set(modules))
    for module in sorted(set(wide) | set(modules)):
        left, sigma, right_t = torch.linalg.svd(displacement(models, module), full_matrices=False)
        expected = left[:, :2] @ torch.diag(sigma[:2]) @ right_t[:2]
        if module in modules:
            expected = expected + original_update(narrow, module)
        assert relative_error(written_update(out, module), expected) < 1e-5, module
    assert_ok(run_cli("verify", out))
    assert_ok(run_cli("inspect", out))

    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(aligned, torch_dtype=torch.float32)
    module = added[0]
    before = model.get_submodule(module).weight.detach().double().clone()
    merged = peft.PeftModel.from_pretrained(model, out).merge_and_unload()
    delta = merged.get_submodule(module).weight.detach().double() - before
    assert relative_error(delta, written_update(out, module)) < 1e-5


@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        (["--method", "scale", "--readd-everywhere"], ["--readd-everywhere", "scale"]),
    ],
)
def test_readd_everywhere_is_refused_beside_another_method(models, full_subspace, tmp_path, options, mentions):
    _, _, adapter = models
    result = run_cli("correct", adapter, "--subspace", full_subspace, "--out", tmp_path / "out", *options)
    assert_one_line_error(result, 2, *mentions)


def test_readd_everywhere_needs_a_subspace_folder(models, tmp_path):
    base, aligned, adapter = models
    result = run_cli(
        "correct", adapter, "--base", base, "--aligned", aligned, "--out", tmp_path / "out", "--method", "readd",
        "--readd-everywhere",
    )  # fmt: skip
    assert_one_line_error(result, 2, "--readd-everywhere", "--subspace")
