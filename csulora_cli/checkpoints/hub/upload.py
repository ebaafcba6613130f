"""Pushing a finished folder to a Hub repo as one commit, making the repo and the branch when missing.

Nothing here knows what the folder holds (an adapter, a subspace): the caller pushes only a folder it
has finished, and a folder still being written (an atomic-write temporary) is refused. The bytes move
through huggingface_hub (LFS or Xet, as the client and the Hub agree); failures become one-line
`HubError`s naming the repo (`errors.push_errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import (
    DEFAULT_IGNORE_PATTERNS,
    are_progress_bars_disabled,
    disable_progress_bars,
    enable_progress_bars,
    filter_repo_objects,
    get_token,
    validate_repo_id,
)

from ... import __version__
from ...atomic import TEMP_PREFIX
from ...errors import CsuloraError, UsageError
from .errors import HubError, push_errors
from .snapshots import COMMIT

PUSH_REPO_TYPES = ("model", "dataset")
# atomic.py's temporaries: a hidden sibling folder (`atomic_folder`) and a hidden file (`write_atomically`).
UNFINISHED_PREFIXES = (TEMP_PREFIX, ".tmp-")
# What the Hub writes into a new repo itself: never deleted as a stale file of an earlier push.
KEPT_IN_REPO = frozenset({".gitattributes"})


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    commit: str  # the branch's head after the push: a new commit, or the old head when nothing changed
    url: str  # that commit's page on the Hub
    unchanged: bool = False  # the branch held exactly the folder already: no commit was made


@dataclass(frozen=True)
class PushTarget:
    repo_id: str
    repo_type: str
    revision: str  # a branch

    @property
    def label(self) -> str:
        prefix = "" if self.repo_type == "model" else constants.REPO_TYPES_URL_PREFIXES[self.repo_type]
        return f"{prefix}{self.repo_id}@{self.revision}"


def push_folder(
    local_dir: Path,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str,
    api: HfApi | None = None,
) -> PushResult:
    """Push every file of `local_dir` to `revision` (default main) of `repo_id` in one commit.

    The repo is created when missing (`private` applies only then), and so is the branch, from main.
    The branch then holds exactly the folder: files an earlier push left that the folder no longer has
    are deleted in the same commit (`.gitattributes`, the Hub's own, stays), so a repo never mixes the
    files of two runs. `token` None means huggingface_hub's own lookup (HF_TOKEN, then `hf auth login`).
    `api` is the run's client (`HubClient.api`, made with the run's token, which `token` then leaves be);
    None makes one for this push.
    """
    target = push_target(repo_id, repo_type, revision)
    if not commit_message.strip():
        raise UsageError("a commit message is needed", parameter="commit_message")
    files = files_to_push(Path(local_dir))
    if api is None:
        api = new_api(token)
    token_given = api.token is not None or get_token() is not None
    with push_errors(target.label, stage="setup", token_given=token_given):
        _ensure_repo(api, target, private)
        if target.revision != constants.DEFAULT_REVISION:
            api.create_branch(target.repo_id, branch=target.revision, repo_type=target.repo_type, exist_ok=True)
    additions = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files]
    repo_args = {"repo_id": target.repo_id, "repo_type": target.repo_type, "revision": target.revision}
    with push_errors(target.label, stage="setup", token_given=token_given):
        present = api.list_repo_files(**repo_args)
    kept = {name for name, _ in files} | KEPT_IN_REPO
    deletions = [CommitOperationDelete(path_in_repo=name) for name in sorted(set(present) - kept)]
    # Uploads first, then the commit: a dropped connection before the commit request leaves no commit.
    with push_errors(target.label, stage="upload", token_given=token_given), _without_upload_bars():
        api.preupload_lfs_files(additions=additions, **repo_args)
    with push_errors(target.label, stage="commit", token_given=token_given), _noticing_no_change() as no_change:
        info = api.create_commit(operations=[*additions, *deletions], commit_message=commit_message, **repo_args)
    return PushResult(target.repo_id, info.oid, info.commit_url, unchanged=bool(no_change))


class _NoChangeFilter(logging.Filter):
    """Drops huggingface_hub's own unprefixed warning of a commit it skipped (nothing changed), and notes it:
    csulora says so in its own words. Every other record passes only at the level the logger had."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level
        self.seen: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("No files have been modified since last commit"):
            self.seen.append(record.getMessage())
            return False
        return record.levelno >= self.level


