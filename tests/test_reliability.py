"""Unattended-use guarantees: kills leave no usable half-output, concurrent estimators share one cache,
reruns are bit-identical, and parsers fail cleanly on arbitrary bytes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csulora_cli.atomic import TEMP_PREFIX
from csulora_cli.cache import read_basis_file
from csulora_cli.config import read_config_file
from csulora_cli.correction import CorrectionParams, decompose_update, measure_correction
from csulora_cli.errors import CsuloraError
from csulora_cli.methods import METHODS
from csulora_cli.safetensors_header import read_header
from csulora_cli.subspace import SelectedSubspace

CSULORA = str(Path(sys.executable).parent / "csulora")
# Kills land at these fractions of an uninterrupted run's duration (measured first), so they fall while
# the process works however fast the machine is.
KILL_FRACTIONS = (0.3, 0.5, 0.7, 0.9)
CONCURRENT_PROCESSES = 4


def output_is_complete(folder: Path) -> bool:
    names = {path.name for path in folder.iterdir()}
    if not {"adapter_config.json", "adapter_model.safetensors", "csulora_report.json", "README.md"} <= names:
        return False
    read_header(folder / "adapter_model.safetensors")
    json.loads((folder / "csulora_report.json").read_text())
    return True


def correct_command(adapters: list, base: Path, aligned: Path, out: Path, cache: Path) -> list[str]:
    return [CSULORA, "correct", *map(str, adapters), "--base", str(base), "--aligned", str(aligned),
            "--out", str(out), "--rank", "8", "--cache-dir", str(cache), "--quiet"]  # fmt: skip


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


# --- parsers on arbitrary input ---------------------------------------------------------------

fuzz = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None
)


@fuzz
@given(data=st.binary(max_size=300))
def test_header_parser_on_random_bytes(tmp_path, data):
    path = tmp_path / "random.safetensors"
    path.write_bytes(data)
    try:
        read_header(path)
    except CsuloraError as error:
        assert str(path) in error.one_line()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@fuzz
@given(header=st.dictionaries(st.text(max_size=8), json_values, max_size=4), tail=st.binary(max_size=64))
def test_header_parser_on_random_json_headers(tmp_path, header, tail):
    encoded = json.dumps(header).encode()
    path = tmp_path / "json.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + tail)
    try:
        parsed = read_header(path)
    except CsuloraError:
        return
    for entry in parsed.entries.values():  # whatever is accepted lies inside the file
        assert parsed.data_start <= entry.start <= entry.end <= path.stat().st_size


@fuzz
@given(
    config=st.dictionaries(
        st.sampled_from(
            [
                "r",
                "lora_alpha",
                "use_rslora",
                "use_dora",
                "peft_type",
                "rank_pattern",
                "alpha_pattern",
                "fan_in_fan_out",
            ]
        ),
        json_values,
        max_size=6,
    )
)
def test_adapter_config_parser_on_random_configs(tmp_path, config):
    from csulora_cli.adapter import read_config, resolve_scale

    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps(config))
    try:
        parsed = read_config(path)
    except CsuloraError:
        return
    scale = resolve_scale(parsed, "model.layers.0.self_attn.q_proj")
    assert scale.rank > 0 and scale.value > 0


@fuzz
@given(text=st.text(max_size=200))
def test_yaml_config_parser_on_random_text(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    try:
        values = read_config_file(path)
    except CsuloraError:
        return
    assert isinstance(values, dict)
    yaml.safe_dump(values)


# --- the math on extreme inputs -----------------------------------------------------------------


def orthonormal(m: int, k: int, seed: int) -> torch.Tensor:
    if k == 0:
        return torch.zeros(m, 0, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(m, k, generator=generator, dtype=torch.float64))[0]


@fuzz
@given(
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    r=st.integers(1, 6),
    k=st.integers(0, 12),
    scale=st.sampled_from([1e-30, 1e-8, 1.0, 1e8, 1e30]),
    pattern=st.sampled_from(["random", "zero_b", "zero_a", "rank_one_a", "rank_one_b"]),
    lambda_=st.sampled_from([0.0, 1e-6, 3.0, 1e12, float("inf")]),
    eps=st.sampled_from([0.0, 0.05, 1.0]),
    seed=st.integers(0, 10_000),
)
def test_every_method_is_finite_on_extreme_inputs(m, n, r, k, scale, pattern, lambda_, eps, seed):
    generator = torch.Generator().manual_seed(seed)
    lora_b = torch.randn(m, r, generator=generator, dtype=torch.float64)
    lora_a = torch.randn(r, n, generator=generator, dtype=torch.float64)
    if pattern == "zero_b":
        lora_b.zero_()
    elif pattern == "zero_a":
        lora_a.zero_()
    elif pattern == "rank_one_a":
        lora_a = lora_a[:1].expand(r, n).clone()
    elif pattern == "rank_one_b":
        lora_b = lora_b[:, :1].expand(m, r).clone()
    k = min(k, m)
    basis = orthonormal(m, k, seed)
    # Right vectors for the sign-aware and two-sided forms; past n there are none (zero columns).
    right = torch.zeros(n, k, dtype=torch.float64)
    right[:, : min(k, n)] = orthonormal(n, min(k, n), seed + 1)
    subspace = SelectedSubspace(basis, torch.ones(k, dtype=torch.float64), 1.0, 1.0, True, right=right)
    update = decompose_update(lora_b, lora_a, scale)
    variants = [(method, False) for method in METHODS.values()]
    variants += [(method, True) for method in METHODS.values() if method.supports_two_sided]
    for method, two_sided in variants:
        params = CorrectionParams(lambda_=lambda_, eps=eps, two_sided=two_sided)
        corrected = method.corrected_b(update, subspace, params)
        assert corrected.shape == lora_b.shape and torch.isfinite(corrected).all(), (method.name, two_sided)
        figures = measure_correction(update, corrected, subspace, eps, two_sided)
        values = [
            figures.update_energy,
            figures.corrected_energy,
            figures.removed_energy,
            figures.cosine,
            figures.attenuation_fraction,
            figures.aligned_fraction,
            figures.off_subspace_fraction,
        ]
        assert all(v == v and abs(v) != float("inf") for v in values), (method.name, values)


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
