"""`inspect --gate STAT --fail-above/--fail-below` and `--plot`: a CI gate on any detection statistic.

The statistics themselves are tested against dense float64 references in tests/unit/test_detection_math.py
and tests/unit/test_detect_pipeline.py; here, that the command line gates and draws with them.
"""

from __future__ import annotations

import importlib.util

import pytest

from csulora_cli.correction.statistics import STATISTICS
from tests.helpers import assert_ok, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def totals(models, subspace) -> dict:
    _, _, adapter = models
    return assert_ok(run_cli("inspect", adapter, "--subspace", subspace, "--json")).report()["totals"]["detection"]


def test_the_cli_offers_every_statistic():
    help_text = run_cli("inspect", "--help").stdout
    assert f"--gate <{'|'.join(STATISTICS)}>" in help_text


def test_every_module_and_the_totals_carry_every_statistic(models, subspace, totals):
    _, _, adapter = models
    report = assert_ok(run_cli("inspect", adapter, "--subspace", subspace, "--json")).report()
    assert set(totals) == set(STATISTICS)
    for module in report["modules"]:
        assert set(module["detection"]) == set(STATISTICS)
        assert module["detection"]["off_share"] == pytest.approx(module["off_subspace_energy"], abs=1e-6)
    assert totals["off_share"] == pytest.approx(report["totals"]["off_subspace_energy"], abs=1e-6)


@pytest.mark.parametrize("statistic", tuple(STATISTICS))
def test_gate_trips_on_either_side_of_the_value(models, subspace, totals, statistic):
    _, _, adapter = models
    value = totals[statistic]
    margin = 0.01 if statistic.endswith("_share") else 0.05 * max(abs(value), 0.01)
    common = ("inspect", adapter, "--subspace", subspace, "--gate", statistic, "--json")
    for flag, threshold, tripped in (
        ("--fail-above", value - margin, True),
        ("--fail-above", value + margin, False),
        ("--fail-below", value + margin, True),
        ("--fail-below", value - margin, False),
    ):
        if statistic.endswith("_share") and not 0 <= threshold <= 1:
            continue
        result = run_cli(*common, flag, f"{threshold:.6f}")
        assert result.rc == (3 if tripped else 0), result.describe()
        gate = result.json()["gate"]
        assert gate["statistic"] == statistic and gate["tripped"] is tripped
        assert gate["direction"] == ("above" if flag == "--fail-above" else "below")
        assert gate["value"] == pytest.approx(value)
        if tripped:
            (line,) = result.stderr_lines
            assert line.startswith(f"csulora: error: {statistic} ") and flag in line


def test_fail_above_alone_still_gates_on_the_off_subspace_share(models, subspace, totals):
    _, _, adapter = models
    result = run_cli("inspect", adapter, "--subspace", subspace, "--fail-above", f"{totals['off_share'] - 0.01:.4f}")
    assert result.rc == 3 and "off_share" in result.stderr


def test_gate_flags_are_checked(models, subspace):
    _, _, adapter = models
    both = ("--fail-above", "0.5", "--fail-below", "0.1")
    assert_one_line_error(run_cli("inspect", adapter, "--subspace", subspace, *both), 2, "--fail-below")
    assert_one_line_error(run_cli("inspect", adapter, "--gate", "enrichment", "--fail-above", "2"), 2, "--subspace")
    line = assert_one_line_error(run_cli("inspect", adapter, "--subspace", subspace, "--gate", "nope"), 2, "--gate")
    assert "enrichment" in line


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="--plot needs matplotlib (bench extra)")
def test_plot_writes_a_png_heatmap(models, subspace, tmp_path):
    _, _, adapter = models
    png = tmp_path / "enrichment.png"
    assert_ok(run_cli("inspect", adapter, "--subspace", subspace, "--gate", "reversal", "--plot", png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install_it(models, subspace, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    _, _, adapter = models
    line = assert_one_line_error(
        run_cli("inspect", adapter, "--subspace", subspace, "--plot", tmp_path / "x.png"), 1, "--plot", "matplotlib"
    )
    assert "pip install 'csulora[bench]'" in line
    assert not (tmp_path / "x.png").exists()
