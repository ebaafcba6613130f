"""A local HTTP server speaking the Hugging Face Hub routes that `huggingface_hub` uses, for tests.

Routes: `GET /api/models/{repo}[/revision/{rev}]` (model info, with per-file size, blob id and LFS
sha256 when `blobs=true`), `GET /api/models/{repo}/tree/{rev}`, and `HEAD`/`GET
/{repo}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag`, `Content-Length` and `Range`/206. Errors
carry the `X-Error-Code` headers the real Hub sends (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo). Every request is logged with the body bytes sent, so tests can count what was fetched.
Ranged GETs can be made to fail: `fail_ranges` (statuses to answer, one request each) and `cut_ranges`
(that many bodies stop halfway and the connection closes).
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


@dataclass(frozen=True)
class StoredFile:
    """A file of a commit, served from disk so checkpoints of any size can be pushed."""

    path: Path
    size: int
    sha256: str
    blob_id: str

    @classmethod
    def of(cls, path: Path) -> StoredFile:
        sha256, git = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % path.stat().st_size)
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                sha256.update(chunk)
                git.update(chunk)
        return cls(path, path.stat().st_size, sha256.hexdigest(), git.hexdigest())


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, StoredFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # private: only this token may read it
    gated: bool = False  # gated: metadata is public, files need `token`


class FakeHub:
    def __init__(self):
        self.repos: dict[str, FakeRepo] = {}
        self.log: list[LoggedRequest] = []
        self.stall_seconds = 0.0  # answer every request this late (timeouts)
        self.ignore_ranges = False
        self.fail_ranges: list[int] = []  # the next ranged GETs answer these statuses, one each (e.g. 503)
        self.cut_ranges = 0  # this many next ranged GETs send half their body, then drop the connection
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
        files = {
            path.relative_to(folder).as_posix(): StoredFile.of(path)
            for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        }
        digest = hashlib.sha1(repr(sorted((name, f.sha256) for name, f in files.items())).encode())
        digest.update(f"{repo_id}:{len(repo.commits)}".encode())
        commit = digest.hexdigest()
        repo.commits[commit] = files
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

    def next_range_fault(self) -> int | str | None:
        """The injected failure for the ranged GET being answered: a status, "cut", or None."""
        with self._lock:
            if self.fail_ranges:
                return self.fail_ranges.pop(0)
            if self.cut_ranges:
                self.cut_ranges -= 1
                return "cut"
            return None


def _sibling(name: str, stored: StoredFile) -> dict:
    entry = {"rfilename": name, "size": stored.size, "blobId": stored.blob_id}
    if name.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"sha256": stored.sha256, "size": stored.size, "pointerSize": 134}
    return entry


def _etag(name: str, stored: StoredFile) -> str:
    return stored.sha256 if name.endswith(LFS_SUFFIXES) else stored.blob_id


@dataclass(frozen=True)
class _Body:
    """Bytes [start, end) of a stored file (or literal bytes), written in chunks."""

    stored: StoredFile | None
    start: int
    end: int
    literal: bytes = b""
    cut: bool = False  # send only the first half, then drop the connection

    @property
    def sent(self) -> int:
        return self.length // 2 if self.cut else self.length

    @classmethod
    def of_bytes(cls, data: bytes) -> _Body:
        return cls(None, 0, len(data), data)

    @property
    def length(self) -> int:
        return self.end - self.start

    def write_to(self, stream) -> None:
        if self.stored is None:
            stream.write(self.literal)
            return
        with open(self.stored.path, "rb") as handle:
            handle.seek(self.start)
            remaining = self.sent
            while remaining:
                chunk = handle.read(min(remaining, 1 << 22))
                stream.write(chunk)
                remaining -= len(chunk)


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
            if isinstance(body, bytes):
                body = _Body.of_bytes(body)
            sent = 0 if head else body.sent
            hub.record(
                LoggedRequest(
                    self.command, path, status, self.headers.get("Range"), sent, self.headers.get("Authorization")
                )
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(body.length))
            self.end_headers()
            if not head:
                try:
                    body.write_to(self.wfile)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if body.cut:
                    self.close_connection = True

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
            for name, stored in repo.commits[commit].items():
                entry = {"type": "file", "path": name, "size": stored.size, "oid": stored.blob_id}
                if name.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": 134}
                entries.append(entry)
            return 200, {"Content-Type": "application/json"}, json.dumps(entries).encode()

        def _resolve(self, repo_id: str, revision: str, filename: str):
            repo = self._repo(repo_id, files_access=True)
            commit = self._commit(repo_id, repo, revision)
            stored = repo.commits[commit].get(filename)
            if stored is None:
                raise _Refusal(404, "EntryNotFound", f"{filename} does not exist", commit=commit)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{_etag(filename, stored)}"', "Accept-Ranges": "bytes"}
            requested = self.headers.get("Range")
            if requested and not hub.ignore_ranges and (match := re.fullmatch(r"bytes=(\d+)-(\d*)", requested)):
                start = int(match[1])
                end = min(int(match[2]) if match[2] else stored.size - 1, stored.size - 1)
                fault = hub.next_range_fault()
                if isinstance(fault, int):
                    raise _Refusal(fault, None, "injected failure")
                headers["Content-Range"] = f"bytes {start}-{end}/{stored.size}"
                return 206, headers, _Body(stored, start, end + 1, cut=fault == "cut")
            return 200, headers, _Body(stored, 0, stored.size)

    return Handler
