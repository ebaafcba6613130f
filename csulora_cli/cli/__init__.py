"""The `csulora` command line: `app.py` (commands), `options.py` (every option, declared once in its group;
`declared.py` the mechanism), `boundary.py` (errors and exit codes), `config.py` (`--config FILE.yaml`),
`output.py` (tables, JSON, progress), `demo.py`, and `reference.py` (renders docs/cli.md)."""

from __future__ import annotations

import typer

from .app import app


def main(argv: list[str] | None = None) -> None:
    """The console script: run the CLI on `argv` (default `sys.argv[1:]`); always ends in `sys.exit`."""
    typer.main.get_command(app).main(args=argv)


__all__ = ["app", "main"]
