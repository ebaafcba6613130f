"""`verify` never follows a link in an output folder (csulora writes none): a link that replaced a file, even to
the same bytes, is a difference, and a link to a folder is an extra entry, not a crash."""

from __future__ import annotations

import hashlib
import json

from csulora_cli.report.records import REPORT_FILE
from tests.helpers import assert_ok, assert_one_line_error, run_cli


def test_a_link_in_an_output_folder_is_named_never_followed(tmp_path):
    out = tmp_path / "safe"
    out.mkdir()
    card = out / "README.md"
    card.write_text("# corrected adapter\n")
    digests = {"README.md": hashlib.sha256(card.read_bytes()).hexdigest()}
    (out / REPORT_FILE).write_text(json.dumps({"provenance": {"output_files": digests}}))
    assert_ok(run_cli("verify", out))

    same_bytes = tmp_path / "card-copy.md"
    card.rename(same_bytes)
    card.symlink_to(same_bytes)
    assert_one_line_error(run_cli("verify", out), 1, str(card), "differs")
    card.unlink()
    same_bytes.rename(card)
    assert_ok(run_cli("verify", out))

    (out / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    assert_one_line_error(run_cli("verify", out), 1, str(out / "elsewhere"), "extra")
