"""What the Hub stand-in knows: repos of each type, their commits and refs, uploaded blobs, and who may do what.

No HTTP here: `server.py` reads requests, calls these, and turns a `Refusal` into the error answer
the real Hub gives (status, `X-Error-Code`, `X-Error-Message`).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO_TYPES = ("model", "dataset", "space")
# How each type is spelled in URLs: /api/{type}s/..., /{prefix}{repo}/resolve/..., /{prefix}{repo}.git/...
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (".safetensors", ".bin")
# The Hub keeps a file in LFS when its .gitattributes patterns say so (weights, here by suffix), when it
# is binary (a NUL byte in its first 512 bytes), or when it is over 10 MB.
REGULAR_FILE_LIMIT = 10 * 2**20
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


class Refusal(Exception):
    """The Hub's answer instead of the request's: status, X-Error-Code, message, and extra JSON fields."""

    def __init__(self, status: int, code: str | None, message: str = "", commit: str | None = None, **extra):
        super().__init__(message or code or str(status))
        self.status, self.code, self.message, self.commit, self.extra = status, code, message, commit, extra


@dataclass(frozen=True)
class StoredFile:
    """A file of a commit, served from disk so checkpoints of any size can be pushed."""

    path: Path
    size: int
    sha256: str
    blob_id: str  # git's blob id of the content (for an LFS file, the Hub lists the pointer's; any unique id serves)
    lfs: bool

    @classmethod
    def of(cls, path: Path, lfs: bool | None = None) -> StoredFile:
        size = path.stat().st_size
        sha256, git = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
        with open(path, "rb") as handle:
            sample = handle.peek(512)[:512]
            while chunk := handle.read(1 << 24):
                sha256.update(chunk)
                git.update(chunk)
        if lfs is None:
            lfs = stored_in_lfs(path.name, size, sample)
        return cls(path, size, sha256.hexdigest(), git.hexdigest(), lfs)


def stored_in_lfs(name: str, size: int, sample: bytes) -> bool:
    return name.endswith(LFS_SUFFIXES) or size > REGULAR_FILE_LIMIT or b"\0" in sample


@dataclass
class FakeRepo:
    repo_type: str = "model"
    commits: dict[str, dict[str, StoredFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # a token that may read it (private or gated) besides the namespace's writers
    gated: bool = False  # gated: metadata is public, files need access
    private: bool = False

    @property
    def is_private(self) -> bool:
        return self.private or (self.token is not None and not self.gated)

    def resolve(self, revision: str) -> str:
        commit = self.refs.get(revision) or (revision if revision in self.commits else None)
        if commit is None:
            raise Refusal(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def add_commit(self, repo_id: str, branch: str, files: dict[str, StoredFile]) -> str:
        """Record `files` as the new head of `branch`; returns the commit's id."""
        digest = hashlib.sha1(repr(sorted((name, f.sha256) for name, f in files.items())).encode())
        digest.update(f"{self.repo_type}:{repo_id}:{len(self.commits)}".encode())
        commit = digest.hexdigest()
        self.commits[commit] = dict(files)
        self.refs[branch] = commit
        return commit


class HubState:
    """Repos by type (the Hub keeps each type in its own namespace), tokens, and the blobs pushed so far."""

    def __init__(self):
        self.repos: dict[str, dict[str, FakeRepo]] = {repo_type: {} for repo_type in REPO_TYPES}
        self.writers: dict[str, set[str]] = {}  # token -> namespaces it may create repos in and push to
        self._storage = tempfile.TemporaryDirectory(prefix="csulora-fake-hub-")
        self.blob_dir = Path(self._storage.name)
        # (repo type, repo id) -> {sha256: object}: like the Hub's, a repo's LFS store holds what was pushed to it
        self.lfs_objects: dict[tuple[str, str], dict[str, StoredFile]] = {}
        self.upload_tickets: dict[str, tuple[str, str, str, int]] = {}  # URL ticket -> (type, repo, sha256, size)

    def close(self) -> None:
        self._storage.cleanup()

    # Tokens
    def identify(self, authorization: str | None) -> str | None:
        """The token of a request, or None; an unknown token is refused as the Hub refuses it."""
        if authorization is None:
            return None
        token = authorization.removeprefix("Bearer ")
        known = set(self.writers) | {r.token for repos in self.repos.values() for r in repos.values() if r.token}
        if token not in known:
            raise Refusal(401, None, "Invalid credentials in Authorization header")
        return token

    def can_write(self, repo_id: str, token: str | None) -> bool:
        return token is not None and repo_id.split("/")[0] in self.writers.get(token, set())

    def can_read_files(self, repo_id: str, repo: FakeRepo, token: str | None) -> bool:
        restricted = repo.is_private or repo.gated
        return not restricted or (token is not None and token == repo.token) or self.can_write(repo_id, token)

    # Looking repos up, as the Hub answers for each kind of access
    def readable(self, repo_type: str, repo_id: str, token: str | None, files: bool) -> FakeRepo:
        repo = self.repos[repo_type].get(repo_id)
        if repo is None:
            raise Refusal(404, "RepoNotFound", "Repository not found")
        if self.can_read_files(repo_id, repo, token):
            return repo
        if repo.is_private:
            raise Refusal(401, "RepoNotFound", "Repository not found")  # what the Hub says for private repos
        if files:
            raise Refusal(403, "GatedRepo", "Access to this model is restricted")
        return repo

    def writable(self, repo_type: str, repo_id: str, token: str | None) -> FakeRepo:
        repo = self.readable(repo_type, repo_id, token, files=False)
        if token is None:
            raise Refusal(401, None, "You must be authenticated to write to this repo")
        if not self.can_write(repo_id, token):
            raise Refusal(403, None, f"You don't have write access to {repo_id}")
        return repo

    # Blobs
    def lfs_store(self, repo_type: str, repo_id: str) -> dict[str, StoredFile]:
        return self.lfs_objects.setdefault((repo_type, repo_id), {})

    def store_bytes(self, data: bytes) -> StoredFile:
        """A regular file's content, kept under its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blob_dir / sha256
        if not path.exists():
            path.write_bytes(data)
        return StoredFile.of(path, lfs=False)
