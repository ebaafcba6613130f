"""Local safetensors sources: header validation, sharded layouts, lazy grouped reads."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from csulora_cli.checkpoints.description import SourceDescription
from csulora_cli.checkpoints.header import read_header
from csulora_cli.checkpoints.local import LocalSource, file_sha256
from csulora_cli.checkpoints.recorded import RecordedModel
from csulora_cli.errors import CsuloraError, FormatError, MissingTensorError
from csulora_cli.testing.builders import write_checkpoint


def raw_file(path, header: dict, data: bytes = b""):
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def test_reads_sharded_checkpoint_in_stored_dtypes(tmp_path):
    tensors = {
        "a.weight": torch.randn(4, 3).to(torch.bfloat16),
        "b.weight": torch.randn(2, 2).to(torch.float16),
        "c.weight": torch.randn(3, 3),
    }
    write_checkpoint(tmp_path / "m", tensors, shards=2)
    source = LocalSource(tmp_path / "m")
    assert sorted(source.keys()) == sorted(tensors)
    read = dict(source.read_many(["c.weight", "a.weight"]))
    assert set(read) == {"a.weight", "c.weight"}
    for key, value in read.items():
        assert value.dtype == tensors[key].dtype and torch.equal(value, tensors[key])


def test_single_file_checkpoint(tmp_path):
    (tmp_path / "m").mkdir()
    save_file({"w": torch.ones(2, 2)}, str(tmp_path / "m" / "model.safetensors"))
    assert torch.equal(LocalSource(tmp_path / "m").read("w"), torch.ones(2, 2))


def test_missing_tensor_and_missing_files(tmp_path):
    write_checkpoint(tmp_path / "m", {"w": torch.ones(2, 2)}, shards=1)
    with pytest.raises(MissingTensorError, match="tensor nope not found"):
        LocalSource(tmp_path / "m").entry("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingTensorError, match="model.safetensors"):
        LocalSource(tmp_path / "empty")
    with pytest.raises(CsuloraError, match="does not exist"):
        LocalSource(tmp_path / "absent")


def test_missing_shard_is_named(tmp_path):
    write_checkpoint(tmp_path / "m", {"w": torch.ones(2, 2), "v": torch.ones(2, 2)}, shards=2)
    (tmp_path / "m" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(MissingTensorError, match="model-00002-of-00002"):
        LocalSource(tmp_path / "m").entry("v")


def test_index_cannot_point_outside_the_folder(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../secret.safetensors"}}))
    with pytest.raises(FormatError, match="outside the model folder"):
        LocalSource(folder)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x02", "shorter than its 8-byte header"),
        (struct.pack("<Q", 10**12) + b"{}", "exceeds the file size"),
        (struct.pack("<Q", 4) + b"nope", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ],
)
def test_garbage_headers_fail_with_the_file_named(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=message) as error:
        read_header(path)
    assert str(path) in error.value.one_line()


def test_offsets_and_truncation_are_checked(tmp_path):
    wrong_span = raw_file(
        tmp_path / "a.safetensors", {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}, b"\0" * 8
    )
    with pytest.raises(FormatError, match=r"\[w\].*needs 16"):
        read_header(wrong_span)
    truncated = raw_file(
        tmp_path / "b.safetensors", {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 8
    )
    with pytest.raises(FormatError, match="truncated"):
        read_header(truncated)


def test_integer_tensors_are_listed_but_not_read(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"w": torch.ones(2, 2), "ids": torch.arange(4)}, str(folder / "model.safetensors"))
    source = LocalSource(folder)
    assert torch.equal(source.read("w"), torch.ones(2, 2))
    with pytest.raises(FormatError, match="I64"):
        source.read("ids")


def test_content_id_follows_bytes_not_paths(tmp_path):
    write_checkpoint(tmp_path / "m", {"w": torch.ones(2, 2)}, shards=1)
    memo = tmp_path / "memo"
    first = LocalSource(tmp_path / "m", digest_memo_dir=memo).content_id("w")
    assert LocalSource(tmp_path / "m", digest_memo_dir=memo).content_id("w") == first
    write_checkpoint(tmp_path / "m", {"w": torch.zeros(2, 2)}, shards=1)  # same path, new bytes
    assert LocalSource(tmp_path / "m", digest_memo_dir=memo).content_id("w") != first


def test_file_digest_memo_is_used_while_the_file_is_unchanged(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    memo = tmp_path / "memo"
    digest = file_sha256(path, memo)
    (entry,) = memo.iterdir()
    record = json.loads(entry.read_text())
    entry.write_text(json.dumps(record | {"sha256": "remembered"}))
    assert file_sha256(path, memo) == "remembered"
    assert file_sha256(path, None) == digest


def test_a_description_reads_back_from_its_record_and_rejects_what_is_none(tmp_path):
    local = SourceDescription.local(tmp_path / "m" / "..")
    hub = SourceDescription.hub("org/m", "main", "a" * 40, "http://127.0.0.1:8000")
    assert local.to_dict() == {"kind": "local", "path": str(tmp_path)} and local.label == str(tmp_path)
    assert list(hub.to_dict()) == ["kind", "repo", "revision", "commit", "endpoint"] and hub.label == "org/m"
    for description in (local, hub):
        # A subspace folder's manifest stores it with sorted keys: read back, it is the same description.
        record = json.loads(json.dumps(description.to_dict(), sort_keys=True))
        assert SourceDescription.from_record(record) == description
    for record in (None, "org/m", {"kind": "hub"}, {"kind": "local", "path": 3}, {"kind": "other", "path": "/m"}):
        assert SourceDescription.from_record(record) is None


def test_a_local_source_and_a_recorded_folder_read_the_same_text_files(tmp_path):
    write_checkpoint(tmp_path / "m", {"w": torch.ones(2, 2)})
    (tmp_path / "m" / "README.md").write_text("---\nbase_model: org/base\n---\n")
    (tmp_path / "m" / "config.json").write_bytes(b"\xff\xfe not text")
    source = LocalSource(tmp_path / "m")
    recorded = RecordedModel(source.describe())
    for model in (source, recorded):
        card = model.text_file("README.md")
        assert card.where == str((tmp_path / "m" / "README.md").resolve()) and "org/base" in card.text
        assert model.text_file("config.json") is None  # not text
        assert model.text_file("missing.md") is None
    # A Hub repo a folder only recorded is never fetched.
    assert RecordedModel(SourceDescription.hub("org/m", "main", "a" * 40, "e")).text_file("README.md") is None
