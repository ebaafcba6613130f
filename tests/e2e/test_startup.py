"""`--version` and every `--help` answer without importing torch (a fresh interpreter is the point), and
the help says what a user needs: `-h`, the choices of each choice flag, `[@revision]`, no placeholder
after a flag that takes no value. Timings are measured by scripts/bench/startup_time.py, not asserted here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import assert_ok, run_cli, run_console_script

COMMANDS = ("estimate-subspace", "correct", "inspect", "verify", "demo")


def modules_loaded_by(argv: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after running `csulora ARGV` through the console entry point."""
    program = (
        "import sys\n"
        "from csulora_cli.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["-h"], *([name, "--help"] for name in COMMANDS)])
def test_version_and_help_do_not_import_torch(argv):
    loaded = modules_loaded_by(argv)
    assert not loaded & {"torch", "safetensors", "huggingface_hub", "transformers", "peft"}


def test_help_lists_choices_shows_revisions_and_no_flag_placeholders():
    text = assert_ok(run_cli("correct", "-h", env={"COLUMNS": "200"})).stdout
    from csulora_cli.correction.methods import METHODS

    assert "|".join(METHODS) in text
    assert "auto|cpu|cuda" in text and "auto|shards|ranges" in text and "number|threshold" in text
    assert "org/name[@revision]" in text
    assert "<bool>" not in text and "<str>" not in text
    assert "--out-dir DIR" in text and "--rank N" in text


def test_bare_csulora_prints_the_help_without_an_empty_error():
    result = run_console_script()
    assert result.rc == 2
    assert "Usage: csulora" in result.stdout + result.stderr
    assert "error" not in result.stderr


def test_parse_and_library_errors_share_one_prefix(models):
    _, _, adapter = models
    parse = run_console_script("correct", adapter, "--lambda", "many")
    library = run_console_script("correct", adapter, "--dry-run")
    for result in (parse, library):
        assert result.rc == 2, result.describe()
        (line,) = result.stderr_lines
        assert line.startswith("csulora: error: "), line
