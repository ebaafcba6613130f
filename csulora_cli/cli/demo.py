"""`csulora demo`: the tiny built-in model pair and adapter, run through estimate -> inspect -> correct."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..api import (
    CorrectRequest,
    EstimateRequest,
    EstimationParams,
    InspectRequest,
    SubspaceSpec,
    correct,
    estimate_subspace,
    inspect,
)
from ..testing.builders import build_demo
from .output import Output


def run_demo(output: Output, keep: Path | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="csulora-demo-") as scratch:
        root = keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        base, aligned, adapter = build_demo(root)
        cache = root / "cache"
        output.stderr.print(f"demo models and adapter in {root}", highlight=False)
        estimation = EstimationParams(max_rank=16)
        output.stdout.rule("1. csulora estimate-subspace")
        output.estimate(
            estimate_subspace(
                EstimateRequest(
                    base=str(base),
                    aligned=str(aligned),
                    adapter=adapter,
                    estimation=estimation,
                    cache_dir=cache,
                    out=root / "subspace",
                    overwrite=True,
                ),
                output,
            )
        )
        output.stdout.rule("2. csulora inspect")
        spec = SubspaceSpec(subspace=root / "subspace", estimation=estimation)
        output.inspect(inspect(InspectRequest(adapter=adapter, subspace=spec), output))
        output.stdout.rule("3. csulora correct")
        reports = correct(
            CorrectRequest(adapters=(adapter,), out=root / "corrected", subspace=spec, overwrite=True), output
        )
        output.reports(reports, dry_run=False)
        where = f"corrected adapter written to {root / 'corrected'}"
        if keep is None:  # the folder goes with the temporary directory: say so, and how to keep it
            where += " (a temporary folder, removed now; csulora demo --keep DIR keeps it)"
        output.stdout.print(where, highlight=False)
