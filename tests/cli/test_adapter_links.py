"""Symbolic links among an adapter's files are refused, never followed (a linked secret must not be published).

The one exception is a Hugging Face cache snapshot, whose files are links into the repo's own `blobs/`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import RANK, assert_ok, assert_one_line_error, run_cli

SECRET = "hf_secretTOKEN0123456789"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secrets" / "token"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def adapter_copy(adapter: Path, folder: Path) -> Path:
    shutil.copytree(adapter, folder)
    return folder


def link_in_place(path: Path, target: Path) -> None:
    """Replace `path` by a link to `target` holding the same bytes (the link itself is what is at fault)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)
    path.symlink_to(target)


def assert_refused(result, link: Path, out: Path | None = None) -> None:
    line = assert_one_line_error(result, 1, f"{link}: is a symbolic link", "cp -L")
    assert SECRET not in line
    if out is not None:
        assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".csulora-tmp")]


def test_link_to_a_token_file_is_refused_and_not_published(models, subspace, tmp_path, secret):
    _, _, adapter = models
    folder = adapter_copy(adapter, tmp_path / "adapter")
    (folder / "token.txt").symlink_to(secret)
    out = tmp_path / "out"
    assert_refused(
        run_cli("correct", folder, "--subspace", subspace, "--rank", RANK, "--out", out), folder / "token.txt", out
    )


@pytest.mark.parametrize("name", ["adapter_config.json", "adapter_model.safetensors"])
@pytest.mark.parametrize("command", ["correct", "inspect"])
def test_linked_config_or_weights_are_refused(models, subspace, tmp_path, name, command):
    _, _, adapter = models
    folder = adapter_copy(adapter, tmp_path / "adapter")
    link_in_place(folder / name, tmp_path / "elsewhere" / name)
    out = tmp_path / "out"
    args = ("--out", out) if command == "correct" else ()
    assert_refused(run_cli(command, folder, "--subspace", subspace, "--rank", RANK, *args), folder / name)


def test_link_to_a_folder_is_refused(models, subspace, tmp_path, secret):
    _, _, adapter = models
    folder = adapter_copy(adapter, tmp_path / "adapter")
    (folder / "secrets").symlink_to(secret.parent, target_is_directory=True)
    out = tmp_path / "out"
    assert_refused(
        run_cli("correct", folder, "--subspace", subspace, "--rank", RANK, "--out", out), folder / "secrets", out
    )


def test_estimate_subspace_refuses_a_linked_adapter_file(models, tmp_path, secret):
    base, aligned, adapter = models
    folder = adapter_copy(adapter, tmp_path / "adapter")
    (folder / "token.txt").symlink_to(secret)
    result = run_cli("estimate-subspace", base, aligned, "--adapter", folder, "--rank", RANK, "--out", tmp_path / "s")
    assert_refused(result, folder / "token.txt")


def test_the_adapter_folder_itself_may_be_a_link(models, subspace, tmp_path):
    _, _, adapter = models
    run = adapter_copy(adapter, tmp_path / "run-17")
    latest = tmp_path / "latest"
    latest.symlink_to(run, target_is_directory=True)
    out = tmp_path / "out"
    assert_ok(run_cli("correct", latest, "--subspace", subspace, "--rank", RANK, "--out", out))
    assert (out / "adapter_model.safetensors").is_file()


def hub_cache_snapshot(adapter: Path, cache: Path, commit: str = COMMIT) -> Path:
    """The adapter laid out as huggingface_hub caches a repo: files in blobs/, links in snapshots/<commit>/."""
    repo = cache / "models--org--adapter"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in adapter.iterdir():
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def test_hub_cache_snapshot_links_into_its_blobs_are_read_and_copied_as_files(models, subspace, tmp_path):
    _, _, adapter = models
    snapshot = hub_cache_snapshot(adapter, tmp_path / "hf-cache")
    (snapshot / "tokenizer_config.json").symlink_to(
        os.path.relpath(_add_blob(snapshot, b'{"model_max_length": 128}\n'), snapshot)
    )
    out = tmp_path / "out"
    assert_ok(run_cli("correct", snapshot, "--subspace", subspace, "--rank", RANK, "--out", out))
    copied = out / "tokenizer_config.json"
    assert not copied.is_symlink() and copied.read_bytes() == b'{"model_max_length": 128}\n'
    assert (out / "adapter_config.json").read_bytes() == (adapter / "adapter_config.json").read_bytes()
    assert not any(path.is_symlink() for path in out.iterdir())


def _add_blob(snapshot: Path, data: bytes) -> Path:
    blob = snapshot.parents[1] / "blobs" / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    return blob


def test_hub_cache_snapshot_link_outside_its_blobs_is_refused(models, subspace, tmp_path, secret):
    _, _, adapter = models
    snapshot = hub_cache_snapshot(adapter, tmp_path / "hf-cache")
    (snapshot / "token.txt").symlink_to(secret)
    out = tmp_path / "out"
    result = run_cli("correct", snapshot, "--subspace", subspace, "--rank", RANK, "--out", out)
    assert_refused(result, snapshot / "token.txt", out)


def test_a_folder_named_like_a_snapshot_but_not_at_a_commit_gets_no_exception(models, subspace, tmp_path):
    _, _, adapter = models
    snapshot = hub_cache_snapshot(adapter, tmp_path / "hf-cache", commit="main")
    result = run_cli("correct", snapshot, "--subspace", subspace, "--rank", RANK, "--out", tmp_path / "out")
    assert_refused(result, snapshot / "adapter_config.json")
