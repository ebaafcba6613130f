"""A full disk (or quota) is one line naming the file and the space it needed; a full cache is a warning.

The disk is made "full" at `os.write`, the call every file csulora writes goes through: past a byte
budget, writes to files under one folder fail with ENOSPC (or EDQUOT) as the kernel's would. A last test
fills a real tiny tmpfs where the machine allows mounting one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from csulora_cli.atomic import format_size
from tests.helpers import RANK, assert_ok, assert_one_line_error, run_cli

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds a descriptor's file in /proc")


def fill_disk(monkeypatch, folder: Path, capacity: int = 0, code: int = errno.ENOSPC) -> None:
    """From now on, files under `folder` take at most `capacity` more bytes; writes past it fail with `code`."""
    real_write = os.write
    folder = folder.resolve()
    used = 0

    def write(descriptor: int, data) -> int:
        nonlocal used
        try:
            written_to = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        except OSError:
            written_to = None
        if written_to is not None and written_to.is_relative_to(folder):
            if used + len(data) > capacity:
                raise OSError(code, os.strerror(code))
            used += len(data)
        return real_write(descriptor, data)

    monkeypatch.setattr(os, "write", write)


def test_format_size():
    assert [format_size(n) for n in (0, 1023, 1024, 51_300, 3 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "50.1 KiB",
        "3.0 GiB",
    ]


@pytest.mark.parametrize(("code", "what"), [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota")])
def test_full_output_disk_is_one_line_naming_the_file_and_leaves_nothing(
    monkeypatch, models, subspace, tmp_path, code, what
):
    _, _, adapter = models
    disk = tmp_path / "disk"
    disk.mkdir()
    # Room for the config, not for the weights: the error must name the file that did not fit.
    fill_disk(monkeypatch, disk, capacity=(adapter / "adapter_config.json").stat().st_size + 100, code=code)
    out = disk / "safe"
    line = assert_one_line_error(
        run_cli("correct", adapter, "--subspace", subspace, "--rank", RANK, "--out", out),
        1,
        f"{out / 'adapter_model.safetensors'}: {what}",
        f"needs {format_size((adapter / 'adapter_model.safetensors').stat().st_size)}",
    )
    assert "internal error" not in line and ".csulora-tmp" not in line
    assert list(disk.iterdir()) == [], "a half-written output or temporary folder was left"


def test_full_disk_in_a_batch_names_the_adapter_file(monkeypatch, models, subspace, tmp_path):
    _, _, original = models
    adapter, second = tmp_path / "inputs" / "adapter", tmp_path / "inputs" / "second"
    shutil.copytree(original, adapter)
    shutil.copytree(original, second)
    disk = tmp_path / "disk"
    disk.mkdir()
    fill_disk(monkeypatch, disk)
    out = disk / "batch"
    assert_one_line_error(
        run_cli("correct", adapter, second, "--subspace", subspace, "--rank", RANK, "--out-dir", out),
        1,
        f"{out / 'adapter' / 'adapter_config.json'}: no space left on device: needs",
    )
    assert list(disk.iterdir()) == []


def test_full_disk_under_a_subspace_folder_is_one_line_and_no_temporary_file(monkeypatch, models, tmp_path):
    base, aligned, adapter = models
    out = tmp_path / "subspace"
    fill_disk(monkeypatch, out, capacity=4096)  # the manifest fits, the first basis file does not
    line = assert_one_line_error(
        run_cli("estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", out),
        1,
        "no space left on device: needs",
    )
    assert re.search(rf"{re.escape(str(out / 'bases'))}/[^ /]+\.safetensors: no space", line), line
    assert [path.name for path in (out / "bases").iterdir()] == []


def _outputs(folder: Path) -> tuple[bytes, bytes, list]:
    report = json.loads((folder / "csulora_report.json").read_text())
    return (
        (folder / "adapter_model.safetensors").read_bytes(),
        (folder / "adapter_config.json").read_bytes(),
        report["modules"],
    )


def test_full_cache_is_a_warning_and_correct_writes_the_same_bytes(monkeypatch, models, tmp_path):
    base, aligned, adapter = models
    args = ("correct", adapter, "--base", base, "--aligned", aligned, "--rank", RANK)
    assert_ok(run_cli(*args, "--out", tmp_path / "normal", env={"CSULORA_CACHE": tmp_path / "cache"}))
    full_cache = tmp_path / "full-cache"
    fill_disk(monkeypatch, full_cache)
    result = assert_ok(run_cli(*args, "--out", tmp_path / "cache-full", env={"CSULORA_CACHE": full_cache}))
    (warning,) = [line for line in result.stderr_lines if line.startswith("csulora: warning:")]
    assert f"{full_cache / 'bases'}" in warning and "no space left on device: needs" in warning
    assert "kept in memory" in warning and "cache_dir" not in warning
    assert _outputs(tmp_path / "cache-full") == _outputs(tmp_path / "normal")
    assert not list(full_cache.rglob("*.safetensors")), "a basis file was written to the full cache"


@pytest.mark.parametrize("command", ["correct", "inspect"])
def test_unwritable_cache_is_a_warning(models, tmp_path, command):
    base, aligned, adapter = models
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("the cache cannot be created under a file, even by root")
    out = ("--out", tmp_path / "out") if command == "correct" else ()
    args = (command, adapter, "--base", base, "--aligned", aligned, "--rank", RANK, *out)
    result = assert_ok(run_cli(*args, env={"CSULORA_CACHE": blocker / "cache"}))
    warnings = [line for line in result.stderr_lines if line.startswith("csulora: warning:")]
    assert len(warnings) == 1 and "cannot write the basis cache" in warnings[0], result.describe()


def test_estimate_without_out_fails_on_a_full_cache(monkeypatch, models, tmp_path):
    """Without --out the cache is the command's product: not writing it is a failure, not a warning."""
    base, aligned, adapter = models
    cache = tmp_path / "cache"
    fill_disk(monkeypatch, cache)
    assert_one_line_error(
        run_cli("estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, env={"CSULORA_CACHE": cache}),
        1,
        f"{cache / 'bases'}",
        "cannot write the basis cache, no space left on device: needs",
        "--cache-dir",
    )
    assert not [path for path in cache.rglob("*") if path.is_file()]


def test_estimate_with_out_warns_on_a_full_cache(monkeypatch, models, tmp_path):
    base, aligned, adapter = models
    cache = tmp_path / "cache"
    fill_disk(monkeypatch, cache)
    out = tmp_path / "subspace"
    args = ("estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", out, "--json")
    result = assert_ok(run_cli(*args, env={"CSULORA_CACHE": cache}))
    assert [line for line in result.stderr_lines if line.startswith("csulora: warning:")], result.describe()
    assert len(list((out / "bases").glob("*.safetensors"))) == len(result.subspace()["modules"]) > 0


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 16 KiB tmpfs (root only, where mounting is allowed); unmounted afterwards."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_real_full_tmpfs(models, subspace, tmp_path, tiny_tmpfs):
    base, aligned, adapter = models
    out = tiny_tmpfs / "safe"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 16 * 1024
    assert_one_line_error(
        run_cli("correct", adapter, "--subspace", subspace, "--rank", RANK, "--out", out),
        1,
        f"{out / 'adapter_model.safetensors'}: no space left on device: needs",
    )
    assert list(tiny_tmpfs.iterdir()) == []
    args = ("correct", adapter, "--base", base, "--aligned", aligned, "--rank", RANK)
    assert_ok(run_cli(*args, "--out", tmp_path / "normal", env={"CSULORA_CACHE": tmp_path / "cache"}))
    result = assert_ok(run_cli(*args, "--out", tmp_path / "cache-full", env={"CSULORA_CACHE": tiny_tmpfs / "cache"}))
    assert any("no space left on device" in line for line in result.stderr_lines), result.describe()
    assert _outputs(tmp_path / "cache-full") == _outputs(tmp_path / "normal")
