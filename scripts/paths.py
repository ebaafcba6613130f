"""Where the scripts read and write, in one place: the repository, raw per-run data, committed results."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Raw per-run data, benchmark workdirs and caches: regenerated, never committed (.gitignore).
RAW = REPO / "scripts" / "out"
# The tables and plots the docs show: small, committed.
RESULTS = REPO / "docs" / "results"
