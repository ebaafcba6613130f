"""Write docs/cli.md, the command reference, from the typer app (csulora_cli/cli/reference.py renders it).

python -m scripts.tools.cli_reference           # rewrite docs/cli.md (also: make docs)
python -m scripts.tools.cli_reference --check   # exit 1 if docs/cli.md differs from what the app says
"""

from __future__ import annotations

import argparse
import sys

from csulora_cli.cli.reference import render_reference
from scripts.paths import REPO

TARGET = REPO / "docs" / "cli.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when docs/cli.md is stale")
    args = parser.parse_args(argv)
    text = render_reference()
    current = TARGET.read_text(encoding="utf-8") if TARGET.is_file() else None
    if args.check:
        if current != text:
            print("docs/cli.md is stale: run python -m scripts.tools.cli_reference", file=sys.stderr)
            return 1
        return 0
    if current != text:
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        TARGET.write_text(text, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
