"""`push_folder`, the facade a later `--push-to-hub` calls: one commit, repo and branch made when missing,
unfinished folders refused, and each failure one line naming the repo (never the token).

In process, through the Hub stand-in (`hub_online` in conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants, snapshot_download

from csulora_cli.atomic import TEMP_PREFIX
from csulora_cli.checkpoints.hub.errors import HubError
from csulora_cli.checkpoints.hub.upload import PushResult, push_folder
from csulora_cli.errors import CsuloraError, UsageError
from tests.helpers import READER, WRITER, files_of


def test_push_folder_creates_repo_and_branch_in_one_commit(hub, folder, tmp_path):
    result = push_folder(folder, "org/results", revision="run-1", private=True, token=WRITER, commit_message="m")
    repo = hub.repos["org/results"]
    assert isinstance(result, PushResult) and result.repo_id == "org/results"
    assert result.commit == repo.refs["run-1"] and result.commit in result.url
    assert repo.is_private
    assert len(repo.commits) == 2  # the repo's first commit (.gitattributes), then the push
    assert [r.path for r in hub.log if "/commit/" in r.path] == ["/api/models/org/results/commit/run-1"]
    downloaded = Path(snapshot_download("org/results", revision="run-1", token=WRITER, cache_dir=tmp_path / "c"))
    assert {name: data for name, data in files_of(downloaded).items() if name != ".gitattributes"} == files_of(folder)

    # The same folder again: no new commit; a dataset repo works the same way.
    again = push_folder(folder, "org/results", revision="run-1", token=WRITER, commit_message="m")
    assert again == PushResult(result.repo_id, result.commit, result.url, unchanged=True)
    dataset = push_folder(folder, "org/subspace", repo_type="dataset", token=WRITER, commit_message="m")
    assert dataset.commit == hub.repos_of("dataset")["org/subspace"].refs["main"]


def test_push_folder_uses_hf_token_from_the_environment(hub, folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITER)
    result = push_folder(folder, "org/from-env", commit_message="m")
    assert result.commit == hub.repos["org/from-env"].refs["main"]


@pytest.mark.parametrize(
    ("case", "mention"),
    [
        ("no token", "needs a token with write access"),
        ("read-only token", "no write access"),
        ("unknown token", "refused the token"),
        ("another namespace", "no write access"),
        ("repo of another type", "is a dataset repo, not a model repo"),
        ("offline", "HF_HUB_OFFLINE"),
        ("dropped upload", "dropped while uploading; nothing was committed"),
        ("dropped commit", "dropped while committing"),
    ],
)
def test_push_folder_failures_are_one_line_naming_the_repo(case, mention, hub, folder, monkeypatch, quick_retries):
    hub.push("org/private", folder, token=READER)
    hub.push("org/data", folder, repo_type="dataset")
    repo_id, token = "org/target", WRITER
    if case == "no token":
        token = None
    elif case == "read-only token":
        repo_id, token = "org/private", READER
    elif case == "unknown token":
        token = "hf_notAKnownToken"
    elif case == "another namespace":
        repo_id = "someone-else/target"
    elif case == "repo of another type":
        repo_id = "org/data"
    elif case == "offline":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    elif case == "dropped upload":
        hub.cut_uploads = 6
    elif case == "dropped commit":
        hub.cut_commits = 1
    commits_before = {name: dict(repo.refs) for name, repo in hub.repos.items()}
    with pytest.raises(HubError) as failure:
        push_folder(folder, repo_id, token=token, commit_message="m")
    line = failure.value.one_line()
    assert mention in line and repo_id in line and "\n" not in line
    assert WRITER not in line and READER not in line and "hf_notAKnownToken" not in line
    assert {name: dict(hub.repos[name].refs) for name in commits_before} == commits_before
    if case == "dropped commit":  # pushing again is safe, as the message says
        assert push_folder(folder, repo_id, token=token, commit_message="m").commit == hub.repos[repo_id].refs["main"]


def test_push_folder_refuses_unfinished_folders_before_any_request(hub, folder, tmp_path):
    unfinished = tmp_path / f"{TEMP_PREFIX}123-abc"
    unfinished.mkdir()
    (unfinished / "README.md").write_text("half written\n")
    with pytest.raises(CsuloraError, match="temporary folder of a run that did not finish"):
        push_folder(unfinished, "org/x", token=WRITER, commit_message="m")
    (folder / f"{TEMP_PREFIX}9-xyz").mkdir()
    (folder / f"{TEMP_PREFIX}9-xyz" / "adapter_model.safetensors").write_bytes(b"partial")
    with pytest.raises(CsuloraError, match="still being written"):
        push_folder(folder, "org/x", token=WRITER, commit_message="m")
    with pytest.raises(CsuloraError, match="does not exist"):
        push_folder(tmp_path / "missing", "org/x", token=WRITER, commit_message="m")
    assert hub.log == []


@pytest.mark.parametrize(
    ("arguments", "parameter"),
    [
        ({"repo_id": "not a repo id"}, "repo_id"),
        ({"repo_type": "space"}, "repo_type"),
        ({"revision": "0123456789abcdef0123456789abcdef01234567"}, "revision"),
        ({"commit_message": " "}, "commit_message"),
    ],
)
def test_push_folder_checks_its_parameters_first(arguments, parameter, hub, folder):
    kwargs = {"repo_id": "org/x", "token": WRITER, "commit_message": "m"} | arguments
    with pytest.raises(UsageError) as refused:
        push_folder(folder, **kwargs)
    assert refused.value.parameter == parameter
    assert hub.log == []
