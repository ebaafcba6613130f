"""Shared fixtures: every test gets its own basis cache and never reaches the network.

huggingface_hub reads HF_HUB_OFFLINE and HF_HOME once, when it is imported, so both are set here,
before anything imports it: in-process CLI runs then stay offline and outside the user's HF cache.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="csulora-tests-hf-home-")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from csulora_cli.testing.builders import build_demo  # noqa: E402
from tests.helpers import FULL_RANK, RANK, assert_ok, run_cli  # noqa: E402

# Property tests draw a fixed set of examples, in CI and in `make test` alike: a verdict never depends on the
# draw, and a test that failed once fails the same way on a rerun. The deadline fits a busy 2-core machine
# (most math tests set none). `HYPOTHESIS_PROFILE=explore` draws fresh examples to look for new edge cases;
# a failure there prints the blob that reproduces it (docs/development.md).
settings.register_profile("deterministic", derandomize=True, deadline=timedelta(seconds=10), print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=timedelta(seconds=10), print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


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


# Shared by the CLI tests: one set of demo models and one subspace folder per test module.
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


@pytest.fixture(scope="module")
def full_subspace(models, root) -> Path:
    """The demo pair's exact and complete subspace folder: every module's V fits in FULL_RANK columns."""
    base, aligned, adapter = models
    out = root / "full-subspace"
    assert_ok(
        run_cli(
            "estimate-subspace", base, aligned, "--adapter", adapter, "--rank", FULL_RANK, "--energy", "1",
            "--exact", "--out", out,
        )
    )  # fmt: skip
    return out
