"""`csulora inspect` end to end, in process through typer's CliRunner (tests/helpers.py run_cli, docs/cli.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    RANK,
    assert_ok,
    assert_one_line_error,
    energy_rank,
    exact_subspace,
    load_tensors,
    run_cli,
    snapshot,
)


@pytest.fixture(scope="module")
def inspected(models, subspace) -> dict:
    """inspect --subspace --json: the report `correct` would write, without writing anything."""
    _, _, adapter = models
    before = snapshot(adapter.parent)
    result = assert_ok(run_cli("inspect", adapter, "--subspace", subspace, "--rank", RANK, "--json"))
    assert snapshot(adapter.parent) == before
    assert result.json()["gate"] is None
    return result.report()


def factors(adapter: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    tensors = load_tensors(adapter / "adapter_model.safetensors")
    modules = {}
    for key, lora_a in tensors.items():
        if key.endswith(".lora_A.weight"):
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            modules[name] = (lora_a.double(), tensors[key.replace(".lora_A.", ".lora_B.")].double())
    return modules


def test_without_subspace_table(models):
    _, _, adapter = models
    result = assert_ok(run_cli("inspect", adapter))
    for module in factors(adapter):
        assert module in result.stdout
    assert "linear" in result.stdout
    assert "64x128" in result.stdout  # down_proj in output-space form (out x in)


def test_without_subspace_json(models):
    _, _, adapter = models
    payload = assert_ok(run_cli("inspect", adapter, "--json")).report()
    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    expected = factors(adapter)
    modules = {entry["module"]: entry for entry in payload["modules"]}
    assert list(modules) == list(expected)
    for name, (lora_a, lora_b) in expected.items():
        entry = modules[name]
        assert entry["rank"] == config["r"] == 8
        assert entry["alpha"] == config["lora_alpha"] == 16
        assert entry["scale"] == pytest.approx(scale) == 2.0
        assert entry["kind"] == "linear"
        assert entry["shape"] == [lora_b.shape[0], lora_a.shape[1]]
        update = scale * lora_b @ lora_a
        assert entry["update_energy"] == pytest.approx(float(update.square().sum()), rel=1e-5)
        assert entry["top_singular_value"] == pytest.approx(float(torch.linalg.matrix_norm(update, ord=2)), rel=1e-5)


def test_with_subspace_decomposition(models, inspected):
    base, aligned, adapter = models
    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    assert inspected["schema_version"] == 2
    assert inspected["output"] is None
    modules = {entry["module"]: entry for entry in inspected["modules"]}
    expected = factors(adapter)
    assert list(modules) == list(expected)
    total_update = total_off = 0.0
    for name, (lora_a, lora_b) in expected.items():
        entry = modules[name]
        left, singular_values, energy = exact_subspace(base, aligned, f"{name}.weight")
        k = energy_rank(singular_values, energy, 0.99, RANK)
        assert entry["subspace"]["k"] == k
        update = scale * lora_b @ lora_a
        update_energy = float(update.square().sum())
        in_subspace = float((left[:, :k].T @ update).square().sum())
        assert entry["off_subspace_energy"] == pytest.approx(1.0 - in_subspace / update_energy, abs=1e-5)
        # Every direction that carries energy is classified (the demo's B has rank 6 of r = 8).
        assert sum(entry["directions"].values()) == int(torch.linalg.matrix_rank(update, rtol=1e-5)) == 6
        assert entry["status"] == "corrected"  # what `correct` would do
        assert 0.0 < entry["attenuation_energy"] < entry["off_subspace_energy"]
        total_update += update_energy
        total_off += update_energy - in_subspace
    assert inspected["totals"]["off_subspace_energy"] == pytest.approx(total_off / total_update, abs=1e-5)
    # The demo adapter puts half of each update along the alignment directions: all three classes show.
    directions = inspected["totals"]["directions"]
    assert directions["aligned"] > 0 and directions["partial"] > 0 and directions["off"] > 0


def test_with_subspace_table(models, subspace):
    _, _, adapter = models
    result = assert_ok(run_cli("inspect", adapter, "--subspace", subspace, "--rank", RANK))
    for module in factors(adapter):
        assert module in result.stdout
    assert "total" in result.stdout
    assert "corrected" in result.stdout


def test_with_base_matches_subspace(models, inspected, tmp_path):
    """--base (aligned: the adapter's base_model_name_or_path) gives the --subspace figures; a gate
    above the total passes with exit 0."""
    base, _, adapter = models
    gate = f"{inspected['totals']['off_subspace_energy'] + 0.05:.4f}"
    result = assert_ok(
        run_cli(
            "inspect",
            adapter,
            "--base",
            base,
            "--rank",
            RANK,
            "--json",
            "--cache-dir",
            tmp_path / "cache",
            "--fail-above",
            gate,
        )
    )
    payload = result.report()
    assert [entry["module"] for entry in payload["modules"]] == [entry["module"] for entry in inspected["modules"]]
    for mine, theirs in zip(payload["modules"], inspected["modules"], strict=True):
        for field in ("off_subspace_energy", "attenuation_energy", "aligned_energy", "cosine", "update_energy"):
            assert mine[field] == pytest.approx(theirs[field], rel=1e-9, abs=1e-12), (mine["module"], field)
        assert mine["directions"] == theirs["directions"]
        assert mine["subspace"]["k"] == theirs["subspace"]["k"]
    assert list((tmp_path / "cache" / "bases").rglob("*.safetensors"))  # estimated bases were cached


def test_fail_above_gate(models, subspace, inspected):
    _, _, adapter = models
    off = inspected["totals"]["off_subspace_energy"]
    assert 0.1 < off < 0.9
    tripped = run_cli("inspect", adapter, "--subspace", subspace, "--rank", RANK, "--fail-above", f"{off - 0.05:.4f}")
    assert tripped.rc == 3, tripped.describe()
    assert "Traceback" not in tripped.stderr
    assert len(tripped.stderr_lines) == 1 and "--fail-above" in tripped.stderr_lines[0], tripped.describe()
    assert "total" in tripped.stdout  # the report is still printed

    passed = run_cli(
        "inspect", adapter, "--subspace", subspace, "--rank", RANK, "--json", "--fail-above", f"{off + 0.05:.4f}"
    )
    assert_ok(passed)
    assert passed.report()["totals"]["off_subspace_energy"] == pytest.approx(off)
    # The gate's outcome is part of the JSON document, not only of the exit code.
    assert passed.json()["gate"] == {
        "statistic": "off_share",
        "direction": "above",
        "threshold": pytest.approx(off + 0.05, abs=1e-4),
        "value": pytest.approx(off),
        "tripped": False,
        "adapter": str(adapter),
    }
    assert passed.stderr.strip() == ""

    tripped_json = run_cli("inspect", adapter, "--subspace", subspace, "--json", "--fail-above", f"{off - 0.05:.4f}")
    assert tripped_json.rc == 3, tripped_json.describe()
    assert tripped_json.json()["gate"]["tripped"] is True


def test_fail_above_needs_a_subspace(models):
    _, _, adapter = models
    assert_one_line_error(run_cli("inspect", adapter, "--fail-above", "0.5"), 2, "--fail-above")
