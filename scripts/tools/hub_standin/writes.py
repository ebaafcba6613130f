"""The Hub stand-in's write routes, as `huggingface_hub` calls them: create a repo or a branch, preupload,
the LFS batch API and its upload URLs, and the NDJSON commit.

Each function takes the request's decoded JSON and returns the JSON to answer, or raises a `Refusal`;
`server.py` reads and writes the HTTP around them. The stand-in speaks the LFS "basic" transfer;
Xet transfers are hf_xet's own protocol and are not spoken here (tests set HF_HUB_DISABLE_XET=1).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from pathlib import Path

import yaml

from .state import GITATTRIBUTES, URL_PREFIXES, FakeRepo, HubState, Refusal, StoredFile, stored_in_lfs


def repo_url(base_url: str, repo_type: str, repo_id: str) -> str:
    return f"{base_url}/{URL_PREFIXES[repo_type]}{repo_id}"


def create_repo(state: HubState, base_url: str, token: str | None, request: dict) -> dict:
    """POST /api/repos/create: {name, organization, type?, visibility?}; a new repo holds .gitattributes."""
    repo_type = request.get("type") or "model"
    if repo_type not in state.repos:
        raise Refusal(400, None, f"Invalid repo type: {repo_type}")
    if token is None:
        raise Refusal(401, None, "You must be authenticated to create a repo")
    namespace = request.get("organization") or sorted(state.writers.get(token, {"anonymous"}))[0]
    repo_id = f"{namespace}/{request.get('name')}"
    url = repo_url(base_url, repo_type, repo_id)
    if namespace not in state.writers.get(token, set()):
        message = f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"'
        raise Refusal(403, None, message)
    if repo_id in state.repos[repo_type]:
        raise Refusal(409, None, f"You already created this {repo_type} repo", url=url)
    repo = state.repos[repo_type][repo_id] = FakeRepo(repo_type, private=request.get("visibility") == "private")
    repo.add_commit(repo_id, "main", {".gitattributes": state.store_bytes(GITATTRIBUTES)})
    return {"url": url, "name": repo_id, "id": repo_id}


def validate_yaml(request: dict) -> dict:
    """POST /api/validate-yaml: a README.md's YAML front matter, checked before a commit that adds it.

    Only whether it parses to a mapping; the Hub also checks known fields, and warns when there is none.
    """
    front = re.match(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", str(request.get("content", "")), re.DOTALL)
    try:
        metadata = yaml.safe_load(front[1]) if front else {}
    except yaml.YAMLError as error:
        raise Refusal(400, None, "Invalid metadata", errors=[{"message": str(error).splitlines()[0]}]) from None
    if not isinstance(metadata, dict | None):
        raise Refusal(400, None, "Invalid metadata", errors=[{"message": "metadata is not a mapping"}])
    return {"errors": [], "warnings": []}


def create_branch(state: HubState, repo_type: str, repo_id: str, branch: str, token: str | None, request: dict):
    """POST /api/{type}s/{repo}/branch/{branch}: {startingPoint?}; 409 when the ref exists."""
    repo = state.writable(repo_type, repo_id, token)
    if branch in repo.refs:
        raise Refusal(409, None, "Reference already exists")
    repo.refs[branch] = repo.resolve(request.get("startingPoint") or "main")
    return {}


def preupload(state: HubState, repo_type: str, repo_id: str, revision: str, token: str | None, request: dict):
    """POST /api/{type}s/{repo}/preupload/{rev}: which files go to LFS, and the oid each path has now."""
    repo = state.writable(repo_type, repo_id, token)
    commit_id = repo.resolve(revision)
    head = repo.commits[commit_id]
    answers = []
    for entry in request.get("files", []):
        try:
            sample = base64.b64decode(entry["sample"])
            path, size = entry["path"], int(entry["size"])
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise Refusal(400, None, "Invalid preupload payload") from None
        answer = {"path": path, "uploadMode": "lfs" if stored_in_lfs(path, size, sample) else "regular"}
        answer["shouldIgnore"] = False
        if path in head:
            answer["oid"] = head[path].sha256 if head[path].lfs else head[path].blob_id
        answers.append(answer)
    return {"files": answers, "commitOid": commit_id}


def lfs_batch(state: HubState, base_url: str, repo_type: str, repo_id: str, token: str | None, request: dict):
    """POST /{prefix}{repo}.git/info/lfs/objects/batch: an upload URL for each object not stored yet."""
    state.writable(repo_type, repo_id, token)
    if request.get("operation") != "upload":
        raise Refusal(400, None, "Only uploads are spoken here")
    objects = []
    stored = state.lfs_store(repo_type, repo_id)
    for entry in request.get("objects", []):
        oid, size = str(entry.get("oid")), int(entry.get("size", -1))
        answer: dict = {"oid": oid, "size": size}
        if oid not in stored:
            # Like a presigned storage URL: it carries its own permission, the client sends no token with it.
            ticket = uuid.uuid4().hex
            state.upload_tickets[ticket] = (repo_type, repo_id, oid, size)
            verify = f"{repo_url(base_url, repo_type, repo_id)}.git/info/lfs/objects/verify"
            answer["actions"] = {
                "upload": {"href": f"{base_url}/lfs-uploads/{oid}?ticket={ticket}"},
                "verify": {"href": verify},
            }
        objects.append(answer)
    return {"transfer": "basic", "objects": objects}


def upload_size(state: HubState, oid: str, ticket: str | None) -> int:
    """The size an upload URL was issued for; refused when the URL was never issued."""
    issued = state.upload_tickets.get(ticket or "")
    if issued is None or issued[2] != oid:
        raise Refusal(403, None, "Request has expired or the signature does not match")
    return issued[3]


def accept_upload(state: HubState, oid: str, ticket: str, received: Path) -> None:
    """Keep an uploaded object in its repo's LFS store if it is the bytes the batch call announced."""
    repo_type, repo_id, _, expected_size = state.upload_tickets[ticket]
    stored = StoredFile.of(received, lfs=True)
    if stored.size != expected_size or stored.sha256 != oid:
        received.unlink()
        raise Refusal(400, None, f"Uploaded object {oid} does not match its size or sha256")
    final = state.blob_dir / oid
    received.replace(final)
    state.lfs_store(repo_type, repo_id)[oid] = StoredFile(final, stored.size, stored.sha256, stored.blob_id, lfs=True)
    del state.upload_tickets[ticket]


