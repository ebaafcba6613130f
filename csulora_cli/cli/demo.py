"""`csulora demo`: the tiny built-in model pair and adapter, run through estimate -> inspect -> correct.

The models and the adapter go to `DIR/base`, `DIR/aligned` and `DIR/adapter`; what the demo's own run
writes (subspace, corrected adapter, cache) to `DIR/demo-run`, so that the README's walkthrough, which
writes its own outputs beside the models, never lands in a folder the demo filled.
"""

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
from ..errors import CsuloraError, OutputExistsError
from ..testing.builders import build_demo
from .output import Output

RUN_FOLDER = "demo-run"


def run_demo(output: Output, keep: Path | None = None, overwrite: bool = False) -> None:
    if keep is not None and keep.exists():
        if not keep.is_dir():
            raise CsuloraError("output exists and is not a folder", where=str(keep))
        if any(keep.iterdir()) and not overwrite:
            raise OutputExistsError(
                "folder exists and is not empty",
                where=str(keep),
                hint="pass {overwrite} to build the demo in it anyway",
            )
    with tempfile.TemporaryDirectory(prefix="csulora-demo-") as scratch:
        root = keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        base, aligned, adapter = build_demo(root)
        run = root / RUN_FOLDER
        run.mkdir(exist_ok=True)
        cache = run / "cache"
        _say(output, output.stderr, f"demo models and adapter in {root}")
        estimation = EstimationParams(max_rank=16)
        _rule(output, "1. csulora estimate-subspace")
        output.estimate(
            estimate_subspace(
                EstimateRequest(
                    base=str(base),
                    aligned=str(aligned),
                    adapter=adapter,
                    estimation=estimation,
                    cache_dir=cache,
                    out=run / "subspace",
                    overwrite=True,
                ),
                output,
            )
        )
        _rule(output, "2. csulora inspect")
        spec = SubspaceSpec(subspace=run / "subspace", estimation=estimation)
        output.inspect([inspect(InspectRequest(adapter=adapter, subspace=spec), output)])
        _rule(output, "3. csulora correct")
        reports = correct(
            CorrectRequest(adapters=(adapter,), out=run / "corrected", subspace=spec, overwrite=True), output
        )
        output.reports(reports, dry_run=False)
        where = f"corrected adapter written to {run / 'corrected'}"
        if keep is None:  # the folder goes with the temporary directory: say so, and how to keep it
            where += " (a temporary folder, removed now; csulora demo --keep DIR keeps it)"
        _say(output, output.stdout, where)


def _say(output: Output, console, line: str) -> None:
    """The demo's own lines; `--quiet` keeps errors only, as for every command."""
    if not output.quiet:
        console.print(line, highlight=False)


def _rule(output: Output, title: str) -> None:
    if not output.quiet:
        output.stdout.rule(title)
