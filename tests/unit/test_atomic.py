"""Output folders appear whole or not at all; existing outputs are kept unless --overwrite."""

from __future__ import annotations

import pytest

from csulora_cli.atomic import TEMP_PREFIX, atomic_folder
from csulora_cli.errors import OutputExistsError


def test_success_renames_into_place(tmp_path):
    with atomic_folder(tmp_path / "out", overwrite=False) as folder:
        (folder / "f").write_text("new")
        assert not (tmp_path / "out").exists()
    assert (tmp_path / "out" / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "out", overwrite=False) as folder:
            (folder / "f").write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("old")
    with pytest.raises(OutputExistsError, match="pass overwrite to replace it"):
        with atomic_folder(tmp_path / "out", overwrite=False):
            pass
    assert (tmp_path / "out" / "f").read_text() == "old"


def test_overwrite_replaces_and_cleans_up(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale").write_text("old")
    with atomic_folder(tmp_path / "out", overwrite=True) as folder:
        (folder / "f").write_text("new")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_failed_overwrite_keeps_the_old_output(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "out", overwrite=True):
            raise RuntimeError("boom")
    assert (tmp_path / "out" / "f").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_missing_parents_are_created_and_removed_again_on_failure(tmp_path):
    destination = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError), atomic_folder(destination, overwrite=False) as folder:
        assert folder.parent == tmp_path / "a" / "b"
        raise RuntimeError("the work failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(destination, overwrite=False) as folder:
        (folder / "f").write_text("done")
    assert (destination / "f").read_text() == "done"


def test_an_empty_destination_is_free_and_foreign_entries_refuse_an_overwrite(tmp_path):
    destination = tmp_path / "out"
    destination.mkdir()
    with atomic_folder(destination, overwrite=False) as folder:
        (folder / "own").write_text("1")
    (destination / "users").write_text("keep me")

    def foreign(folder):
        return sorted(entry.name for entry in folder.iterdir() if entry.name != "own")

    with pytest.raises(OutputExistsError, match="users"), atomic_folder(destination, True, foreign):
        pass
    assert (destination / "users").read_text() == "keep me"
    (destination / "users").unlink()
    with atomic_folder(destination, True, foreign) as folder:
        (folder / "own").write_text("2")
    assert (destination / "own").read_text() == "2"


def test_raw_bytes_of_a_one_column_qr_factor_and_of_an_empty_tensor():
    """QR's one-column Q is contiguous with a stride that `view` refuses; an empty basis has no bytes."""
    import torch

    from csulora_cli.checkpoints.header import raw_bytes

    column = torch.linalg.qr(torch.randn(5, 1, dtype=torch.float64))[0]
    assert raw_bytes(column) == column.numpy().tobytes()
    assert raw_bytes(torch.zeros(576, 0)) == b""
