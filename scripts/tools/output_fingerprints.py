"""Fingerprint everything the demo and the suite's fixture runs write, to prove a refactor changed no byte.

Runs the CLI in process (whichever `csulora_cli` is first on the path) on the demo's models: the demo
itself, a subspace folder as the tests' fixture estimates it, every method and two-sided form, a run
estimating through the cache, a batch, and the JSON of `inspect` and `estimate-subspace`. Then prints
`sha256  path` for every file under ROOT, sorted. Reports hold absolute paths, so compare two trees
by running both at the same ROOT:

    PYTHONPATH=/path/to/old-tree python -m scripts.tools.output_fingerprints /tmp/fp > old.txt
    rm -rf /tmp/fp
    python -m scripts.tools.output_fingerprints /tmp/fp > new.txt
    diff old.txt new.txt && echo identical
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

from scripts.cli_runs import in_process

RANK = "8"


def run(*args: object) -> str:
    """One CLI command in process; returns its stdout and fails loudly on a non-zero exit."""
    done = in_process([str(arg) for arg in args])
    if done.code != 0:
        raise SystemExit(f"csulora {' '.join(map(str, args))} exited {done.code}:\n{done.stderr}")
    return done.stdout


def produce(root: Path) -> None:
    os.environ["CSULORA_CACHE"] = str(root / "cache")
    os.environ["HF_HUB_OFFLINE"] = "1"
    # Reports and cards record when they were made: a fixed time makes two runs comparable byte for byte.
    os.environ["SOURCE_DATE_EPOCH"] = "1780000000"
    demo = root / "demo"
    run("demo", "--keep", demo)
    base, aligned, adapter = demo / "base", demo / "aligned", demo / "adapter"
    subspace = root / "subspace"
    (root / "estimate.json").write_text(
        run("estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", subspace, "--json")
    )
    for method in ("csulora", "project", "safelora", "csulora-inside", "csulora-signed", "none"):
        run("correct", adapter, "--subspace", subspace, "--method", method, "--out", root / method)
    for method in ("csulora", "project", "csulora-inside", "none"):
        out = root / f"{method}-two-sided"
        run("correct", adapter, "--subspace", subspace, "--method", method, "--two-sided", "--out", out)
    run("correct", adapter, "--subspace", subspace, "--lambda", "0.3", "--energy", "0.5", "--out", root / "swept")
    run("correct", adapter, "--base", base, "--aligned", aligned, "--rank", RANK, "--out", root / "from-pair")
    batch_inputs = root / "batch-inputs"
    for name in ("first", "second"):
        shutil.copytree(adapter, batch_inputs / name)
    run("correct", batch_inputs / "first", batch_inputs / "second", "--subspace", subspace, "--out-dir", root / "batch")
    (root / "inspect.json").write_text(run("inspect", adapter, "--subspace", subspace, "--json"))
    (root / "inspect-plain.json").write_text(run("inspect", adapter, "--json"))


def fingerprints(root: Path) -> list[str]:
    lines = []
    for path in sorted(root.rglob("*")):
        # File-digest memos are named after inode and mtime: they differ between any two runs.
        if path.is_file() and "file-digests" not in path.parts:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            lines.append(f"{digest}  {path.relative_to(root)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="an absent or empty folder to write into")
    args = parser.parse_args()
    root = args.root.resolve()
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root}: not empty")
    root.mkdir(parents=True, exist_ok=True)
    produce(root)
    sys.stdout.write("\n".join(fingerprints(root)) + "\n")


if __name__ == "__main__":
    main()
