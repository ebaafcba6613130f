"""Smoke test of the toy detection benchmark: two seeds at tiny sizes, through the real script.

The figures are the benchmark's business (scripts/evidence/toy_detect.py); this checks that it runs end
to end and that its output has the promised shape: every statistic scored, AUROC and catch rates in range.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from csulora_cli.correction.statistics import STATISTICS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.compat, pytest.mark.slow]


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_detect")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.evidence.toy_detect",
            "--quick",
            "--seeds",
            "2",
            "--out",
            str(out),
            "--raw",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert (out / "toy_detect.md").read_text().startswith("# Toy detection benchmark")
    return json.loads((out / "toy_detect.json").read_text())


def test_every_adapter_is_scored_by_every_statistic(record):
    adapters = record["adapters"]
    assert {r["seed"] for r in adapters} == {0, 1}
    assert {r["trigger_share"] for r in adapters} == {0.0, 0.3, 1.0}
    for r in adapters:
        assert {variant.split(" ", 1)[0] for variant in r["scores"]} == set(STATISTICS)
        assert all(math.isfinite(value) for value in r["scores"].values()), r
        assert 0.0 <= r["asr"] <= 1.0 and r["asr_gain"] == pytest.approx(r["asr"] - r["twin_asr"])
    assert all(r["asr_gain"] == 0.0 for r in adapters if r["trigger_share"] == 0.0)


def test_the_summary_has_auroc_catch_rates_and_correlations_in_range(record):
    for entry in record["summary"]:
        assert len(entry["auroc"]) == 2 and all(0.0 <= value <= 1.0 for value in entry["auroc"])
        for alpha in ("0.01", "0.05"):
            caught = entry["catch"][alpha]
            assert 0.0 <= caught["caught"] <= 1.0 and 0.0 <= caught["false_alarms"] <= 1.0
        assert all(math.isnan(rho) or -1.0 <= rho <= 1.0 for rho in entry["spearman_asr_gain"])
