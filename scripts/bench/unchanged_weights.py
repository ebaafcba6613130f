"""Peak memory of `estimate-subspace` over a whole model (no --adapter) against an adapter-targeted run.

Without --adapter every 2-D weight is a target, the embedding among them, which alignment usually leaves
alone (the synthetic pairs of `scale.py` leave it unchanged). The run compares such a weight block by
block and never forms its V; before, it formed a float32 V of the whole embedding (1 GB on the 1B shape)
to find it zero. Uses the 1B shape cut to its first blocks (`--layers`), so the embedding dominates.

    python -m scripts.bench.unchanged_weights [--layers 2] [--tree DIR]

`--tree DIR` measures the `csulora_cli` of another checkout (PYTHONPATH=DIR for the measured runs), for a
before/after on the same data.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from pathlib import Path

from scripts.bench.scale import SHAPES, csulora, measure, prepare
from scripts.paths import RAW


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2, help="blocks of the 1B shape kept (default 2)")
    parser.add_argument("--workdir", type=Path, default=RAW / "bench_data")
    parser.add_argument("--tree", type=Path, help="measure the csulora_cli of this checkout")
    args = parser.parse_args()
    shape = dataclasses.replace(SHAPES["1b"], layers=args.layers)
    folder, (adapter,) = prepare(f"1b-{args.layers}layers", args.workdir, 1, shape=shape)
    base, aligned = folder / "base", folder / "aligned"
    env = dict(os.environ) | ({"PYTHONPATH": str(args.tree.resolve())} if args.tree else {})
    print(f"| run ({shape.name} shape, {args.layers} blocks, cold cache) | wall | peak RSS |")
    print("| --- | ---: | ---: |")
    for label, extra in (("whole model (no --adapter)", []), ("--adapter", ["--adapter", str(adapter)])):
        cache = folder / "unchanged-cache"
        shutil.rmtree(cache, ignore_errors=True)
        command = csulora("estimate-subspace", str(base), str(aligned), *extra, "--cache-dir", str(cache))
        result = measure(command, env=env)
        if result.returncode != 0:
            sys.exit(f"{label}: exited {result.returncode}")
        print(f"| {label} | {result.wall_s:.1f} s | {result.peak_rss_mb:.0f} MB |", flush=True)
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
