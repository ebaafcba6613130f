"""Unattended-use guarantees that need real processes: kills leave no usable half-output, concurrent
estimators share one cache, reruns are bit-identical, and the console script's own exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csulora_cli.atomic import TEMP_PREFIX
from csulora_cli.checkpoints.header import read_header
from csulora_cli.subspace.store import read_basis_file
from tests.helpers import CSULORA, run_console_script

# Kills land at these fractions of an uninterrupted run's duration (measured first), so they fall while
# the process works however fast the machine is. Not later than two thirds: the measured run starts with
# cold page caches, and the runs after it can be a third faster (a kill at 0.9 then lands after the end).
# Real processes are the point here, and they cost seconds each: the slow tier.
pytestmark = pytest.mark.slow

KILL_FRACTIONS = (0.2, 0.35, 0.5, 0.65)
CONCURRENT_PROCESSES = 4


def output_is_complete(folder: Path) -> bool:
    names = {path.name for path in folder.iterdir()}
    if not {"adapter_config.json", "adapter_model.safetensors", "csulora_report.json", "README.md"} <= names:
        return False
    read_header(folder / "adapter_model.safetensors")
    json.loads((folder / "csulora_report.json").read_text())
    return True


def correct_command(adapters: list, base: Path, aligned: Path, out: Path, cache: Path) -> list[str]:
    destination = "--out" if len(adapters) == 1 else "--out-dir"
    return [CSULORA, "correct", *map(str, adapters), "--base", str(base), "--aligned", str(aligned),
            destination, str(out), "--rank", "8", "--cache-dir", str(cache), "--quiet"]  # fmt: skip


def uninterrupted_seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def test_sigkill_never_leaves_a_usable_half_written_output(demo_models, tmp_path):
    base, aligned, adapter = demo_models
    adapters = []
    for index in range(4):
        copy = tmp_path / f"adapter{index}"
        shutil.copytree(adapter, copy)
        adapters.append(copy)
    duration = uninterrupted_seconds(correct_command(adapters, base, aligned, tmp_path / "whole", tmp_path / "c"))
    killed_while_running = 0
    for attempt, fraction in enumerate(KILL_FRACTIONS):
        out = tmp_path / f"out{attempt}"
        command = correct_command(adapters, base, aligned, out, tmp_path / f"cache{attempt}")
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(fraction * duration)
        if process.poll() is None:
            killed_while_running += 1
            process.send_signal(signal.SIGKILL)
        process.wait()
        # Either no output at all, or every adapter folder whole: never a partial folder under its name.
        if out.exists():
            for index in range(4):
                folder = out / f"adapter{index}"
                assert folder.exists() and output_is_complete(folder), f"partial output at {fraction:.0%} of a run"
        # Whatever a killed run left is hidden and removed by the next run writing there.
        rerun = subprocess.run([*command, "--overwrite"], capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
        assert all(output_is_complete(out / f"adapter{index}") for index in range(4))
    assert killed_while_running >= 3, "the kills must land while the process runs to test anything"


def test_sigterm_cleans_up(demo_models, tmp_path):
    base, aligned, adapter = demo_models
    duration = uninterrupted_seconds(correct_command([adapter], base, aligned, tmp_path / "whole", tmp_path / "c"))
    out = tmp_path / "out"
    process = subprocess.Popen(correct_command([adapter], base, aligned, out, tmp_path / "cold"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(0.6 * duration)
    if process.poll() is not None:
        pytest.skip("finished before the signal could land")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode != 0
    # A signal after the final rename finds the output already whole; before it, there is none.
    assert not out.exists() or output_is_complete(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_concurrent_estimators_share_one_cache(demo_models, tmp_path):
    base, aligned, _ = demo_models
    cache = tmp_path / "cache"
    # Two processes on the same modules, two on different ones, all at once.
    patterns = [r"layers\.0\..*proj", r"layers\.0\..*proj", r"layers\.1\..*q_proj", r"layers\.1\..*mlp"]
    processes = [
        subprocess.Popen(
            [
                CSULORA,
                "estimate-subspace",
                str(base),
                str(aligned),
                "--modules",
                pattern,
                "--rank",
                "8",
                "--cache-dir",
                str(cache),
                "--json",
                "--quiet",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pattern in patterns[:CONCURRENT_PROCESSES]
    ]
    results = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0] * CONCURRENT_PROCESSES, [r[1] for r in results]
    entries = list((cache / "bases").rglob("*.safetensors"))
    assert len(entries) == 7 + 1 + 3  # layer 0: seven projections; layer 1: q_proj and three MLP weights
    for entry in entries:
        read_basis_file(entry)  # checksums and shapes hold
    assert not [p for p in cache.rglob("*") if p.name.startswith(".tmp-")]


def test_rerun_is_bit_identical(demo_models, tmp_path):
    base, aligned, adapter = demo_models
    outputs = []
    for run in range(2):
        out = tmp_path / f"out{run}"
        subprocess.run(
            [
                CSULORA,
                "correct",
                str(adapter),
                "--base",
                str(base),
                "--aligned",
                str(aligned),
                "--out",
                str(out),
                "--rank",
                "8",
                "--cache-dir",
                str(tmp_path / f"cache{run}"),
                "--quiet",
            ],
            check=True,
        )
        outputs.append(out)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes()
    reports = [json.loads((out / "csulora_report.json").read_text()) for out in outputs]
    assert reports[0]["modules"] == reports[1]["modules"] and reports[0]["totals"] == reports[1]["totals"]


def test_no_stale_temporaries_from_a_dead_process_survive(tmp_path):
    from csulora_cli.atomic import atomic_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{TEMP_PREFIX}{dead.stdout.strip()}-abc"
    stale.mkdir()
    (stale / "adapter_model.safetensors").write_bytes(b"partial")
    live = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-mine"
    live.mkdir()
    with atomic_folder(tmp_path / "out", overwrite=False) as folder:
        (folder / "f").write_text("x")
    assert not stale.exists()
    assert live.exists()  # a running process's folder is left alone


# --------------------------------------------------------------------------------------------------
# The console script itself: what a shell or a CI job sees.


def test_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "no-such-adapter"
    loud = run_console_script("inspect", missing, env={"CSULORA_DEBUG": "1"})
    assert loud.rc == 1, loud.describe()
    assert "Traceback" in loud.stderr
    assert str(missing) in loud.stderr


def test_console_script_exit_codes(demo_models, tmp_path):
    """2 usage, 3 gate tripped (1 above, 0 everywhere): the codes the in-process tests see, from a real process."""
    base, aligned, adapter = demo_models
    usage = run_console_script("correct", adapter, "--subspace", tmp_path, "--rank", "0", "--out", tmp_path / "o")
    assert usage.rc == 2 and "--rank" in usage.stderr, usage.describe()
    gate = run_console_script(
        "inspect", adapter, "--base", base, "--aligned", aligned, "--rank", "8", "--fail-above", "0"
    )
    assert gate.rc == 3 and "--fail-above" in gate.stderr, gate.describe()
