"""How far a reader walks to follow one `correct` request: the package files it passes through, call by call.

Runs `csulora correct` in process on the demo's model pair and adapter under a profiler hook and records
every call from one package file into another; each distinct pair (caller's file, callee's file) is one
*move*, however often it is taken. A move *climbs back up* when it enters a file of
a higher layer than the one it leaves: the library calling back into the command line (`Output` events),
plumbing calling a command, the math calling the pipeline. Calls within one file and calls into anything
outside `csulora_cli/` are not moves. Threads (the estimator's readers) are followed too.

    python -m scripts.tools.call_walk                 # --base/--aligned (estimation included) and --subspace
    python -m scripts.tools.call_walk --files         # also list the files, in the order first entered

The layers, highest first, are read from the path: cli, api, the pipeline's commands, its types, its
plumbing, then report, correction, subspace, adapters, checkpoints, and the leaves every room may use
(errors, events, atomic, testing). A file of an older layout (`pipeline/correct.py`) counts by its role.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import csulora_cli

PACKAGE = Path(csulora_cli.__file__).resolve().parent
# Highest first. The pipeline's files are ranked by role, so a flat layout and a split one compare.
LAYERS = ("cli", "api", "commands", "types", "plumbing", "report", "correction", "subspace", "adapters", "checkpoints")
PIPELINE_ROLES = {
    "estimate": "commands",
    "correct": "commands",
    "inspect": "commands",
    "verify": "commands",
    "publish": "commands",
    "requests": "types",
    "results": "types",
}


def layer_of(relative: str) -> int:
    parts = relative.split("/")
    if parts[0] == "api.py":
        return LAYERS.index("api")
    if parts[0] == "pipeline":
        role = parts[1] if len(parts) > 2 else PIPELINE_ROLES.get(Path(parts[1]).stem, "plumbing")
        return LAYERS.index(role) if role in LAYERS else LAYERS.index("plumbing")
    if parts[0] in LAYERS:
        return LAYERS.index(parts[0])
    return len(LAYERS)  # errors, events, atomic, heatmap, testing: leaves


@dataclass
class Walk:
    """The moves of a run. With `carrying`, only calls that are handed the request or a part of it (one of
    its dataclass fields, recursively: the `SubspaceSpec`, the `CorrectionParams`...) count: the request's
    own trail, from the command that builds it to each place that reads it."""

    carrying: bool = False
    files: list[str] = field(default_factory=list)
    moves: set[tuple[str, str]] = field(default_factory=set)
    parts: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, frame, event, arg):
        if event != "call" or frame.f_back is None:
            return
        callee, caller = _relative(frame.f_code.co_filename), _relative(frame.f_back.f_code.co_filename)
        if callee is None or caller is None or callee == caller:
            return
        if self.carrying and not self._handed_the_request(frame):
            return
        with self.lock:
            for name in (caller, callee):
                if name not in self.files:
                    self.files.append(name)
            self.moves.add((caller, callee))

    @property
    def climbs(self) -> list[tuple[str, str]]:
        return sorted(move for move in self.moves if layer_of(move[1]) < layer_of(move[0]))

    def _handed_the_request(self, frame) -> bool:
        code = frame.f_code
        arguments = [frame.f_locals.get(name) for name in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]]
        for value in arguments:
            if type(value).__name__ == "CorrectRequest" and id(value) not in self.parts:
                self._track(value)
        return any(id(value) in self.parts for value in arguments if is_dataclass(value))

    def _track(self, value) -> None:
        self.parts.add(id(value))
        for item in fields(value):
            part = getattr(value, item.name)
            if is_dataclass(part) and not isinstance(part, type):
                self._track(part)


def _relative(filename: str) -> str | None:
    try:
        return Path(filename).resolve().relative_to(PACKAGE).as_posix()
    except ValueError:
        return None


def walk(args: list[str], carrying: bool) -> tuple[Walk, int]:
    from scripts.cli_runs import in_process

    recorder = Walk(carrying=carrying)
    threading.setprofile(recorder.hook)
    sys.setprofile(recorder.hook)
    try:
        run = in_process(args)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return recorder, run.code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", action="store_true", help="list the files each walk enters")
    options = parser.parse_args()
    from csulora_cli.testing.builders import build_demo
    from scripts.cli_runs import in_process

    with tempfile.TemporaryDirectory(prefix="csulora-walk-") as scratch:
        root = Path(scratch)
        base, aligned, adapter = build_demo(root)
        cache = ["--cache-dir", str(root / "cache")]
        # The subspace folder the second walk reads, estimated outside any walk.
        made = in_process(["estimate-subspace", str(base), str(aligned), "--adapter", str(adapter), "--rank", "16",
                           "--out", str(root / "subspace"), *cache, "--quiet"])  # fmt: skip
        assert made.code == 0, made.stderr
        cases = {
            "correct --base --aligned": ["--base", str(base), "--aligned", str(aligned), "--rank", "16", *cache],
            "correct --subspace": ["--subspace", str(root / "subspace")],
        }
        runs = 0
        for label, extra in cases.items():
            for carrying in (True, False):
                runs += 1
                args = ["correct", str(adapter), *extra, "--out", str(root / f"out{runs}"), "--quiet"]
                recorder, code = walk(args, carrying)
                assert code == 0, f"{label}: exit {code}"
                climbs = recorder.climbs
                what = "the request's trail" if carrying else "the whole run"
                print(f"{label}, {what}: {len(recorder.files)} files, {len(recorder.moves)} moves, "
                      f"{len(climbs)} climb back up")  # fmt: skip
            if options.files:
                for name in recorder.files:
                    print(f"    {name}")
                for caller, callee in climbs:
                    print(f"    up: {caller} -> {callee}")


if __name__ == "__main__":
    main()
