"""The README's shell examples, run as written: the set-up, the batch, the jq one-liners, the CI gate and
the deploy gate with `csulora verify`.

Each example block follows a `<!-- tested as written: tests/e2e/test_readme_examples.py (NAME) -->`
marker; its `$ ` lines are run by bash in order, with the installed console script on PATH (a real
shell is the point: globs, pipes, `&&`, exit codes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import CSULORA, read_report

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = re.compile(r"<!-- tested as written: tests/e2e/test_readme_examples\.py \((\w+)\) -->")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("jq") is None, reason="the README's one-liners use jq"),
]


def readme_examples() -> dict[str, list[str]]:
    """{name: the `$ ` command lines of the indented block after its marker}."""
    lines = README.read_text().splitlines()
    examples = {}
    for index, line in enumerate(lines):
        marker = MARKER.search(line)
        if not marker:
            continue
        commands, started = [], False
        for following in lines[index + 1 :]:
            if following.startswith("    "):
                started = True
                if following.startswith("    $ "):
                    commands.append(following.removeprefix("    $ "))
            elif started and following.strip():
                break
        examples[marker[1]] = commands
    return examples


def run_example(commands: list[str], cwd: Path) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PATH=f"{Path(CSULORA).parent}{os.pathsep}{os.environ['PATH']}")
    environment.pop("CSULORA_DEBUG", None)
    environment["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        ["bash", "-c", "\n".join(commands)], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The README's set-up, as written: `csulora demo --keep ./demo`, then its estimate-subspace; plus the
    `runs/*/adapter` layout the batch example corrects."""
    root = tmp_path_factory.mktemp("readme")
    done = run_example(readme_examples()["setup"], root)
    assert done.returncode == 0, done.stderr
    demo = root / "demo"
    assert (demo / "subspace" / "subspace.json").is_file()
    for run in ("a", "b"):
        shutil.copytree(demo / "adapter", demo / "runs" / run / "adapter")
    return demo


def test_every_marked_example_has_commands():
    examples = readme_examples()
    assert set(examples) == {"setup", "batch", "jq", "gate", "verify"}
    assert all(examples.values()), examples


def test_batch_then_jq_then_verify_as_a_deploy_gate(demo):
    batch = run_example(readme_examples()["batch"], demo)
    assert batch.returncode == 0, batch.stderr
    assert "error" not in batch.stderr
    for run in ("a", "b"):
        report = read_report(demo / "corrected" / run / "adapter")
        assert report["adapter"] == str((demo / "runs" / run / "adapter").resolve())
    assert "corrected/a/adapter/csulora_report.json" in batch.stdout
    assert (demo / "adapter-safe" / "adapter_model.safetensors").is_file()

    one_liners = run_example(readme_examples()["jq"], demo)
    assert one_liners.returncode == 0, one_liners.stderr
    printed = one_liners.stdout.split()
    removed = read_report(demo / "corrected" / "a" / "adapter")["totals"]["attenuation_energy"]
    assert [float(value) for value in printed[:2]] == pytest.approx([removed, removed])
    weights = demo / "corrected" / "a" / "adapter" / "adapter_model.safetensors"
    assert printed[2] == subprocess.run(["sha256sum", weights], capture_output=True, text=True).stdout.split()[0]

    gate = run_example(readme_examples()["verify"], demo)
    assert gate.returncode == 0, gate.stderr
    assert gate.stdout.strip().splitlines()[-1] == "deploying"

    # One flipped byte in a shipped file: the gate stops the deploy with one line naming the file.
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    stopped = run_example(readme_examples()["verify"], demo)
    assert stopped.returncode == 1
    assert "deploying" not in stopped.stdout
    (line,) = stopped.stderr.strip().splitlines()
    assert line.startswith("csulora: error: ") and "corrected/a/adapter/adapter_model.safetensors" in line


def test_ci_gate_exits_3_with_the_line_the_readme_shows(demo):
    gate = run_example(readme_examples()["gate"], demo)
    assert gate.returncode == 0, gate.stderr  # the example ends in `echo "exit $?"`
    assert gate.stdout.strip().splitlines()[-1] == "exit 3"
    shown = re.search(r"^    (csulora: error: .* --fail-(?:above|below) .*)$", README.read_text(), re.MULTILINE)[1]
    assert shown in gate.stderr.splitlines()
