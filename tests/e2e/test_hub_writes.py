"""The Hub stand-in's write routes through the real `huggingface_hub` client: create a repo or branch,
upload a folder (preupload, LFS batch and upload, NDJSON commit), download it back; refusals as the
Hub answers them; connections dropped mid-upload.

In process (`hub_online` in conftest.py points huggingface_hub at the stand-in); the stand-in's log and
refs show what was uploaded and committed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import httpx

from tests.helpers import READER, WRITER, files_of


def pushed_files(hub, repo_id: str, repo_type: str = "model", branch: str = "main") -> dict[str, bytes]:
    repo = hub.repos_of(repo_type)[repo_id]
    return {name: stored.path.read_bytes() for name, stored in repo.commits[repo.refs[branch]].items()}


@pytest.mark.parametrize("repo_type", ["model", "dataset"])
def test_create_upload_and_download_round_trip_byte_identical(repo_type, hub, folder, tmp_path):
    api = HfApi(token=WRITER)
    url = api.create_repo("org/pushed", repo_type=repo_type, private=True)
    assert url.repo_id == "org/pushed" and url.repo_type == repo_type
    info = api.upload_folder(repo_id="org/pushed", repo_type=repo_type, folder_path=folder, commit_message="push")
    assert info.oid == hub.repos_of(repo_type)["org/pushed"].refs["main"]
    uploads = [r for r in hub.log if r.method == "PUT"]
    assert [r.received_bytes for r in uploads] == [(folder / "adapter_model.safetensors").stat().st_size]

    downloaded = Path(
        snapshot_download("org/pushed", repo_type=repo_type, token=WRITER, cache_dir=tmp_path / "hf-cache")
    )
    assert downloaded.name == info.oid
    assert files_of(downloaded) == files_of(folder) | {".gitattributes": (downloaded / ".gitattributes").read_bytes()}
    one = hf_hub_download("org/pushed", "nested/notes.txt", repo_type=repo_type, token=WRITER, cache_dir=tmp_path)
    assert Path(one).read_bytes() == (folder / "nested" / "notes.txt").read_bytes()

    # Private: without a token the repo is not even there; a second create answers 409 unless exist_ok.
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).repo_info("org/pushed", repo_type=repo_type)
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("org/pushed", repo_type=repo_type)
    assert conflict.value.response.status_code == 409
    api.create_repo("org/pushed", repo_type=repo_type, exist_ok=True)


def test_a_branch_is_created_and_pushed_to(hub, folder, tmp_path):
    api = HfApi(token=WRITER)
    api.create_repo("org/branched")
    api.create_branch("org/branched", branch="runs/7")
    info = api.upload_folder(repo_id="org/branched", folder_path=folder, revision="runs/7")
    repo = hub.repos["org/branched"]
    assert repo.refs["runs/7"] == info.oid and list(repo.commits[repo.refs["main"]]) == [".gitattributes"]
    path = hf_hub_download("org/branched", "README.md", revision="runs/7", token=WRITER, cache_dir=tmp_path)
    assert Path(path).read_bytes() == (folder / "README.md").read_bytes()


def test_pushing_without_write_access_is_refused(hub, folder):
    hub.push("org/private", folder, token=READER)
    hub.push("org/public", folder)
    before = dict(hub.repos["org/private"].refs), dict(hub.repos["org/public"].refs)
    cases = [(READER, "org/private", 403), (None, "org/public", 401), (READER, "org/public", 403)]
    for token, repo_id, status in cases:
        with pytest.raises(HfHubHTTPError) as refused:
            HfApi(token=token if token else False).upload_folder(repo_id=repo_id, folder_path=folder)
        assert refused.value.response.status_code == status, (token, repo_id)
    with pytest.raises(HfHubHTTPError) as elsewhere:
        HfApi(token=WRITER).create_repo("someone-else/repo")
    assert elsewhere.value.response.status_code == 403
    assert (dict(hub.repos["org/private"].refs), dict(hub.repos["org/public"].refs)) == before


def test_a_repo_of_another_type_is_not_found(hub, folder):
    """The Hub keeps types apart: a dataset `org/data` is no model repo."""
    HfApi(token=WRITER).create_repo("org/data", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=WRITER).upload_folder(repo_id="org/data", folder_path=folder)
    assert "org/data" not in hub.repos


def test_gated_repo_files_need_a_token(hub, folder, tmp_path):
    hub.push("org/gated", folder, token=READER, gated=True)
    assert HfApi(token=False).model_info("org/gated").gated == "manual"
    with pytest.raises(HfHubHTTPError) as refused:
        hf_hub_download("org/gated", "README.md", token=False, cache_dir=tmp_path / "a")
    assert refused.value.response.status_code == 403
    assert Path(hf_hub_download("org/gated", "README.md", token=READER, cache_dir=tmp_path / "b")).is_file()


def test_dropped_connections_mid_upload_leave_no_commit(hub, folder, quick_retries):
    api = HfApi(token=WRITER)
    api.create_repo("org/flaky")
    initial = hub.repos["org/flaky"].refs["main"]

    hub.cut_uploads = 6  # every try of the LFS upload is cut halfway (one try and five retries)
    with pytest.raises(RuntimeError, match="Error while uploading") as failed:
        api.upload_folder(repo_id="org/flaky", folder_path=folder)
    assert isinstance(failed.value.__cause__, httpx.TransportError)
    puts = [r for r in hub.log if r.method == "PUT"]
    assert [r.status for r in puts] == [0] * 6
    assert all(0 < r.received_bytes < (folder / "adapter_model.safetensors").stat().st_size for r in puts)
    assert not any("/commit/" in r.path for r in hub.log)
    assert hub.repos["org/flaky"].refs["main"] == initial

    hub.cut_uploads = 1  # one cut upload is retried and goes through; then the commit request is dropped
    hub.cut_commits = 1
    with pytest.raises(httpx.TransportError):
        api.upload_folder(repo_id="org/flaky", folder_path=folder)
    assert [r.status for r in hub.log if r.method == "PUT"][6:] == [0, 200]
    assert [r.status for r in hub.log if "/commit/" in r.path] == [0]
    assert hub.repos["org/flaky"].refs["main"] == initial

    # Pushing again: the object is already stored (no upload), and this time the commit lands.
    info = api.upload_folder(repo_id="org/flaky", folder_path=folder)
    assert {
        name: data for name, data in pushed_files(hub, "org/flaky").items() if name != ".gitattributes"
    } == files_of(folder)
    assert info.oid == hub.repos["org/flaky"].refs["main"]
