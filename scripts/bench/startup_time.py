"""How long the console script takes to answer `--version` and `--help` (they must not import torch).

    python -m scripts.bench.startup_time [--repeat 5]

Prints the median and the slowest wall time of each, in a fresh process every time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def console_script() -> str:
    beside = Path(sys.executable).parent / "csulora"
    return str(beside) if beside.is_file() else shutil.which("csulora") or "csulora"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    script = console_script()
    for argv in (["--version"], ["--help"], ["correct", "--help"], ["inspect", "-h"]):
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run([script, *argv], capture_output=True, check=True)
            times.append(time.perf_counter() - started)
        print(f"csulora {' '.join(argv):<16} median {statistics.median(times):.3f} s, slowest {max(times):.3f} s")


if __name__ == "__main__":
    main()
