"""The fast tier's time: runs `pytest -m "not slow"` and prints the total and the 15 slowest tests.

    python -m scripts.tools.suite_time               # the fast tier (`make test`), budget 175 s on 2 cores
    python -m scripts.tools.suite_time --all         # both tiers (`make test-all`)
    python -m scripts.tools.suite_time --top 30 -- tests/cli   # extra pytest arguments after --

A test's time is its setup, call and teardown together (pytest's JUnit report), so a slow module-scoped
fixture is charged to the first test that uses it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

from scripts.paths import REPO

BUDGET_S = 175.0  # the fast tier's budget on an idle 2-core machine (docs/development.md)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="both tiers, not only the fast one")
    parser.add_argument("--top", type=int, default=15, help="how many of the slowest tests to list (default 15)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        junit = Path(folder) / "suite.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
        command += ([] if args.all else ["-m", "not slow"]) + args.pytest_args
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO)
        wall = time.perf_counter() - started
        cases = ElementTree.parse(junit).getroot().iter("testcase")
        times = {f"{case.get('classname')}::{case.get('name')}": float(case.get("time") or 0) for case in cases}
    by_file = Counter()
    for name, seconds in times.items():
        by_file[name.split("::")[0]] += seconds
    print(f"\n{len(times)} tests, {sum(times.values()):.1f} s in tests, {wall:.1f} s wall (pytest and collection)")
    if not args.all:
        verdict = "within" if wall <= BUDGET_S else "OVER"
        print(f"{verdict} the fast tier's budget of {BUDGET_S:.0f} s")
    print(f"\nslowest {args.top} tests:")
    for name, seconds in sorted(times.items(), key=lambda item: -item[1])[: args.top]:
        print(f"  {seconds:7.2f} s  {name}")
    print("\nslowest files:")
    for name, seconds in by_file.most_common(8):
        print(f"  {seconds:7.2f} s  {name}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
