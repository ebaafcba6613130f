"""Shared fixtures: every test gets its own basis cache and never reaches the network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import RANK, assert_ok, run_cli

from csulora_cli.demo import build_demo


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CSULORA_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    monkeypatch.delenv("CSULORA_DEBUG", raising=False)


@pytest.fixture(scope="module")
def single_thread():
    """For modules of tiny matrices: one thread is faster, and spares a busy machine thread contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def demo_models(tmp_path) -> tuple[Path, Path, Path]:
    """base/, aligned/ (bf16 shards with an index) and adapter/ (float32 PEFT LoRA) under tmp_path."""
    return build_demo(tmp_path / "models")


# Shared by the end-to-end CLI tests: one set of demo models and one subspace folder per test module.
@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def models(root) -> tuple[Path, Path, Path]:
    return build_demo(root / "models")


@pytest.fixture(scope="module")
def subspace(models, root) -> Path:
    base, aligned, adapter = models
    out = root / "subspace"
    result = run_cli(
        "estimate-subspace",
        base,
        aligned,
        "--adapter",
        adapter,
        "--rank",
        RANK,
        "--out",
        out,
        env={"CSULORA_CACHE": root / "estimate-cache"},
    )
    assert_ok(result)
    return out
