"""Shard digests started ahead (checkpoints/digests.py): the same digests, remembered, never waited on
for shards a run does not need, and started by the commands that estimate from local folders."""

from __future__ import annotations

import hashlib
import threading

import pytest

from csulora_cli.checkpoints import digests
from csulora_cli.checkpoints import local as local_source  # binds hash_ahead now, before any spy replaces it
from csulora_cli.cli import main as cli_main


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.setattr(digests, "_ahead", {})


@pytest.fixture
def one_gated_worker(monkeypatch):
    """One hash-ahead worker, on a queue of its own, whose digests start only once `release` is set.

    Yields (started, release): `started` lists "folder/name" of each file as the worker takes it up.
    """
    started, release = [], threading.Event()
    compute = digests._compute

    def gated(path, memo_dir):
        started.append(f"{path.parent.name}/{path.name}")
        release.wait(5)
        return compute(path, memo_dir)

    monkeypatch.setattr(digests, "_compute", gated)
    monkeypatch.setattr(digests, "AHEAD_WORKERS", 1)
    monkeypatch.setattr(digests, "_workers", [])
    monkeypatch.setattr(digests, "_queue", digests.queue.PriorityQueue())
    return started, release


def _files(tmp_path, count: int) -> list:
    paths = []
    for index in range(count):
        path = tmp_path / f"model-{index:05d}.safetensors"
        path.write_bytes(bytes([index]) * (1 << 16))
        paths.append(path)
    return paths


def test_digests_started_ahead_are_the_files_sha256_and_are_remembered(tmp_path):
    paths = _files(tmp_path, 3)
    memo = tmp_path / "memo"
    digests.hash_ahead(paths, memo)
    for path in paths:
        assert digests.file_sha256(path, memo) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(list(memo.glob("*.json"))) == 3  # the next run finds them without hashing


def test_shards_no_key_needs_are_not_hashed(tmp_path, one_gated_worker):
    paths = _files(tmp_path, 3)
    hashed, release = one_gated_worker
    digests.hash_ahead(paths, None)
    digests.keep_only(needed=[paths[0]], among=paths)  # the first is running; the others had not started
    release.set()
    assert digests.file_sha256(paths[0], None) == hashlib.sha256(paths[0].read_bytes()).hexdigest()
    assert hashed == [f"{tmp_path.name}/{paths[0].name}"]
    assert len(digests._ahead) == 1


def test_a_file_missing_or_rewritten_since_is_hashed_anew(tmp_path):
    missing = tmp_path / "gone.safetensors"
    digests.hash_ahead([missing], None)
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):
        digests.file_sha256(missing, None)
    (path,) = _files(tmp_path, 1)
    digests.hash_ahead([path], None)
    digests.file_sha256(path, None)
    path.write_bytes(b"other bytes")
    assert digests.file_sha256(path, None) == hashlib.sha256(b"other bytes").hexdigest()


def test_local_shards_follow_the_index_and_skip_what_is_not_a_model_folder(tmp_path):
    (tmp_path / "a-1.safetensors").write_bytes(b"x")
    (tmp_path / "a-2.safetensors").write_bytes(b"y")
    index = '{"weight_map": {"w1": "a-2.safetensors", "w2": "a-1.safetensors", "w3": "a-2.safetensors"}}'
    (tmp_path / "model.safetensors.index.json").write_text(index)
    assert [path.name for path in digests.local_shards(tmp_path)] == ["a-2.safetensors", "a-1.safetensors"]
    (tmp_path / "model.safetensors.index.json").write_text("not json")
    assert digests.local_shards(tmp_path) == []
    assert digests.local_shards(tmp_path / "absent") == []


@pytest.mark.parametrize("command", ["correct", "estimate-subspace"])
def test_commands_start_hashing_the_local_shards_before_estimating(demo_models, tmp_path, monkeypatch, command):
    base, aligned, adapter = demo_models
    started = []
    hash_ahead = digests.hash_ahead
    monkeypatch.setattr(digests, "hash_ahead", lambda paths, memo: started.extend(paths) or hash_ahead(paths, memo))
    if command == "correct":
        argv = ["correct", str(adapter), "--base", str(base), "--aligned", str(aligned), "--out", str(tmp_path / "o")]
    else:
        argv = ["estimate-subspace", str(base), str(aligned), "--adapter", str(adapter)]
    with pytest.raises(SystemExit) as ended:
        cli_main([*argv, "--rank", "4", "--quiet"])
    assert ended.value.code == 0
    expected = digests.local_shards(base) + digests.local_shards(aligned)
    assert started == expected and expected


def test_each_cache_remembers_its_own_digests(tmp_path):
    (path,) = _files(tmp_path, 1)
    for memo in (tmp_path / "first", tmp_path / "second"):
        digests.hash_ahead([path], memo)
        assert digests.file_sha256(path, memo) == hashlib.sha256(path.read_bytes()).hexdigest()
        assert len(list(memo.glob("*.json"))) == 1


def test_the_nth_file_of_every_model_is_hashed_before_any_models_next(tmp_path, one_gated_worker):
    base, aligned = tmp_path / "base", tmp_path / "aligned"
    base.mkdir(), aligned.mkdir()
    base_files, aligned_files = _files(base, 2), _files(aligned, 2)
    hashed, release = one_gated_worker  # the worker's first file waits until both models are queued
    digests.hash_ahead(base_files, None)
    digests.hash_ahead(aligned_files, None)
    release.set()
    digests.file_sha256(aligned_files[1], None)
    first, second = (path.name for path in base_files)
    # The worker took base's first file while aligned's were not queued yet; the rest follow the ranks.
    assert hashed == [f"base/{first}", f"aligned/{first}", f"base/{second}", f"aligned/{second}"]


def test_a_local_source_starts_hashing_the_shards_its_keys_need(demo_models, monkeypatch):
    base, _, _ = demo_models
    started = []
    hash_ahead = digests.hash_ahead
    monkeypatch.setattr(digests, "hash_ahead", lambda paths, memo: started.extend(paths) or hash_ahead(paths, memo))
    monkeypatch.setattr(local_source, "hash_ahead", digests.hash_ahead)
    source = local_source.LocalSource(base)
    keys = sorted(source.keys())
    source.plan_reads(keys[:1])
    assert started == [source._shard_of[keys[0]]]
    assert source.content_id(keys[0]).startswith("sha256:")
