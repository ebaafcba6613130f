"""`verify` never follows a link in an output folder (csulora writes none): a link that replaced a file, even to
the same bytes, is a difference, and a link to a folder is an extra entry, not a crash."""

from __future__ import annotations

import shutil

from tests.helpers import assert_ok, assert_one_line_error, run_cli


def test_a_link_in_an_output_folder_is_named_never_followed(models, subspace, tmp_path):
    _, _, adapter = models
    out = tmp_path / "safe"
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out))
    card = out / "README.md"
    same_bytes = tmp_path / "card-copy.md"
    shutil.copyfile(card, same_bytes)
    card.unlink()
    card.symlink_to(same_bytes)
    assert_one_line_error(run_cli("verify", out), 1, str(card), "differs")
    card.unlink()
    shutil.copyfile(same_bytes, card)
    assert_ok(run_cli("verify", out))

    (out / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    assert_one_line_error(run_cli("verify", out), 1, str(out / "elsewhere"), "extra")
