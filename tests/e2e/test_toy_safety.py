"""Smoke test of the toy safety benchmark: one seed at tiny sizes, through the real script and CLI.

The figures themselves are the benchmark's business (scripts/evidence/toy_safety.py); this checks that
the pipeline runs end to end and that its output has the promised shape and sense.
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

from csulora_cli.correction.methods import METHODS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.compat, pytest.mark.slow]
SCORES = ("asr", "utility", "utility_token", "original_task")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_safety")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.evidence.toy_safety",
            "--quick",
            "--seeds",
            "1",
            "--out",
            str(out),
            "--raw",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return out, done.stdout, json.loads((out / "toy_safety.json").read_text())


def test_rows_have_the_promised_fields_and_finite_scores(run):
    _, _, rows = run
    assert isinstance(rows, list) and rows
    for row in rows:
        assert {"method", "params", "seed", *SCORES} <= set(row), row
        assert row["seed"] == 0
        for score in SCORES:
            assert math.isfinite(row[score]) and 0.0 <= row[score] <= 1.0, (score, row)


def test_alignment_lowers_asr_and_the_attack_raises_it(run):
    _, _, rows = run
    aligned = [r for r in rows if r["method"] == "aligned"]
    attack = [r for r in rows if r["method"] == "uncorrected" and r["params"] == {"adapter": "attack"}]
    assert len(aligned) == 1 and len(attack) == 1
    assert aligned[0]["asr"] < attack[0]["asr"]


def quick_methods() -> set[str]:
    """The methods of the benchmark's --quick settings, as the script itself lists them."""
    listed = subprocess.run(
        [sys.executable, "-m", "scripts.evidence.toy_safety", "--quick", "--list-settings"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return {json.loads(line)["method"] for line in listed.stdout.splitlines() if line.strip()}


def test_every_installed_method_in_the_table_produced_rows(run):
    out, stdout, rows = run
    table = quick_methods()
    installed = table & set(METHODS)
    assert installed >= {"none", "project", "csulora"}
    produced = {r["method"] for r in rows if "setting" in r}
    assert produced == installed
    for row in rows:
        if "setting" in row:
            assert math.isfinite(row["removed_energy"]) and math.isfinite(row["cosine"])
    # Methods of the table this csulora does not offer are named as skipped, not silently dropped.
    for method in table - set(METHODS):
        assert f"skipped {method}" in stdout
    assert "## Frontier" in (out / "toy_safety.md").read_text()


def test_the_diagnostics_give_subspace_shares_for_each_adapter(run):
    _, _, rows = run
    adapters = {r["params"]["adapter"]: r for r in rows if r["method"] == "uncorrected"}
    assert set(adapters) == {"attack", "task-only", "trigger-only"}
    for row in adapters.values():
        for figures in row["in_subspace"].values():
            assert 0.0 <= figures["chance"] <= 1.0 and 0.0 <= figures["inside"] <= 1.0 + 1e-9
            assert figures["modules"] and all(m["k"] <= m["m"] for m in figures["modules"])
