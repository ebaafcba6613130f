"""`--out` and `--overwrite` as users of `hf` and mergekit expect: `--overwrite` replaces only a folder
csulora wrote, the folder a shell stands in is never an output, an empty folder is free, and a missing
parent is created.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import RANK, assert_ok, assert_one_line_error, run_cli, snapshot


def _correct(adapter, subspace, *more, cwd=None):
    return run_cli("correct", adapter, "--subspace", subspace, "--rank", RANK, *more, cwd=cwd)


@pytest.mark.parametrize("value", [".", "..", ""], ids=["dot", "dot-dot", "empty"])
def test_the_current_folder_and_those_above_it_are_never_an_output(models, subspace, tmp_path, value):
    """`--out ~/project --overwrite` from inside ~/project once deleted a thesis and a src/ tree."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "thesis.tex").write_text("years of work\n")
    before = snapshot(tmp_path)
    result = _correct(models[2], subspace, "--out", value, "--overwrite", cwd=project)
    line = assert_one_line_error(result, 2, "current folder" if value != ".." else "above the current one")
    assert "internal error" not in line
    assert snapshot(tmp_path) == before  # no .csulora-tmp-* left either


def test_estimate_refuses_the_current_folder_too(models, tmp_path):
    base, aligned, adapter = models
    (tmp_path / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    result = run_cli(
        "estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", ".", "--overwrite",
        "--cache-dir", tmp_path.parent / f"{tmp_path.name}-cache", cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, 2, "current folder")
    assert snapshot(tmp_path) == before


def test_an_empty_out_is_used_and_a_missing_parent_is_created(models, subspace, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_ok(_correct(models[2], subspace, "--out", empty))
    assert (empty / "csulora_report.json").is_file()
    nested = tmp_path / "not" / "yet" / "there"
    assert_ok(_correct(models[2], subspace, "--out", nested))
    assert (nested / "adapter_model.safetensors").is_file()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".csulora")] == []


def test_overwrite_refuses_a_csulora_output_the_user_added_to(models, subspace, tmp_path):
    out = tmp_path / "safe"
    assert_ok(_correct(models[2], subspace, "--out", out))
    (out / "my-notes.md").write_text("evaluation results\n")
    (out / "eval").mkdir()
    (out / "eval" / "scores.json").write_text("{}\n")
    before = snapshot(tmp_path)
    line = assert_one_line_error(_correct(models[2], subspace, "--out", out, "--overwrite"), 1, "my-notes.md", "eval/")
    assert "--overwrite" in line
    assert snapshot(tmp_path) == before


def test_out_dir_overwrite_follows_the_same_rule(models, subspace, tmp_path):
    out_dir = tmp_path / "corrected"
    assert_ok(run_cli("correct", models[2], "--subspace", subspace, "--rank", RANK, "--out-dir", out_dir))
    (only,) = [path for path in out_dir.iterdir()]
    (only / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    result = run_cli("correct", models[2], "--subspace", subspace, "--rank", RANK, "--out-dir", out_dir, "--overwrite")
    assert_one_line_error(result, 1, "notes.txt")
    assert snapshot(tmp_path) == before
    (only / "notes.txt").unlink()
    assert_ok(
        run_cli("correct", models[2], "--subspace", subspace, "--rank", RANK, "--out-dir", out_dir, "--overwrite")
    )
    assert json.loads((only / "csulora_report.json").read_text())["method"]
