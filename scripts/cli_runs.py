"""`csulora` run from a script: the console script's own `main()` in this process, or the installed console
script in a process of its own, with the exit code and both streams kept (`CliRun`)."""

from __future__ import annotations

import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit {self.code}"


def in_process(args: list[str]) -> CliRun:
    """The console script's own `main()`, called in this process: the same flags, exit codes and messages.

    Start-up (importing torch and typer) costs ~2 s per `csulora` process on a 2-core machine, more than
    correcting a tiny adapter; benchmarks that run hundreds of commands would spend minutes on imports.
    """
    from csulora_cli.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            main(args)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return CliRun(code, stdout.getvalue(), stderr.getvalue())


def as_subprocess(args: list[str]) -> CliRun:
    """The installed console script in its own process: slower, same results."""
    script = Path(sys.executable).with_name("csulora")
    done = subprocess.run([str(script), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return CliRun(done.returncode, done.stdout, done.stderr)
