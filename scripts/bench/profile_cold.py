"""Profile one cold `csulora correct` on a bench_scale.py pair: top operations by self time.

    python -m scripts.bench.profile_cold --data scripts/out/bench_data/1b            # torch.profiler, CPU activities
    python -m scripts.bench.profile_cold --data scripts/out/bench_data/1b --cprofile # cProfile: Python functions too
    python -m scripts.bench.profile_cold --data scripts/out/bench_data/1b --py-spy   # py-spy: every thread, native too

The cache is a fresh temporary folder, so every basis is estimated (a cold run). torch.profiler and
cProfile record the main thread only, and estimation runs on estimator threads; `--py-spy` samples the
CLI as its own process (`py-spy record --native --threads`, 50 Hz; `pip install py-spy` first) and prints
samples by thread, by native leaf function and by the innermost csulora line.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from scripts.paths import REPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a bench_scale.py shape folder (base/, aligned/)")
    parser.add_argument("--cprofile", action="store_true", help="cProfile instead of torch.profiler")
    parser.add_argument("--py-spy", action="store_true", help="py-spy on a CLI process: every thread")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    adapter = sorted((args.data / "adapters").glob("adapter-*"))[0]
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["CSULORA_CACHE"] = str(Path(scratch) / "cache")
        argv = ["correct", str(adapter), "--out", str(Path(scratch) / "out"), "--quiet"]
        argv += ["--base", str(args.data / "base"), "--aligned", str(args.data / "aligned"), "--device", "cpu"]
        if args.py_spy:
            py_spy(argv, Path(scratch) / "samples.txt", args.top)
            return
        from csulora_cli.cli import main as cli_main

        def run() -> None:
            try:
                cli_main(argv)
            except SystemExit:
                pass

        started = time.perf_counter()
        if args.cprofile:
            profiler = cProfile.Profile()
            profiler.runcall(run)
            print(f"wall under cProfile: {time.perf_counter() - started:.1f} s")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
            return
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        print(f"wall under torch.profiler: {time.perf_counter() - started:.1f} s")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


def py_spy(argv: list[str], samples: Path, top: int) -> None:
    """Sample the CLI process with py-spy and print where its threads spend their samples."""
    beside = Path(sys.executable).with_name("py-spy")  # installed into the same environment
    command = [
        str(beside) if beside.exists() else "py-spy",
        "record",
        "--format",
        "raw",
        "--native",
        "--threads",
        "--rate",
        "50",
        "-o",
        str(samples),
    ]
    command += ["--", sys.executable, "-m", "csulora_cli.cli", *argv]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    print(f"wall under py-spy: {time.perf_counter() - started:.1f} s")
    by_thread: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    by_line: Counter[str] = Counter()
    for line in samples.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        # "thread (TID): NAME": worker threads are named csulora-estimate_N, csulora-reader_N, ...
        by_thread[frames[0].split(": ", 1)[-1].rsplit("_", 1)[0]] += int(count)
        by_leaf[frames[-1].split(" (")[0][:70]] += int(count)
        ours = [frame for frame in frames if "csulora_cli/" in frame]
        by_line[ours[-1] if ours else "(outside csulora_cli)"] += int(count)
    total = sum(by_thread.values())
    for title, counter in (("thread", by_thread), ("native leaf", by_leaf), ("innermost csulora line", by_line)):
        print(f"\nsamples by {title} (of {total}, 50 per second of a busy thread)")
        for name, count in counter.most_common(top):
            print(f"{count:7d} {100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
