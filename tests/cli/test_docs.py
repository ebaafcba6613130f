"""Every command has working `--help`, the README names every command and every long option, and
docs/cli.md is what the app renders now (scripts/tools/cli_reference.py writes it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from csulora_cli.cli import app
from csulora_cli.cli.reference import render_reference
from tests.helpers import assert_ok, run_cli

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CLI_REFERENCE = README.parent / "docs" / "cli.md"
REQUIRED_COMMANDS = ("estimate-subspace", "correct", "inspect", "demo")


def commands() -> dict:
    return typer.main.get_command(app).commands


def long_options(command) -> list[str]:
    options = []
    for parameter in command.params:
        if getattr(parameter, "param_type_name", None) != "option":
            continue
        for flag in [*parameter.opts, *getattr(parameter, "secondary_opts", [])]:
            if flag.startswith("--") and flag != "--help":
                options.append(flag)
    return options


def test_the_contract_commands_exist():
    assert set(REQUIRED_COMMANDS) <= set(commands())


def test_root_help():
    result = assert_ok(run_cli("--help", env={"COLUMNS": "200"}))
    for name in commands():
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(set(REQUIRED_COMMANDS) | set(commands())))
def test_command_help(name):
    result = assert_ok(run_cli(name, "--help", env={"COLUMNS": "200"}))
    assert "Usage" in result.stdout
    for option in long_options(commands()[name]):
        assert re.search(rf"{re.escape(option)}\b", result.stdout), f"{option} missing from `csulora {name} --help`"


@pytest.mark.parametrize("name", sorted(set(REQUIRED_COMMANDS) | set(commands())))
def test_readme_documents_the_command_and_its_options(name):
    assert README.is_file(), "README.md is missing"
    text = README.read_text()
    assert re.search(rf"csulora {re.escape(name)}\b", text), f"README never shows `csulora {name}`"
    missing = [option for option in long_options(commands()[name]) if not re.search(rf"{re.escape(option)}\b", text)]
    assert not missing, f"README does not mention {missing} of `csulora {name}`"


def test_the_command_reference_is_current():
    text = CLI_REFERENCE.read_text(encoding="utf-8") if CLI_REFERENCE.is_file() else None
    assert text == render_reference(), "docs/cli.md is stale: run python -m scripts.tools.cli_reference"


def test_the_command_reference_has_every_command_and_option():
    text = render_reference()
    for name, command in commands().items():
        assert f"## `csulora {name}`" in text
        for option in long_options(command):
            assert f"`{option}`" in text, f"{option} of `csulora {name}` missing from docs/cli.md"
    assert "`--version`" in text


def test_the_reliability_table_names_tests_that_exist():
    """Each row of docs/reliability.md names the tests that check it; a renamed or moved test must not
    leave the table pointing at nothing."""
    table = (REPO / "docs" / "reliability.md").read_text()
    tests = {path.name: path for path in (REPO / "tests").rglob("test_*.py")}
    missing = []
    for file, function in re.findall(r"\b(test_\w+\.py)(?:::(test_\w+))?", table):
        if file not in tests:
            missing.append(file)
        elif function and not re.search(rf"^def {function}\(", tests[file].read_text(), re.MULTILINE):
            missing.append(f"{file}::{function}")
    assert not missing, sorted(set(missing))


def _halves_the_attack_at_90_percent_of_the_task(results: dict) -> bool:
    """Whether any correction setting of the committed real-model run halves ASR (either judge) at 90% of
    the uncorrected adapter's task accuracy (adapters trained on harmful data alone have no task: NaN)."""
    import math

    for settings in results["corrections"].values():
        none = settings["none"]
        if math.isnan(none["task_accuracy"]["mean"]):
            continue
        for name, row in settings.items():
            if name == "none" or row["task_accuracy"]["mean"] < 0.9 * none["task_accuracy"]["mean"]:
                continue
            for judge in ("asr_keyword", "asr_likelihood"):
                if row[judge]["mean"] <= 0.5 * none[judge]["mean"]:
                    return True
    return False


def test_the_readme_opening_says_what_the_evidence_says():
    """A user reads the first paragraphs, not the evidence section 500 lines down: the opening's verdict
    must follow the committed real-model results."""
    import json

    opening = " ".join(README.read_text().split("\n## ", 1)[0].split())
    results_folder = README.parent / "docs" / "results"
    results = json.loads((results_folder / "real_model.json").read_text())
    restore = json.loads((results_folder / "real_model_restore.json").read_text())
    # Every family of the restore part, chosen on validation and read on held-out (the goal of its report). The
    # goal is defined at a share of the task: an adapter without one (harmful-only) is met by deleting it, so
    # its verdict is stated in the README's evidence, not read as "restores refusals".
    met = {
        group: entry["goal"]["verdict"]["met_weak_by"]
        for group, entry in restore["groups"].items()
        if entry["goal"]["verdict"]["met"] and entry["task"] is not None
    }
    restored = _halves_the_attack_at_90_percent_of_the_task(results) or bool(met)
    negative = "no correction brings refusals back" in opening or "does not bring refusals back" in opening
    assert negative != restored, (
        "the README's opening and docs/results/real_model{,_restore}.json disagree on whether a correction "
        f"restores refusals (met: {met})"
    )
    if restored:
        assert "configs/" in opening, "a setting that meets the goal is the opening's first example, as a preset"
