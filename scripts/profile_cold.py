"""Profile one cold `csulora correct` on a bench_scale.py pair: top operations by self time.

    python scripts/profile_cold.py --data scripts/out/bench_data/1b            # torch.profiler, CPU activities
    python scripts/profile_cold.py --data scripts/out/bench_data/1b --cprofile # cProfile: Python functions too

The cache is a fresh temporary folder, so every basis is estimated (a cold run). torch.profiler sees
torch's operators on every thread (the reader thread's copies included) but not hashlib or file reads;
cProfile sees those, but only on the main thread.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a bench_scale.py shape folder (base/, aligned/)")
    parser.add_argument("--cprofile", action="store_true", help="cProfile instead of torch.profiler")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    adapter = sorted((args.data / "adapters").glob("adapter-*"))[0]
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["CSULORA_CACHE"] = str(Path(scratch) / "cache")
        argv = ["correct", str(adapter), "--out", str(Path(scratch) / "out"), "--quiet"]
        argv += ["--base", str(args.data / "base"), "--aligned", str(args.data / "aligned"), "--device", "cpu"]
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


if __name__ == "__main__":
    main()
