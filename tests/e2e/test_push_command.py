"""`csulora push FOLDER REPO`: a finished output pushed again after a failed `--push-to-hub`, without
running the job again; a push leaves the branch holding exactly the output (stale files deleted).

In process, through the real `huggingface_hub` client and the Hub stand-in (`hub` in conftest.py).
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download

from tests.helpers import WRITER, assert_ok, assert_one_line_error, files_of, run_cli


def download(repo_id: str, cache: Path, revision: str = "main") -> dict[str, bytes]:
    folder = Path(snapshot_download(repo_id, revision=revision, token=WRITER, cache_dir=cache))
    files = files_of(folder)
    files.pop(".gitattributes", None)
    return files


def test_a_failed_push_names_the_command_that_retries_it(hub, models, subspace, tmp_path):
    _, _, adapter = models
    out = tmp_path / "safe"
    push = ("--push-to-hub", "someone-else/safe", "--token", WRITER)
    failed = run_cli("correct", adapter, "--subspace", subspace, "--out", out, *push)
    line = assert_one_line_error(failed, 1, "no write access")
    assert f"csulora push {out.resolve()} someone-else/safe" in line

    pushed = assert_ok(run_cli("push", out, "org/safe", "--revision", "run-1", "--token", WRITER, "--json")).json()
    repo = hub.repos["org/safe"]
    assert pushed["command"] == "push" and pushed["output"]["kind"] == "adapter"
    assert pushed["output"]["pushed"]["commit"] == repo.refs["run-1"]
    assert download("org/safe", tmp_path / "hf", "run-1") == files_of(out)


def test_a_push_replaces_the_files_of_an_earlier_push(hub, models, subspace, folder, tmp_path):
    _, _, adapter = models
    hub.push("org/safe", folder)  # an earlier output: other files, one of them nested
    out = tmp_path / "safe"
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out))
    assert_ok(run_cli("push", out, "org/safe", "--token", WRITER))
    assert download("org/safe", tmp_path / "hf") == files_of(out)


def test_a_subspace_folder_is_pushed_with_its_card(hub, models, subspace, tmp_path):
    result = assert_ok(run_cli("push", subspace, "org/subspace", "--token", WRITER))
    assert "pushed: " in result.stdout and "org/subspace@main" in result.stdout
    files = download("org/subspace", tmp_path / "hf")
    assert "README.md" in files and "subspace.json" in files


def test_only_a_finished_untouched_output_is_pushed(hub, models, subspace, tmp_path):
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("not an output\n")
    assert_one_line_error(run_cli("push", stray, "org/x", "--token", WRITER), 1, "not a finished csulora output")
    out = tmp_path / "safe"
    assert_ok(run_cli("correct", models[2], "--subspace", subspace, "--out", out))
    (out / "extra.txt").write_text("added by hand\n")
    line = assert_one_line_error(run_cli("push", out, "org/x", "--token", WRITER), 1, "not pushed", "extra.txt")
    assert "org/x" not in hub.repos, line


def test_a_failed_push_says_what_to_check_rather_than_to_run_itself_again(hub, models, subspace, tmp_path):
    out = tmp_path / "safe"
    assert_ok(run_cli("correct", models[2], "--subspace", subspace, "--out", out))
    line = assert_one_line_error(run_cli("push", out, "someone-else/safe", "--token", WRITER), 1, "no write access")
    assert "csulora push" not in line and "--token" in line and "someone-else/safe" in line


def test_a_repeat_push_says_nothing_changed_in_csuloras_words(hub, models, subspace, tmp_path):
    out = tmp_path / "safe"
    assert_ok(run_cli("correct", models[2], "--subspace", subspace, "--out", out))
    assert_ok(run_cli("push", out, "org/again", "--token", WRITER))
    again = assert_ok(run_cli("push", out, "org/again", "--token", WRITER))
    assert "No files have been modified" not in again.stderr + again.stdout, again.describe()
    assert f"nothing to push: org/again@main already holds exactly {out}" in " ".join(again.stdout.split())
    document = assert_ok(run_cli("push", out, "org/again", "--token", WRITER, "--json")).json()
    assert document["output"]["pushed"]["unchanged"] is True