@contextmanager
def _noticing_no_change() -> Iterator[list[str]]:
    """The skipped commit's warning is noticed even where huggingface_hub's logs are silenced (the error
    boundary's default): the logger lets warnings through to the filter meanwhile, which keeps the rest
    at the level it had."""
    logger = logging.getLogger("huggingface_hub.hf_api")
    no_change = _NoChangeFilter(logger.getEffectiveLevel())
    level = logger.level
    logger.addFilter(no_change)
    logger.setLevel(min(logging.WARNING, no_change.level))
    try:
        yield no_change.seen
    finally:
        logger.setLevel(level)
        logger.removeFilter(no_change)


def new_api(token: str | None) -> HfApi:
    """A huggingface_hub client that names csulora in its requests' user agent."""
    return HfApi(token=token, library_name="csulora", library_version=__version__)


def push_target(repo_id: str, repo_type: str, revision: str | None) -> PushTarget:
    """The repo and branch to push to, checked before any request."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UsageError(f"not a Hub repo id: {repo_id!r} (expected org/name)", parameter="repo_id") from None
    if repo_type not in PUSH_REPO_TYPES:
        raise UsageError(
            f"cannot push to a {repo_type!r} repo; choose one of {', '.join(PUSH_REPO_TYPES)}", parameter="repo_type"
        )
    revision = revision or constants.DEFAULT_REVISION
    if COMMIT.fullmatch(revision):
        raise UsageError(f"{revision} is a commit; a push needs a branch name", parameter="revision")
    return PushTarget(repo_id, repo_type, revision)


def files_to_push(local_dir: Path) -> list[tuple[str, Path]]:
    """(path in repo, local path) of each file, sorted; refuses a folder that a run is still writing."""
    if local_dir.absolute().name.startswith(TEMP_PREFIX):
        raise CsuloraError(
            "this is the temporary folder of a run that did not finish; push the finished folder", where=str(local_dir)
        )
    if not local_dir.is_dir():
        raise CsuloraError("the folder to push does not exist", where=str(local_dir))
    listed = {path.relative_to(local_dir).as_posix(): path for path in sorted(local_dir.rglob("*")) if path.is_file()}
    for name in listed:
        if any(part.startswith(UNFINISHED_PREFIXES) for part in name.split("/")):
            raise CsuloraError(
                f"holds {name}, a file still being written; push once the run writing it has finished",
                where=str(local_dir),
            )
    # The same files huggingface_hub's upload_folder leaves out: .git and its own cache folders.
    names = list(filter_repo_objects(listed, ignore_patterns=DEFAULT_IGNORE_PATTERNS))
    if not names:
        raise CsuloraError("the folder to push holds no files", where=str(local_dir))
    return [(name, listed[name]) for name in names]


def _ensure_repo(api: HfApi, target: PushTarget, private: bool | None) -> None:
    if api.repo_exists(target.repo_id, repo_type=target.repo_type):
        return
    # The Hub keeps each repo type in its own namespace, so creating would succeed and leave the user's
    # work split between two repos of one name: refuse instead, naming the type it has.
    for other in PUSH_REPO_TYPES:
        if other != target.repo_type and api.repo_exists(target.repo_id, repo_type=other):
            raise HubError(
                f"{target.repo_id} is a {other} repo, not a {target.repo_type} repo",
                where=target.label,
                hint=f"pass {{repo_type}} {other}, or another name",
            )
    api.create_repo(target.repo_id, repo_type=target.repo_type, private=private, exist_ok=True)


@contextmanager
def _without_upload_bars() -> Iterator[None]:
    """huggingface_hub draws a bar per uploaded file on stderr, whatever the terminal; csulora's output
    keeps stderr to warnings and errors (its own progress only on a terminal). HF_HUB_DISABLE_PROGRESS_BARS=0
    asks for the bars, and gets them."""
    if are_progress_bars_disabled() or constants.HF_HUB_DISABLE_PROGRESS_BARS is False:
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()
