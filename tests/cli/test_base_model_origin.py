"""An aligned model taken from `base_model_name_or_path` is named as such when it cannot be opened.

The user never typed that path: without the origin, "aligned: no such local folder" is a puzzle.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import RANK, assert_one_line_error, run_cli


def adapter_naming(adapter: Path, folder: Path, base_model: str) -> Path:
    shutil.copytree(adapter, folder)
    config_path = folder / "adapter_config.json"
    config_path.write_text(json.dumps(json.loads(config_path.read_text()) | {"base_model_name_or_path": base_model}))
    return folder


@pytest.mark.parametrize("command", ["correct", "inspect"])
def test_relative_base_model_missing_from_this_directory(models, tmp_path, command):
    base, _, adapter = models
    folder = adapter_naming(adapter, tmp_path / "runs" / "a", "./aligned")
    out = ("--out", tmp_path / "out") if command == "correct" else ()
    result = run_cli(command, "runs/a", "--base", base, "--rank", RANK, *out, cwd=tmp_path)
    line = assert_one_line_error(result, 1, "(base_model_name_or_path in runs/a/adapter_config.json)")
    assert "./aligned (base_model_name_or_path" in line and "no such local folder" in line
    assert folder.is_dir() and not (tmp_path / "out").exists()


def test_base_model_folder_without_weights(models, tmp_path):
    base, _, adapter = models
    empty = tmp_path / "empty-model"
    empty.mkdir()
    folder = adapter_naming(adapter, tmp_path / "a", str(empty))
    result = run_cli("correct", folder, "--base", base, "--rank", RANK, "--out", tmp_path / "out")
    assert_one_line_error(
        result,
        1,
        f"{empty} (base_model_name_or_path in {folder / 'adapter_config.json'}): no model.safetensors",
    )


def test_an_aligned_model_given_explicitly_is_not_blamed_on_the_adapter(models, tmp_path):
    base, _, adapter = models
    result = run_cli(
        "correct", adapter, "--base", base, "--aligned", tmp_path / "nope", "--rank", RANK, "--out", tmp_path / "o"
    )
    line = assert_one_line_error(result, 1, str(tmp_path / "nope"))
    assert "base_model_name_or_path" not in line
