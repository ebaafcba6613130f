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
