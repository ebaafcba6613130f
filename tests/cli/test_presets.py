"""configs/README.md, checked sentence by sentence: what a preset does, and that its table lists the presets."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tests.helpers import RANK, assert_ok, assert_one_line_error, run_cli

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_table_lists_exactly_the_presets():
    listed = set(re.findall(r"^\| `([\w-]+\.yaml)` \|", (CONFIGS / "README.md").read_text(), re.MULTILINE))
    assert listed == {path.name for path in CONFIGS.glob("*.yaml")}


def test_a_key_only_another_command_takes_is_skipped(models, subspace, tmp_path):
    _, _, adapter = models
    result = run_cli(
        "correct", adapter, "--subspace", subspace, "--out", tmp_path / "o", "--config", CONFIGS / "ci-gate.yaml"
    )
    assert_ok(result)


def test_typed_flags_win_over_the_file(models, subspace, tmp_path):
    _, _, adapter = models
    config = tmp_path / "p.yaml"
    config.write_text("lambda: 0.5\n")
    result = run_cli("inspect", adapter, "--subspace", subspace, "--config", config, "--lambda", "2", "--json")
    assert result.report()["method"]["params"]["lambda"] == 2.0


def test_invalid_yaml_is_a_usage_error_naming_the_line(models, subspace, tmp_path):
    _, _, adapter = models
    config = tmp_path / "broken.yaml"
    config.write_text("rank: 16\nenergy: [0.9\nmethod: csulora\n")
    line = assert_one_line_error(run_cli("inspect", adapter, "--subspace", subspace, "--config", config), 2)
    assert str(config) in line and "line 3" in line


def test_a_presets_rank_caps_a_subspace_folder(models, subspace, tmp_path):
    _, _, adapter = models
    config = tmp_path / "small.yaml"
    config.write_text("rank: 2\n")
    capped = run_cli("inspect", adapter, "--subspace", subspace, "--config", config, "--json").report()
    assert capped["subspace"]["rank_cap"] == 2
    assert {module["subspace"]["k"] for module in capped["modules"]} == {2}
    # Above what the folder stores (RANK): every stored column, no refusal, unlike a typed --rank.
    config.write_text(f"rank: {RANK * 8}\n")
    assert_ok(run_cli("inspect", adapter, "--subspace", subspace, "--config", config))
    assert_one_line_error(run_cli("inspect", adapter, "--subspace", subspace, "--rank", RANK * 8), 2, "--rank")


def test_paths_are_relative_to_the_presets_folder(models, subspace, tmp_path):
    _, _, adapter = models
    presets = tmp_path / "presets"
    presets.mkdir()
    shutil.copytree(subspace, presets / "s")
    (presets / "p.yaml").write_text("subspace: s\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("inspect", adapter, "--config", presets / "p.yaml", "--json", cwd=elsewhere)
    assert json.loads(result.stdout)["adapters"][0]["subspace"]["folder"] == str((presets / "s").resolve())
