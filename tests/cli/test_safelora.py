"""`correct --method safelora` end to end: the written adapter against a dense Safe LoRA built here.

The reference reads V from the model files, forms C = V V^T / ||V||_F, the similarities cos(C B A, B A)
and the selection of docs/method.md section 5 (Safe LoRA) densely in float64; the tool works from factors and a basis.
"""

from __future__ import annotations

import json
import shutil

import numpy
import pytest
import torch

from csulora_cli.testing.builders import TinyLlama, make_adapter_factors, write_adapter
from tests.cli.test_correct import REPORT, WEIGHTS, adapter_modules, factors, relative_error
from tests.helpers import FULL_RANK, assert_ok, model_tensor, run_cli, tensor_bytes


def dense_safelora(models, adapter):
    """Per module: (C B, similarity), densely in float64 from the files."""
    base, aligned, _ = models
    result = {}
    for module in adapter_modules(adapter):
        key = f"{module}.weight"
        displacement = model_tensor(aligned, key).double() - model_tensor(base, key).double()
        lora_a, lora_b = (tensor.double() for tensor in factors(adapter, module))
        alignment = displacement @ displacement.T / torch.linalg.matrix_norm(displacement)
        projected = alignment @ lora_b
        after, before = (projected @ lora_a).flatten(), (lora_b @ lora_a).flatten()
        result[module] = (projected, float(after @ before / (after.norm() * before.norm())))
    return result


def run_safelora(adapters, subspace, out, *options):
    """`correct ADAPTERS... --method safelora` with the complete basis; (result, printed report(s)): one
    adapter goes to `--out OUT`, a tuple of them to `--out-dir OUT`."""
    several = isinstance(adapters, tuple)
    destination = ("--out-dir", out) if several else ("--out", out)
    adapters = adapters if several else (adapters,)
    result = assert_ok(
        run_cli(
            "correct", *adapters, "--subspace", subspace, *destination, "--method", "safelora", "--rank", FULL_RANK,
            "--energy", "1", "--json", *options,
        )
    )  # fmt: skip
    return result, (result.reports() if several else result.report())


def check_written(adapter, out, report, dense, expected_selection):
    """Selected modules hold C B, the others their original B byte for byte; the report says which."""
    before, after = tensor_bytes(adapter / WEIGHTS), tensor_bytes(out / WEIGHTS)
    entries = {entry["module"]: entry for entry in report["modules"]}
    assert {module for module, chosen in expected_selection.items() if chosen} == {
        module for module, entry in entries.items() if entry["selected"]
    }
    assert report["method"]["selected_modules"] == sum(expected_selection.values())
    for module, (projected, similarity) in dense.items():
        entry = entries[module]
        assert entry["similarity"] == pytest.approx(similarity, abs=1e-5)
        assert entry["note"] == ""  # the basis holds all of V: the exact rule
        b_key = f"base_model.model.{module}.lora_B.weight"
        if expected_selection[module]:
            assert entry["status"] == "corrected"
            _, new_b = factors(out, module)
            assert relative_error(new_b.double(), projected) < 1e-4, module
            assert entry["cosine"] == pytest.approx(similarity, abs=1e-5)
        else:
            assert entry["status"] == "unchanged"
            assert after[b_key] == before[b_key]
            assert entry["removed_energy"] == 0.0
    for key in before:
        if ".lora_B." not in key:
            assert after[key] == before[key], key


def test_number_selects_the_lowest_similarities(models, full_subspace, tmp_path):
    _, _, adapter = models
    dense = dense_safelora(models, adapter)
    out = tmp_path / "out"
    result, report = run_safelora(adapter, full_subspace, out, "--safelora-layers", "3")
    assert "warning" not in result.stderr
    assert report["method"]["name"] == "safelora"
    assert report["method"]["params"] == {"select": "number", "layers": 3}
    similarities = [similarity for _, similarity in dense.values()]
    cut = numpy.sort(similarities)[:3][-1]
    check_written(adapter, out, report, dense, {module: sim <= cut for module, (_, sim) in dense.items()})
    assert json.loads((out / REPORT).read_text()) == report
    assert "safelora" in (out / "README.md").read_text()


def test_threshold_from_a_config_file(models, full_subspace, tmp_path):
    _, _, adapter = models
    dense = dense_safelora(models, adapter)
    ordered = sorted(similarity for _, similarity in dense.values())
    threshold = (ordered[3] + ordered[4]) / 2  # between two modules, so exactly four are at or below it
    config = tmp_path / "safelora.yaml"
    config.write_text(f"method: safelora\nsafelora-select: threshold\nsafelora-threshold: {threshold}\n")
    out = tmp_path / "out"
    _, report = run_safelora(adapter, full_subspace, out, "--config", config)
    assert report["method"]["params"] == {"select": "threshold", "threshold": threshold}
    expected = {module: similarity <= threshold for module, (_, similarity) in dense.items()}
    assert sum(expected.values()) == 4
    check_written(adapter, out, report, dense, expected)


def test_more_layers_than_modules_and_a_cut_basis_warns(models, subspace, tmp_path):
    """The shared rank-8, 99%-energy subspace does not hold all of V: said on stderr and per module."""
    _, _, adapter = models
    result = assert_ok(
        run_cli(
            "correct", adapter, "--subspace", subspace, "--method", "safelora", "--safelora-layers", "50",
            "--rank", "8", "--dry-run",
        )
    )  # fmt: skip
    assert "warning: safelora:" in result.stderr and "--energy 1" in result.stderr
    assert "similarity" in result.stdout
    report = assert_ok(
        run_cli(
            "correct", adapter, "--subspace", subspace, "--method", "safelora", "--safelora-layers", "50",
            "--rank", "8", "--dry-run", "--json", "--quiet",
        )
    ).report()  # fmt: skip
    assert report["method"]["selected_modules"] == len(report["modules"])
    for entry in report["modules"]:
        assert entry["selected"] is True
        assert entry["subspace"]["captured_energy"] < 1.0
        assert "exact only" in entry["note"] and f"k={entry['subspace']['k']}" in entry["note"]


def test_several_adapters_select_each_on_its_own(models, full_subspace, tmp_path):
    _, aligned, original = models
    adapter = tmp_path / "inputs" / "adapter"
    shutil.copytree(original, adapter)
    second = tmp_path / "inputs" / "adapter_b"
    write_adapter(
        second,
        make_adapter_factors(TinyLlama(), ("q_proj", "down_proj", "up_proj"), seed=5),
        {"target_modules": ["q_proj", "down_proj", "up_proj"], "base_model_name_or_path": str(aligned)},
    )
    batch = tmp_path / "batch"
    _, reports = run_safelora((adapter, second), full_subspace, batch, "--safelora-layers", "2")
    for source, report in zip((adapter, second), reports, strict=True):
        dense = dense_safelora(models, source)
        cut = numpy.sort([similarity for _, similarity in dense.values()])[:2][-1]
        expected = {module: similarity <= cut for module, (_, similarity) in dense.items()}
        assert sum(expected.values()) == 2
        folder = batch / source.name
        check_written(source, folder, report, dense, expected)
        alone = tmp_path / f"alone-{source.name}"
        run_safelora(source, full_subspace, alone, "--safelora-layers", "2")
        assert (alone / WEIGHTS).read_bytes() == (folder / WEIGHTS).read_bytes()