def lfs_verify(state: HubState, repo_type: str, repo_id: str, token: str | None, request: dict):
    state.writable(repo_type, repo_id, token)
    stored = state.lfs_store(repo_type, repo_id).get(str(request.get("oid")))
    if stored is None or stored.size != request.get("size"):
        raise Refusal(404, None, "Object not found")
    return {}


def commit(state: HubState, base_url: str, repo_type: str, repo_id: str, revision: str, token, lines: list[dict]):
    """POST /api/{type}s/{repo}/commit/{rev}: NDJSON of a header, then file, lfsFile and deleted* entries."""
    repo = state.writable(repo_type, repo_id, token)
    parent = repo.resolve(revision)
    if revision not in repo.refs:
        raise Refusal(400, None, f"Cannot commit to {revision}: not a branch")
    files = dict(repo.commits[parent])
    header = lines[0].get("value", {}) if lines and lines[0].get("key") == "header" else None
    if header is None or not header.get("summary"):
        raise Refusal(400, None, "The commit needs a header with a summary")
    if header.get("parentCommit") not in (None, parent):
        raise Refusal(412, None, "A commit has happened since. Please refresh and try again.")
    for line in lines[1:]:
        _apply(state, state.lfs_store(repo_type, repo_id), files, line.get("key"), line.get("value") or {})
    commit_id = repo.add_commit(repo_id, revision, files)
    return {
        "success": True,
        "commitOid": commit_id,
        "commitUrl": f"{repo_url(base_url, repo_type, repo_id)}/commit/{commit_id}",
        "commitMessage": header["summary"],
    }


def _apply(state: HubState, lfs: dict[str, StoredFile], files: dict[str, StoredFile], key: str | None, value: dict):
    path = value.get("path")
    if not isinstance(path, str) or not path or path.startswith("/"):
        raise Refusal(400, None, f"Invalid path in commit: {path!r}")
    if key == "file":
        try:
            content = value["content"]
            data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
        except (KeyError, AttributeError, binascii.Error):
            raise Refusal(400, None, f"Invalid content for {path}") from None
        files[path] = state.store_bytes(data)
    elif key == "lfsFile":
        stored = lfs.get(str(value.get("oid")))
        if stored is None:
            message = "Your push was rejected because an LFS pointer pointed to a file that does not exist"
            raise Refusal(422, None, f"{message}: {path}")
        files[path] = stored
    elif key == "deletedFile":
        if files.pop(path, None) is None:
            raise Refusal(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
    elif key == "deletedFolder":
        for name in [name for name in files if name.startswith(path.rstrip("/") + "/")]:
            del files[name]
    else:
        raise Refusal(400, None, f"Unknown commit operation {key!r}")
