"""The frictions a new user met, each with what the command now says: a typo'd folder, --quiet, Ctrl-C,
--dry-run over an existing output (refused as the run refuses it), the inspect table's title, the
subspace card's sentences.
"""

from __future__ import annotations

import importlib

import pytest

from csulora_cli.report.subspace_card import estimation_sentence
from tests.helpers import assert_ok, assert_one_line_error, run_cli


@pytest.mark.parametrize("command", [("inspect",), ("correct", "--dry-run", "--subspace", "s")])
def test_a_typo_says_first_there_is_no_local_folder(tmp_path, command):
    name, *flags = command
    line = assert_one_line_error(run_cli(name, "adaptr", *flags, cwd=tmp_path), 1)
    assert line.startswith("csulora: error: adaptr: no local folder of that name, and as a Hub repo"), line


def test_a_typod_model_says_so_too(models, tmp_path):
    _, _, adapter = models
    line = assert_one_line_error(run_cli("inspect", adapter, "--base", "bse", cwd=tmp_path), 1)
    assert line.startswith("csulora: error: bse: no local folder of that name"), line


@pytest.mark.parametrize(
    "command",
    [
        ("inspect", "{adapter}", "--subspace", "{subspace}"),
        ("inspect", "{adapter}"),
        ("correct", "{adapter}", "--subspace", "{subspace}", "--dry-run"),
        ("correct", "{adapter}", "--subspace", "{subspace}", "--out", "{out}"),
        ("estimate-subspace", "{base}", "{aligned}", "--adapter", "{adapter}", "--rank", "8", "--out", "{subspace}"),
    ],
    ids=["inspect", "inspect-modules", "dry-run", "correct", "estimate"],
)
def test_quiet_prints_nothing_but_errors(models, subspace, tmp_path, command):
    base, aligned, adapter = models
    values = {"base": base, "aligned": aligned, "adapter": adapter, "subspace": subspace, "out": tmp_path / "o"}
    result = run_cli(*(part.format(**values) for part in command), "--quiet")
    assert_ok(result)
    assert result.stdout == "" and result.stderr == "", result.describe()


def test_json_is_alone_on_stdout_even_when_quiet(models, subspace):
    result = run_cli("inspect", models[2], "--subspace", subspace, "--json", "--quiet")
    assert_ok(result)
    assert result.json()["command"] == "inspect" and result.stderr == ""


def test_ctrl_c_prints_one_line_saying_nothing_was_written(models, subspace, tmp_path, monkeypatch):
    api = importlib.import_module("csulora_cli.api")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "correct", interrupted)
    result = run_cli("correct", models[2], "--subspace", subspace, "--out", tmp_path / "o")
    line = assert_one_line_error(result, 130)
    assert line == "csulora: interrupted: correct stopped; nothing was written (an output appears only once complete)"
    assert not (tmp_path / "o").exists()


def test_dry_run_refuses_an_existing_output_as_the_run_would(models, subspace, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = assert_one_line_error(run_cli("correct", models[2], "--subspace", subspace, "--out", out, "--dry-run"), 1)
    assert str(out) in line and "--overwrite" in line
    # With --overwrite the real run would still refuse a folder csulora did not write: so does the dry run.
    line = assert_one_line_error(
        run_cli("correct", models[2], "--subspace", subspace, "--out", out, "--dry-run", "--overwrite"), 1
    )
    assert "notes.txt" in line
    (out / "notes.txt").unlink()
    assert_ok(run_cli("correct", models[2], "--subspace", subspace, "--out", tmp_path / "fresh", "--dry-run"))
    written = tmp_path / "written"
    assert_ok(run_cli("correct", models[2], "--subspace", subspace, "--out", written))
    quiet = assert_ok(
        run_cli("correct", models[2], "--subspace", subspace, "--out", written, "--dry-run", "--overwrite")
    )
    assert "warning" not in quiet.stderr


def test_inspect_titles_its_table_as_what_correct_would_remove(models, subspace):
    result = assert_ok(run_cli("inspect", models[2], "--subspace", subspace))
    assert "what correct would remove (nothing written)" in result.stdout
    assert "dry run" not in result.stdout


def test_subspace_card_says_how_in_a_sentence():
    sentence = estimation_sentence({"max_rank": 256, "exact": False, "seed": 0, "power_iterations": 1})
    assert "False" not in sentence and "True" not in sentence
    assert sentence == (
        "randomized range finder (sketch seed 0, 1 power iteration; exact SVD was not used), keeping at most 256 "
        "basis columns per module."
    )
    assert estimation_sentence({"max_rank": 16, "exact": True, "seed": 0, "power_iterations": 1}).startswith(
        "exact SVD of each displacement"
    )


def test_no_source_of_bases_is_named_by_its_flags(models, tmp_path):
    line = assert_one_line_error(run_cli("correct", models[2], "--out", tmp_path / "o"), 2, "--subspace", "--base")
    assert "SubspaceSpec" not in line and "=..." not in line


@pytest.mark.parametrize("command", ["correct", "inspect", "estimate-subspace"])
def test_an_option_without_its_value_points_at_the_commands_help(command):
    flag = "--subspace" if command == "inspect" else "--out"
    line = assert_one_line_error(run_cli(command, "x", flag), 2)
    assert f"{flag} needs a value" in line and f"(see csulora {command} --help)" in line, line


def test_demo_takes_quiet(tmp_path):
    result = assert_ok(run_cli("demo", "--quiet", "--keep", tmp_path / "demo"))
    assert result.stdout == "" and result.stderr == "", result.describe()
    assert (tmp_path / "demo" / "demo-run" / "corrected" / "csulora_report.json").is_file()
