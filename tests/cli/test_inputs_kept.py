"""What a new user's slip must never cost: an output written onto an input, a swapped base/aligned pair
that passes a gate, a demo built over a folder that holds something else.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from csulora_cli.testing.builders import build_demo
from tests.helpers import RANK, assert_ok, assert_one_line_error, run_cli, snapshot


@pytest.fixture
def adapter(models, tmp_path):
    """A copy of the demo adapter in `tmp_path/runs/adapter`, so refusals can be checked against its bytes."""
    copy = tmp_path / "runs" / "adapter"
    shutil.copytree(models[2], copy)
    return copy


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
@pytest.mark.parametrize(
    "where",
    [
        ("--out", "."),
        ("--out", "./inside"),
        ("--out", ".."),
        ("--out-dir", ".."),
        ("--out-dir", "."),
    ],
    ids=["out-onto", "out-into", "out-over", "out-dir-parent", "out-dir-into"],
)
def test_correct_never_writes_onto_into_or_over_its_adapter(adapter, subspace, where, overwrite):
    flag, relative = where
    before = snapshot(adapter.parent.parent)
    destination = (adapter / relative).resolve() if relative != "." else adapter
    result = run_cli("correct", adapter, "--subspace", subspace, flag, destination, *overwrite)
    line = assert_one_line_error(result, 2, flag, "adapter folder", "destroy")
    assert "choose another folder" in line
    assert snapshot(adapter.parent.parent) == before


def test_correct_never_writes_onto_its_subspace_or_models(adapter, models, subspace, tmp_path):
    base, aligned, _ = models
    assert_one_line_error(
        run_cli("correct", adapter, "--subspace", subspace, "--out", subspace, "--overwrite"),
        2,
        "--out",
        "subspace folder",
    )
    assert (subspace / "subspace.json").is_file()
    assert_one_line_error(
        run_cli("correct", adapter, "--base", base, "--aligned", aligned, "--out", aligned, "--overwrite"),
        2,
        "aligned model folder",
    )
    assert (aligned / "config.json").is_file()


@pytest.mark.parametrize("which", ["adapter", "base", "aligned"])
def test_estimate_never_writes_a_subspace_over_an_input(adapter, models, which):
    base, aligned, _ = models
    target = {"adapter": adapter, "base": base, "aligned": aligned}[which]
    before = snapshot(target)
    result = run_cli(
        "estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", target, "--overwrite"
    )
    assert_one_line_error(result, 2, "--out", f"{which} ", "folder")
    assert snapshot(target) == before


def test_demo_keep_refuses_a_folder_that_holds_something(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine\n")
    result = run_cli("demo", "--keep", keep)
    assert_one_line_error(result, 1, str(keep), "not empty", "--overwrite")
    assert sorted(path.name for path in keep.iterdir()) == ["notes.txt"]


def test_demo_models_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        build_demo(tmp_path)
    finally:
        os.umask(previous)
    modes = {
        path.relative_to(tmp_path).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in tmp_path.rglob("*.safetensors")
    }
    assert modes and set(modes.values()) == {0o644}, modes


# Swapped base/aligned: the subspace is the same, V's sign is not.


@pytest.fixture(scope="module")
def swapped(models, root):
    """A subspace estimated with the models swapped (ALIGNED BASE), and what estimate-subspace said."""
    base, aligned, adapter = models
    out = root / "swapped"
    result = run_cli("estimate-subspace", aligned, base, "--adapter", adapter, "--rank", RANK, "--out", out)
    assert_ok(result)
    return out, result


def test_swapped_estimate_warns_naming_the_adapters_base_model(swapped, models):
    _, result = swapped
    warnings = [line for line in result.stderr_lines if line.startswith("csulora: warning:")]
    assert len(warnings) == 1, result.describe()
    assert "swapped" in warnings[0] and "base_model_name_or_path" in warnings[0] and str(models[1]) in warnings[0]


def test_subspace_folder_records_which_side_is_which(subspace, swapped):
    manifest = json.loads((subspace / "subspace.json").read_text())
    assert manifest["order"]["displacement"] == "aligned - base"
    assert any("names the aligned model" in line for line in manifest["order"]["evidence"])
    assert json.loads((swapped[0] / "subspace.json").read_text())["order"]["evidence"] == []


def test_gate_on_a_swapped_subspace_is_refused_unless_confirmed(swapped, models):
    out, _ = swapped
    adapter = models[2]
    gate = ("inspect", adapter, "--subspace", out, "--gate", "reversal", "--fail-below", "-1")
    refused = run_cli(*gate)
    assert_one_line_error(refused, 2, "swapped", "--confirm-order", "gate")
    confirmed = run_cli(*gate, "--confirm-order")
    assert_ok(confirmed)
    assert "swapped" not in confirmed.stderr


def test_correct_with_swapped_models_warns(models, tmp_path):
    base, aligned, adapter = models
    result = run_cli(
        "correct",
        adapter,
        "--base",
        aligned,
        "--aligned",
        base,
        "--rank",
        RANK,
        "--dry-run",
        "--json",
        env={"CSULORA_CACHE": tmp_path / "cache"},
    )
    assert_ok(result)
    assert any("swapped" in line for line in result.stderr_lines), result.describe()


def test_right_order_says_nothing(models, subspace):
    result = run_cli("inspect", models[2], "--subspace", subspace, "--gate", "reversal", "--fail-below", "-1")
    assert_ok(result)
    assert "swapped" not in result.stderr


def test_a_base_models_card_naming_the_aligned_model_is_evidence(models, tmp_path):
    base, aligned, adapter = models
    copies = tmp_path / "copies"
    shutil.copytree(base, copies / "base")
    shutil.copytree(aligned, copies / "aligned")
    (copies / "aligned" / "README.md").write_text(f"---\nbase_model: {copies / 'base'}\n---\n")
    plain_adapter = tmp_path / "adapter"
    shutil.copytree(adapter, plain_adapter)
    config = json.loads((plain_adapter / "adapter_config.json").read_text())
    (plain_adapter / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": None}))
    env = {"CSULORA_CACHE": tmp_path / "cache"}
    swapped = run_cli(
        "estimate-subspace", copies / "aligned", copies / "base", "--adapter", plain_adapter, "--rank", RANK, env=env
    )
    assert_ok(swapped)
    assert any("README.md (base_model)" in line for line in swapped.stderr_lines), swapped.describe()
