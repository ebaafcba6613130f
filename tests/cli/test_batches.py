"""Batches and gates as CI uses them: `correct --keep-going`, one refused adapter named with the ones not
written, a dry run that refuses what the run refuses, `inspect` of several adapters, and a gate that
always has a threshold.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import assert_ok, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def runs(models, root):
    """runs/{a,b,c}/adapter: b is not an adapter (no adapter_config.json)."""
    _, _, adapter = models
    for name in ("a", "b", "c"):
        shutil.copytree(adapter, root / "runs" / name / "adapter")
    (root / "runs" / "b" / "adapter" / "adapter_config.json").unlink()
    return [root / "runs" / name / "adapter" for name in ("a", "b", "c")]


def test_one_bad_adapter_stops_the_batch_and_names_those_not_written(runs, subspace, tmp_path):
    out = tmp_path / "out"
    line = assert_one_line_error(run_cli("correct", *runs, "--subspace", subspace, "--out-dir", out), 1)
    assert str(runs[1]) in line and "none of the 3 adapters was written" in line and "--keep-going" in line
    assert str(runs[0]) in line.split("none of")[1] and str(runs[2]) in line.split("none of")[1]
    assert not out.exists()


def test_keep_going_writes_the_good_ones_and_reports_each_failure(runs, subspace, tmp_path):
    out = tmp_path / "out"
    result = run_cli("correct", *runs, "--subspace", subspace, "--out-dir", out, "--keep-going", "--json")
    assert result.rc == 1, result.describe()
    errors = [line for line in result.stderr_lines if line.startswith("csulora: error:")]
    assert len(errors) == 1 and str(runs[1]) in errors[0], result.describe()
    document = result.json()
    assert [report["adapter"] for report in document["adapters"]] == [str(runs[0]), str(runs[2])]
    # The outputs land where they would have without the bad one (its place in the common parent kept).
    assert (out / "a" / "adapter" / "csulora_report.json").is_file()
    assert (out / "c" / "adapter" / "csulora_report.json").is_file()
    assert not (out / "b").exists()
    assert_ok(run_cli("verify", out / "a" / "adapter", out / "c" / "adapter"))


def test_keep_going_reports_every_failure_on_a_line_of_its_own(runs, subspace, tmp_path):
    out = tmp_path / "out"
    (out / "c" / "adapter").mkdir(parents=True)
    (out / "c" / "adapter" / "mine.txt").write_text("kept")
    result = run_cli("correct", *runs, "--subspace", subspace, "--out-dir", out, "--keep-going")
    assert result.rc == 1, result.describe()
    errors = [line for line in result.stderr_lines if line.startswith("csulora: error:")]
    assert len(errors) == 2, result.describe()
    assert str(runs[1]) in errors[0] and str(out / "c" / "adapter") in errors[1]
    assert (out / "a" / "adapter" / "csulora_report.json").is_file()
    assert (out / "c" / "adapter" / "mine.txt").read_text() == "kept"


def test_keep_going_with_every_adapter_refused_writes_nothing(runs, subspace, tmp_path):
    out = tmp_path / "out"
    result = run_cli("correct", runs[1], runs[1].parent, "--subspace", subspace, "--out-dir", out, "--keep-going")
    assert result.rc == 1 and len(result.stderr_lines) == 2, result.describe()
    assert not out.exists()


@pytest.mark.parametrize("where", ["input", "existing", "foreign"])
def test_dry_run_refuses_what_the_run_refuses(models, subspace, tmp_path, where):
    _, _, adapter = models
    out = tmp_path / "out"
    if where == "input":
        out = adapter.parent
    elif where == "existing":
        assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out))
    else:
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
    flags = ("--overwrite",) if where == "foreign" else ()
    real = run_cli("correct", adapter, "--subspace", subspace, "--out", out, *flags)
    dry = run_cli("correct", adapter, "--subspace", subspace, "--out", out, *flags, "--dry-run")
    assert real.rc != 0 and dry.rc == real.rc, dry.describe()
    assert dry.stderr_lines == real.stderr_lines


def test_dry_run_refuses_an_out_dir_output_that_exists(runs, subspace, tmp_path):
    out = tmp_path / "out"
    assert_ok(run_cli("correct", runs[0], "--subspace", subspace, "--out-dir", out))
    line = assert_one_line_error(run_cli("correct", runs[0], "--subspace", subspace, "--out-dir", out, "--dry-run"), 1)
    assert str(out / "adapter") in line and "--overwrite" in line


# A gate always has a threshold


def test_a_gate_without_a_threshold_is_refused_naming_both_flags(models, subspace):
    line = assert_one_line_error(run_cli("inspect", models[2], "--subspace", subspace, "--gate", "reversal"), 2)
    assert "--fail-above" in line and "--fail-below" in line and "--gate" in line


def test_a_gate_that_only_chooses_what_plot_draws_needs_no_threshold(models, subspace, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "reversal.png"
    assert_ok(run_cli("inspect", models[2], "--subspace", subspace, "--gate", "reversal", "--plot", plot))
    assert plot.is_file()


def test_a_threshold_without_gate_checks_off_share(models, subspace):
    result = run_cli("inspect", models[2], "--subspace", subspace, "--fail-above", "1", "--json")
    assert_ok(result)
    document = result.json()
    assert document["gate"]["statistic"] == "off_share" and document["gate"]["tripped"] is False
    assert document["gates"] == [document["gate"]]


def test_help_states_the_gate_rule():
    result = assert_ok(run_cli("inspect", "--help"))
    text = " ".join(result.stdout.split())
    assert "A gate always has a threshold" in text


# inspect ADAPTER...


def test_inspect_takes_several_adapters_and_the_gate_trips_if_any_does(runs, models, subspace):
    adapters = (runs[0], runs[2])
    passed = run_cli("inspect", *adapters, "--subspace", subspace, "--fail-above", "1", "--json")
    assert_ok(passed)
    document = passed.json()
    assert [record["adapter"] for record in document["adapters"]] == [str(a) for a in adapters]
    assert [gate["adapter"] for gate in document["gates"]] == [str(a) for a in adapters]
    share = document["gates"][0]["value"]
    # A threshold between nothing and the adapters' share: each of them trips, each named in the one line.
    tripped = run_cli("inspect", *adapters, "--subspace", subspace, "--fail-above", f"{share / 2}")
    assert tripped.rc == 3, tripped.describe()
    (line,) = [line for line in tripped.stderr_lines if "error" in line]
    assert str(runs[0]) in line and str(runs[2]) in line
    tables = assert_ok(run_cli("inspect", *adapters))
    assert str(runs[0]) in tables.stdout and str(runs[2]) in tables.stdout


def test_inspect_json_of_one_adapter_keeps_its_shape(models, subspace):
    document = assert_ok(run_cli("inspect", models[2], "--subspace", subspace, "--json")).json()
    assert set(document) == {"schema_version", "tool", "command", "adapters", "gate", "gates"}
    assert document["schema_version"] == 2 and len(document["adapters"]) == 1 and document["gate"] is None


def test_plot_with_several_adapters_is_refused(runs, subspace, tmp_path):
    line = assert_one_line_error(
        run_cli("inspect", runs[0], runs[2], "--subspace", subspace, "--plot", tmp_path / "p.png"), 2
    )
    assert "--plot" in line and not (tmp_path / "p.png").exists()


# validate - and subspace.json


def test_validate_reads_stdin(models, subspace):
    document = assert_ok(run_cli("inspect", models[2], "--subspace", subspace, "--json")).stdout
    result = assert_ok(run_cli("validate", "-", input=document))
    assert result.stdout.strip() == "valid: stdin (inspect.schema.json)"
    broken = document.replace('"schema_version": 2', '"schema_version": "two"')
    line = assert_one_line_error(run_cli("validate", "-", input=broken), 1, "stdin", "inspect.schema.json")
    assert "schema_version" in line


def test_validate_knows_a_subspace_manifest(subspace, tmp_path):
    manifest = subspace / "subspace.json"
    result = assert_ok(run_cli("validate", manifest))
    assert result.stdout.strip() == f"valid: {manifest} (subspace.schema.json)"
    broken = json.loads(manifest.read_text())
    broken["estimation"]["max_rank"] = 0
    (tmp_path / "subspace.json").write_text(json.dumps(broken))
    line = assert_one_line_error(run_cli("validate", tmp_path / "subspace.json"), 1, "subspace.schema.json")
    assert "estimation/max_rank" in line
