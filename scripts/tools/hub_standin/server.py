"""A local HTTP server speaking the Hugging Face Hub routes that `huggingface_hub` uses, for tests.

Reads, for models and datasets: `GET /api/{type}s/{repo}[/revision/{rev}]` (repo info, with per-file
size, blob id and LFS sha256), `GET /api/{type}s/{repo}/tree/{rev}`, `GET /api/{type}s/{repo}/refs`, and
`HEAD`/`GET /[datasets/]{repo}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag`, `Content-Length` and
`Range`/206. Writes (`writes.py`): create a repo or branch, README metadata validation, preupload, the LFS
batch API, its upload URLs and verify, and the NDJSON commit. Errors carry the `X-Error-Code` headers the real Hub sends
(RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo). Every request is logged with the body bytes
sent and received, so tests can count what moved.

Knobs for failures: `stall_seconds` (answer late), `ignore_ranges`, `fail_ranges` (statuses for the next
ranged GETs), `cut_ranges` (that many ranged bodies stop halfway and the connection closes),
`cut_uploads` (that many LFS uploads are read halfway, then the connection drops without an answer),
`cut_commits` (that many commit requests are read, then the connection drops before committing), and
`omit_listing_sizes` (repo info lists files without sizes or LFS records, as some mirrors do).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from . import writes
from .state import FakeRepo, HubState, Refusal, StoredFile

__all__ = ["FakeHub", "FakeRepo", "LoggedRequest", "StoredFile"]

_TYPE = r"(models|datasets|spaces)"  # /api/{type}s/...
_PREFIX = r"(?:(datasets|spaces)/)?"  # /{prefix}{repo}/resolve/... and /{prefix}{repo}.git/...
_REPO = r"([^/]+/[^/]+)"
_REV = r"([^/]+)"  # revisions arrive quoted ("feat%2Fx"): matched before unquoting


@dataclass
class LoggedRequest:
    method: str
    path: str
    status: int  # 0: the connection was dropped without an answer
    range: str | None
    body_bytes: int
    authorization: str | None
    received_bytes: int = 0


class _Dropped(Exception):
    """The connection is closed without an answer (an injected fault)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up (a cut body it stopped reading, a timeout) is part of the tests' faults; in
        # process, socketserver's traceback for it would land in the output of the command under test.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeHub:
    """The stand-in, served from a thread of this process on 127.0.0.1 (`port` 0: any free port)."""

    def __init__(self, port: int = 0):
        self.state = HubState()
        self.log: list[LoggedRequest] = []
        self.stall_seconds = 0.0  # answer every request this late (timeouts)
        self.ignore_ranges = False
        self.fail_ranges: list[int] = []  # the next ranged GETs answer these statuses, one each (e.g. 503)
        self.cut_ranges = 0  # this many next ranged GETs send half their body, then drop the connection
        self.cut_uploads = 0  # this many next LFS uploads are read halfway, then the connection drops
        self.cut_commits = 0  # this many next commits are read whole, then the connection drops, nothing committed
        self.omit_listing_sizes = False
        self._lock = threading.RLock()
        self._server = _Server(("127.0.0.1", port), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def repos(self) -> dict[str, FakeRepo]:
        """The model repos by id (`repos_of("dataset")` for the others)."""
        return self.state.repos["model"]

    def repos_of(self, repo_type: str) -> dict[str, FakeRepo]:
        return self.state.repos[repo_type]

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.state.close()

    # Building repos and users
    def push(self, repo_id: str, folder: Path, branch: str = "main", repo_type: str = "model", **access) -> str:
        """Commit every file of `folder` to `branch` of `repo_id` (no HTTP); returns the new commit sha."""
        with self._lock:
            repo = self.state.repos[repo_type].setdefault(repo_id, FakeRepo(repo_type))
            for name, value in access.items():
                setattr(repo, name, value)
            files = {
                path.relative_to(folder).as_posix(): StoredFile.of(path)
                for path in sorted(folder.rglob("*"))
                if path.is_file() and not path.name.startswith(".")
            }
            return repo.add_commit(repo_id, branch, files)

    def allow_writes(self, token: str, *namespaces: str) -> None:
        """`token` may create repos in, and push to, `namespaces` (the first is its user's own)."""
        with self._lock:
            self.state.writers.setdefault(token, set()).update(namespaces)

    # What was fetched and pushed
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

    def take_fault(self, knob: str) -> bool:
        """Whether the request being answered is to fail by `knob` (`cut_uploads`, `cut_commits`); counts it."""
        with self._lock:
            if getattr(self, knob) > 0:
                setattr(self, knob, getattr(self, knob) - 1)
                return True
            return False


def _sibling(name: str, stored: StoredFile, with_sizes: bool) -> dict:
    if not with_sizes:
        return {"rfilename": name}
    entry = {"rfilename": name, "size": stored.size, "blobId": stored.blob_id}
    if stored.lfs:
        entry["lfs"] = {"sha256": stored.sha256, "size": stored.size, "pointerSize": 134}
    return entry


def _etag(stored: StoredFile) -> str:
    return stored.sha256 if stored.lfs else stored.blob_id


def _json(value) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()


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


def _handler_for(hub: FakeHub):
    state = hub.state

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_HEAD(self):
            self._answer(head=True)

        def do_GET(self):
            self._answer(head=False)

        def do_POST(self):
            self._answer(head=False)

        def do_PUT(self):
            self._answer(head=False)

        def _answer(self, head: bool):
            if hub.stall_seconds:
                time.sleep(hub.stall_seconds)
            self.received = 0
            raw_path = urlsplit(self.path).path
            try:
                status, headers, body = self._route(raw_path)
            except _Dropped:
                self._log(raw_path, 0, 0)
                self.close_connection = True  # unread request bytes make the close a reset, as a dropped link does
                return
            except Refusal as refusal:
                status, headers, body = self._refusal(refusal)
            if isinstance(body, bytes):
                body = _Body.of_bytes(body)
            self._log(raw_path, status, 0 if head else body.sent)
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

        def _log(self, raw_path: str, status: int, sent: int) -> None:
            authorization = self.headers.get("Authorization")
            entry = LoggedRequest(
                self.command, unquote(raw_path), status, self.headers.get("Range"), sent, authorization, self.received
            )
            hub.record(entry)

        @staticmethod
        def _refusal(refusal: Refusal):
            body = json.dumps({"error": refusal.message or refusal.code, **refusal.extra}).encode()
            headers = {"Content-Type": "application/json"}
            if refusal.code:
                headers["X-Error-Code"] = refusal.code
            if refusal.message:
                headers["X-Error-Message"] = refusal.message
            if refusal.commit:
                headers["X-Repo-Commit"] = refusal.commit
            return refusal.status, headers, body

        # Routes
        def _route(self, path: str):
            method = self.command if self.command != "HEAD" else "GET"
            for route_method, pattern, answer in self._routes():
                if route_method == method and (match := re.fullmatch(pattern, path)):
                    groups = [unquote(group) if group is not None else None for group in match.groups()]
                    return answer(*groups)
            raise Refusal(404, None, "no such route")

        def _routes(self):
            return (
                ("GET", rf"/api/{_TYPE}/{_REPO}(?:/revision/{_REV})?", self._info),
                ("GET", rf"/api/{_TYPE}/{_REPO}/tree/{_REV}(?:/(.*))?", self._tree),
                ("GET", rf"/api/{_TYPE}/{_REPO}/refs", self._refs),
                ("GET", rf"/{_PREFIX}{_REPO}/resolve/{_REV}/(.+)", self._resolve),
                ("POST", r"/api/repos/create", self._create_repo),
                ("POST", r"/api/validate-yaml", lambda: _json(writes.validate_yaml(self._request_json()))),
                ("POST", rf"/api/{_TYPE}/{_REPO}/branch/{_REV}", self._create_branch),
                ("POST", rf"/api/{_TYPE}/{_REPO}/preupload/{_REV}", self._preupload),
                ("POST", rf"/{_PREFIX}{_REPO}\.git/info/lfs/objects/batch", self._lfs_batch),
                ("POST", rf"/{_PREFIX}{_REPO}\.git/info/lfs/objects/verify", self._lfs_verify),
                ("PUT", r"/lfs-uploads/([0-9a-f]{64})", self._lfs_upload),
                ("POST", rf"/api/{_TYPE}/{_REPO}/commit/{_REV}", self._commit),
            )

        def _token(self) -> str | None:
            return state.identify(self.headers.get("Authorization"))

        # Reads
        def _info(self, api_type: str, repo_id: str, revision: str | None):
            repo_type = api_type[:-1]
            with hub._lock:
                repo = state.readable(repo_type, repo_id, self._token(), files=False)
                commit = repo.resolve(revision or "main")
                files = repo.commits[commit]
            return _json(
                {
                    "id": repo_id,
                    "sha": commit,
                    "private": repo.is_private,
                    "gated": "manual" if repo.gated else False,
                    "siblings": [_sibling(name, data, not hub.omit_listing_sizes) for name, data in files.items()],
                }
            )

        def _tree(self, api_type: str, repo_id: str, revision: str, folder: str | None):
            with hub._lock:
                repo = state.readable(api_type[:-1], repo_id, self._token(), files=False)
                files = repo.commits[repo.resolve(revision)]
            entries = []
            for name, stored in files.items():
                if folder and not name.startswith(folder.rstrip("/") + "/"):
                    continue
                entry = {"type": "file", "path": name, "size": stored.size, "oid": stored.blob_id}
                if stored.lfs:
                    entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": 134}
                entries.append(entry)
            return _json(entries)

        def _refs(self, api_type: str, repo_id: str):
            with hub._lock:
                repo = state.readable(api_type[:-1], repo_id, self._token(), files=False)
                branches = [
                    {"name": name, "ref": f"refs/heads/{name}", "targetCommit": commit}
                    for name, commit in repo.refs.items()
                ]
            return _json({"branches": branches, "tags": [], "converts": []})

        def _resolve(self, prefix: str | None, repo_id: str, revision: str, filename: str):
            repo_type = (prefix or "models")[:-1]
            with hub._lock:
                repo = state.readable(repo_type, repo_id, self._token(), files=True)
                commit = repo.resolve(revision)
                stored = repo.commits[commit].get(filename)
            if stored is None:
                raise Refusal(404, "EntryNotFound", f"{filename} does not exist", commit=commit)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{_etag(stored)}"', "Accept-Ranges": "bytes"}
            if stored.lfs:  # what the Hub adds for LFS files, whose body comes from its storage
                headers |= {"X-Linked-Size": str(stored.size), "X-Linked-Etag": f'"{stored.sha256}"'}
            requested = self.headers.get("Range")
            if requested and not hub.ignore_ranges and (match := re.fullmatch(r"bytes=(\d+)-(\d*)", requested)):
                start = int(match[1])
                end = min(int(match[2]) if match[2] else stored.size - 1, stored.size - 1)
                fault = hub.next_range_fault()
                if isinstance(fault, int):
                    raise Refusal(fault, None, "injected failure")
                headers["Content-Range"] = f"bytes {start}-{end}/{stored.size}"
                return 206, headers, _Body(stored, start, end + 1, cut=fault == "cut")
            return 200, headers, _Body(stored, 0, stored.size)

        # Writes
        def _request_json(self):
            try:
                return json.loads(self._read_body() or b"{}")
            except ValueError:
                raise Refusal(400, None, "Invalid JSON body") from None

        def _create_repo(self):
            request = self._request_json()
            with hub._lock:
                return _json(writes.create_repo(state, hub.url, self._token(), request))

        def _create_branch(self, api_type: str, repo_id: str, branch: str):
            request = self._request_json()
            with hub._lock:
                return _json(writes.create_branch(state, api_type[:-1], repo_id, branch, self._token(), request))

        def _preupload(self, api_type: str, repo_id: str, revision: str):
            request = self._request_json()
            with hub._lock:
                return _json(writes.preupload(state, api_type[:-1], repo_id, revision, self._token(), request))

        def _lfs_batch(self, prefix: str | None, repo_id: str):
            request = self._request_json()
            repo_type = (prefix or "models")[:-1]
            with hub._lock:
                answer = writes.lfs_batch(state, hub.url, repo_type, repo_id, self._token(), request)
            return 200, {"Content-Type": "application/vnd.git-lfs+json"}, json.dumps(answer).encode()

        def _lfs_verify(self, prefix: str | None, repo_id: str):
            request = self._request_json()
            with hub._lock:
                return _json(writes.lfs_verify(state, (prefix or "models")[:-1], repo_id, self._token(), request))

        def _lfs_upload(self, oid: str):
            ticket = parse_qs(urlsplit(self.path).query).get("ticket", [None])[0]
            with hub._lock:
                size = writes.upload_size(state, oid, ticket)
            limit = size // 2 if hub.take_fault("cut_uploads") else None
            handle, name = tempfile.mkstemp(dir=state.blob_dir, prefix=".upload-")
            received = Path(name)
            with open(handle, "wb") as file:
                for chunk in self._body_chunks(limit):
                    file.write(chunk)
            if limit is not None:
                received.unlink()
                raise _Dropped
            with hub._lock:
                writes.accept_upload(state, oid, ticket, received)
            return 200, {}, b""

        def _commit(self, api_type: str, repo_id: str, revision: str):
            body = self._read_body()
            if hub.take_fault("cut_commits"):
                raise _Dropped
            try:
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            except ValueError:
                raise Refusal(400, None, "Invalid NDJSON body") from None
            with hub._lock:
                token = self._token()
                return _json(writes.commit(state, hub.url, api_type[:-1], repo_id, revision, token, lines))

        # Request bodies
        def _read_body(self) -> bytes:
            return b"".join(self._body_chunks(None))

        def _body_chunks(self, limit: int | None):
            """The request body (Content-Length or chunked), stopping after `limit` bytes when given."""
            chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
            remaining = None if chunked else int(self.headers.get("Content-Length") or 0)
            while limit is None or self.received < limit:
                if chunked:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return
                    chunk = self.rfile.read(size)
                    self.rfile.readline()
                else:
                    if not remaining:
                        return
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                if limit is not None:
                    chunk = chunk[: limit - self.received]
                self.received += len(chunk)
                yield chunk

    return Handler
