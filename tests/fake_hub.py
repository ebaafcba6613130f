"""A local HTTP server speaking the Hugging Face Hub routes that `huggingface_hub` uses, for tests.

Routes: `GET /api/models/{repo}[/revision/{rev}]` (model info, with per-file size, blob id and LFS
sha256 when `blobs=true`), `GET /api/models/{repo}/tree/{rev}`, and `HEAD`/`GET
/{repo}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag`, `Content-Length` and `Range`/206. Errors
carry the `X-Error-Code` headers the real Hub sends (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo). Every request is logged with the body bytes sent, so tests can count what was fetched.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass
class LoggedRequest:
    method: str
    path: str
    status: int
    range: str | None
    body_bytes: int
    authorization: str | None


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # private: only this token may read it
    gated: bool = False  # gated: metadata is public, files need `token`


class FakeHub:
    def __init__(self):
        self.repos: dict[str, FakeRepo] = {}
        self.log: list[LoggedRequest] = []
        self.stall_seconds = 0.0  # answer every request this late (timeouts)
        self.ignore_ranges = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    # Building repos
    def push(self, repo_id: str, folder: Path, branch: str = "main", **access) -> str:
        """Commit every file of `folder` to `branch` of `repo_id`; returns the new commit sha."""
        repo = self.repos.setdefault(repo_id, FakeRepo())
        for name, value in access.items():
            setattr(repo, name, value)
        files = {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))}
        files = {name: data for name, data in files.items() if not name.startswith(".")}
        digest = hashlib.sha1(repr(sorted((n, hashlib.sha256(d).hexdigest()) for n, d in files.items())).encode())
        digest.update(f"{repo_id}:{len(repo.commits)}".encode())
        commit = digest.hexdigest()
        repo.commits[commit] = {name: data for name, data in files.items() if data is not None}
        repo.refs[branch] = commit
        return commit

    # What was fetched
    def data_requests(self) -> list[LoggedRequest]:
        """GETs of file contents (resolve), the requests that move checkpoint bytes."""
        return [r for r in self.log if r.method == "GET" and "/resolve/" in r.path]

    def bytes_served(self, suffix: str = "") -> int:
        return sum(r.body_bytes for r in self.data_requests() if r.path.endswith(suffix))

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    # Answering
    def record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.log.append(entry)


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sibling(name: str, data: bytes) -> dict:
    entry = {"rfilename": name, "size": len(data), "blobId": _blob_id(data)}
    if name.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


def _etag(name: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if name.endswith(LFS_SUFFIXES) else _blob_id(data)


class _Refusal(Exception):
    def __init__(self, status: int, code: str | None, message: str = "", commit: str | None = None):
        self.status, self.code, self.message, self.commit = status, code, message, commit


def _handler_for(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_HEAD(self):
            self._answer(head=True)

        def do_GET(self):
            self._answer(head=False)

        def _answer(self, head: bool):
            if hub.stall_seconds:
                time.sleep(hub.stall_seconds)
            path = unquote(urlsplit(self.path).path)
            try:
                status, headers, body = self._route(path)
            except _Refusal as refusal:
                status, body = refusal.status, json.dumps({"error": refusal.message or refusal.code}).encode()
                headers = {"Content-Type": "application/json"}
                if refusal.code:
                    headers["X-Error-Code"] = refusal.code
                if refusal.message:
                    headers["X-Error-Message"] = refusal.message
                if refusal.commit:
                    headers["X-Repo-Commit"] = refusal.commit
            sent = 0 if head else len(body)
            hub.record(
                LoggedRequest(
                    self.command, path, status, self.headers.get("Range"), sent, self.headers.get("Authorization")
                )
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        # Routes
        def _route(self, path: str):
            if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path):
                return self._model_info(match[1], match[2] or "main")
            if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path):
                return self._tree(match[1], match[2])
            if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                return self._resolve(match[1], match[2], match[3])
            raise _Refusal(404, None, "no such route")

        def _repo(self, repo_id: str, files_access: bool) -> FakeRepo:
            repo = hub.repos.get(repo_id)
            authorization = self.headers.get("Authorization")
            known_tokens = {f"Bearer {r.token}" for r in hub.repos.values() if r.token}
            if authorization is not None and authorization not in known_tokens:
                raise _Refusal(401, None, "Invalid credentials in Authorization header")
            if repo is None:
                raise _Refusal(404, "RepoNotFound", "Repository not found")
            allowed = repo.token is None or authorization == f"Bearer {repo.token}"
            if not allowed and not repo.gated:
                raise _Refusal(401, "RepoNotFound", "Repository not found")  # what the Hub says for private repos
            if not allowed and files_access:
                raise _Refusal(403, "GatedRepo", "Access to this model is restricted")
            return repo

        def _commit(self, repo_id: str, repo: FakeRepo, revision: str) -> str:
            commit = repo.refs.get(revision) or (revision if revision in repo.commits else None)
            if commit is None:
                raise _Refusal(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return commit

        def _model_info(self, repo_id: str, revision: str):
            repo = self._repo(repo_id, files_access=False)
            commit = self._commit(repo_id, repo, revision)
            files = repo.commits[commit]
            info = {
                "id": repo_id,
                "sha": commit,
                "private": repo.token is not None and not repo.gated,
                "gated": "manual" if repo.gated else False,
                "siblings": [_sibling(name, data) for name, data in files.items()],
            }
            return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()

        def _tree(self, repo_id: str, revision: str):
            repo = self._repo(repo_id, files_access=False)
            commit = self._commit(repo_id, repo, revision)
            entries = []
            for name, data in repo.commits[commit].items():
                entry = {"type": "file", "path": name, "size": len(data), "oid": _blob_id(data)}
                if name.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                entries.append(entry)
            return 200, {"Content-Type": "application/json"}, json.dumps(entries).encode()

        def _resolve(self, repo_id: str, revision: str, filename: str):
            repo = self._repo(repo_id, files_access=True)
            commit = self._commit(repo_id, repo, revision)
            data = repo.commits[commit].get(filename)
            if data is None:
                raise _Refusal(404, "EntryNotFound", f"{filename} does not exist", commit=commit)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{_etag(filename, data)}"', "Accept-Ranges": "bytes"}
            requested = self.headers.get("Range")
            if requested and not hub.ignore_ranges and (match := re.fullmatch(r"bytes=(\d+)-(\d*)", requested)):
                start = int(match[1])
                end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return 206, headers, data[start : end + 1]
            return 200, headers, data

    return Handler
