"""The README's walkthrough, run as written, in order, in a fresh copy of the repository: every command
of every block marked `<!-- tested as written: tests/e2e/test_readme_examples.py (NAME) -->`, and every
line the block shows as output (tables, figures, hashes, the gate's error line).

Each block's `$ ` lines are run by bash (globs, pipes, `&&`, `cd` and exit codes are the point), one block
after another, the working directory carried from one to the next as a user's shell carries it. The
`csulora` on PATH runs the copy's own package. A block's other lines are what it prints: each must appear
in what the block printed, in order; a table row of `...` stands for any rows the README leaves out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
README = REPOSITORY / "README.md"
MARKER = re.compile(r"<!-- tested as written: tests/e2e/test_readme_examples\.py \((\w+)\) -->")
# A row the README elides: `│ ...   │   │` (any rows of the real table), or a bare `...`.
ELIDED = re.compile(r"^[│|]?\s*\.\.\.\s*([│|]\s*)*$")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("jq") is None, reason="the README's one-liners use jq"),
]


@dataclass(frozen=True)
class Block:
    name: str
    commands: list[str]
    shown: list[str]  # the lines the README shows as the block's output


def readme_blocks(text: str | None = None) -> list[Block]:
    """The marked blocks, in README order."""
    lines = (README.read_text() if text is None else text).splitlines()
    blocks = []
    for index, line in enumerate(lines):
        marker = MARKER.search(line)
        if not marker:
            continue
        commands, shown, started = [], [], False
        for following in lines[index + 1 :]:
            if following.startswith("    "):
                started = True
                body = following.removeprefix("    ")
                if body.startswith("$ "):
                    commands.append(body.removeprefix("$ "))
                else:
                    shown.append(body.rstrip())
            elif started and following.strip():
                break
        blocks.append(Block(marker[1], commands, shown))
    return blocks


def missing_lines(shown: list[str], printed: list[str]) -> list[str]:
    """The shown lines not found in `printed`: runs of shown lines between elided rows must appear as
    consecutive printed lines, each run after the previous one."""
    runs, current = [], []
    for line in shown:
        if ELIDED.match(line.strip()):
            runs.append(current)
            current = []
        else:
            current.append(line)
    runs.append(current)
    printed = [line.rstrip() for line in printed]
    position, missing = 0, []
    for run in (run for run in runs if run):
        found = next(
            (
                start
                for start in range(position, len(printed) - len(run) + 1)
                if printed[start : start + len(run)] == run
            ),
            None,
        )
        if found is None:
            missing.extend(run)
        else:
            position = found + len(run)
    return missing


def fresh_copy(destination: Path) -> Path:
    """The repository's tracked files (as they are in the working tree), as a fresh clone has them."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, text=True)
    if listed.returncode != 0:
        shutil.copytree(REPOSITORY, destination, ignore=shutil.ignore_patterns(".git", ".venv*", "__pycache__"))
        return destination
    for name in filter(None, listed.stdout.split("\0")):
        source = REPOSITORY / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every marked block run in order in a fresh copy: {name: what it printed (stderr into stdout)}."""
    root = tmp_path_factory.mktemp("readme")
    clone = fresh_copy(root / "csulora")
    shims = root / "bin"
    shims.mkdir()
    script = shims / "csulora"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m csulora_cli.cli "$@"\n')
    script.chmod(0o755)
    environment = dict(os.environ, PATH=f"{shims}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(clone))
    environment.pop("CSULORA_DEBUG", None)
    environment |= {"HF_HUB_OFFLINE": "1", "CSULORA_CACHE": str(root / "cache"), "HF_HOME": str(root / "hf")}
    state = root / "cwd"
    state.write_text(str(clone))
    printed = {}
    for block in readme_blocks():
        # One stream, as a terminal shows it: the gate's error line after its table.
        script_text = f'exec 2>&1\ncd "$(cat {state})"\n' + "\n".join(block.commands) + f'\npwd > "{state}"\n'
        printed[block.name] = subprocess.run(
            ["bash", "-c", script_text], env=environment, capture_output=True, text=True, timeout=600
        )
    return printed


def test_every_block_has_commands():
    blocks = readme_blocks()
    assert [block.name for block in blocks] == ["setup", "batch", "gate", "verify", "jq"]
    assert all(block.commands for block in blocks)


@pytest.mark.parametrize("block", readme_blocks(), ids=lambda block: block.name)
def test_block_runs_and_prints_what_the_readme_shows(walkthrough, block):
    done = walkthrough[block.name]
    # The gate block exits 3 by design and says so with `echo "exit $?"`; every block itself ends well.
    assert done.returncode == 0, done.stdout
    assert "Traceback" not in done.stdout
    assert "csulora: warning" not in done.stdout, done.stdout
    missing = missing_lines(block.shown, done.stdout.splitlines())
    assert not missing, f"shown in the README but not printed: {missing}\nprinted:\n{done.stdout}"


def test_elided_rows_and_runs_are_matched_as_documented():
    shown = ["header", "│ a │", "│ ... │   │", "total"]
    assert missing_lines(shown, ["x", "header", "│ a │", "│ b │", "total"]) == []
    assert missing_lines(shown, ["header", "│ b │", "total"]) == ["header", "│ a │"]
    text = "<!-- tested as written: tests/e2e/test_readme_examples.py (one) -->\n\n    $ echo hi\n    hi\n\nprose\n"
    assert readme_blocks(text) == [Block("one", ["echo hi"], ["hi"])]
