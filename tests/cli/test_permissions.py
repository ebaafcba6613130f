"""Everything csulora creates gets the permissions the umask gives, as `open()` and `mkdir()` would.

A corrected adapter is read by a server or a colleague running as another user, and a cache may be shared:
files 0666 & ~umask, folders 0777 & ~umask, including the temporary folder renamed into place.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.helpers import RANK, assert_ok, run_cli


def modes_not_following(root: Path, umask: int) -> list[str]:
    """Every path under `root` (and `root`) whose mode is not what the umask gives, as 'path 0ooo'."""
    wrong = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        if mode != expected:
            wrong.append(f"{path.relative_to(root.parent)} {mode:04o} (expected {expected:04o})")
    return wrong


@pytest.fixture
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


@pytest.mark.parametrize("umask", [0o022, 0o077], indirect=True, ids=["umask022", "umask077"])
def test_outputs_subspace_folders_and_cache_follow_the_umask(models, tmp_path, umask):
    base, aligned, original = models
    adapter, second = tmp_path / "inputs" / "adapter", tmp_path / "inputs" / "second"
    shutil.copytree(original, adapter)
    shutil.copytree(original, second)
    cache = tmp_path / "cache"  # created by csulora, like every folder below it
    env = {"CSULORA_CACHE": cache}
    subspace = tmp_path / "subspace"
    estimate = ("estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", subspace)
    assert_ok(run_cli(*estimate, env=env))
    single = tmp_path / "single"
    correct = ("correct", adapter, "--base", base, "--aligned", aligned, "--rank", RANK)
    assert_ok(run_cli(*correct, "--out", single, env=env))
    assert_ok(run_cli(*correct, "--out", single, "--overwrite", env=env))  # replaces through a second temporary
    batch = tmp_path / "batch"
    assert_ok(run_cli("correct", adapter, second, "--subspace", subspace, "--rank", RANK, "--out-dir", batch, env=env))
    assert (cache / "bases").is_dir() and (cache / "file-digests").is_dir()
    for root in (cache, subspace, single, batch):
        assert modes_not_following(root, umask) == []
