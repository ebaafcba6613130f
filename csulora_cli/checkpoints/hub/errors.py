"""huggingface_hub's and HTTP's exceptions as one-line `HubError`s naming the repo (and file); never the token."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

from huggingface_hub import constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import http_backoff, httpx

from ...errors import CsuloraError
from .refs import endpoint_label

OFFLINE_MISS = "not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
# The HTTP statuses worth another try: those huggingface_hub's `http_backoff` retries (408, 429, 5xx).
TRANSIENT_STATUSES = inspect.signature(http_backoff).parameters["retry_on_status_codes"].default


class HubError(CsuloraError):
    """The Hub (or the local Hugging Face cache standing in for it) cannot give what the run needs."""

    # Set on failures that may pass (timeouts, dropped connections, TRANSIENT_STATUSES): an earlier run's records serve.
    transient = False


@contextmanager
def hub_errors(where: str) -> Iterator[None]:
    """huggingface_hub and HTTP exceptions as one-line HubErrors; anything else passes through."""
    try:
        yield
    except Exception as error:
        mapped = hub_error_of(error, where)
        if mapped is None:
            raise
        raise mapped from None


def hub_error_of(error: Exception, where: str) -> HubError | None:
    """The HubError for a huggingface_hub or HTTP exception met while reading; the most specific cause first."""
    if involves_xet(error):
        return xet_error(error, where)
    if isinstance(error, GatedRepoError):
        return HubError(
            "gated repository: request access on its Hub page, then pass a token that has it",
            where=where,
            hint="{token} or HF_TOKEN",
        )
    if isinstance(error, RepositoryNotFoundError):
        return HubError(
            "repository not found, or private and the token (if any) has no access",
            where=where,
            hint="check the name; for a private repo pass {token} or set HF_TOKEN",
        )
    if isinstance(error, RevisionNotFoundError):
        return HubError("revision not found in this repository", where=where)
    if isinstance(error, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return _unreachable(error.__cause__ or error, where)
    if isinstance(error, EntryNotFoundError):
        return HubError("file not found at this revision", where=where)
    if isinstance(error, HfHubHTTPError):
        status = http_status(error)
        if status == 401:
            return HubError("the Hub refused the token (HTTP 401)", where=where, hint="check {token} or HF_TOKEN")
        failure = HubError(f"the Hub answered HTTP {status}", where=where)
        failure.transient = status in TRANSIENT_STATUSES
        return failure
    if isinstance(error, httpx.TransportError):
        return _unreachable(error, where)
    if isinstance(error, FileMetadataError):
        return HubError(
            "the endpoint answered without a commit or ETag: it does not look like a Hugging Face Hub",
            where=where,
            hint="check HF_ENDPOINT",
        )
    if isinstance(error, OSError):  # a size-check failure after a dropped download, or a full/read-only HF cache
        return HubError(f"download failed: {error.strerror or error}", where=where)
    return None


def involves_xet(error: BaseException) -> bool:
    """Whether the failure came from huggingface_hub's Xet transfer: its frames (`_xet`, `hf_xet`), types or
    messages, anywhere in the chain of causes. Xet errors are plain RuntimeErrors raised from its Rust core."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if "xet" in type(current).__module__.lower() or "xet" in str(current).lower():
            return True
        trace = current.__traceback__
        while trace is not None:
            code = trace.tb_frame.f_code
            if "xet" in code.co_filename.lower() or "xet" in code.co_name.lower():
                return True
            trace = trace.tb_next
        current = current.__cause__ or current.__context__
    return False


def xet_error(error: BaseException, where: str) -> HubError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return HubError(
        f"the Xet transfer failed ({first_line})",
        where=where,
        hint="set HF_HUB_DISABLE_XET=1 to transfer by LFS instead; endpoints that speak only LFS, such as the "
        "Hub stand-in, need it",
    )


def http_status(error: HfHubHTTPError) -> int | None:
    return error.response.status_code if error.response is not None else None


def _unreachable(error: BaseException, where: str) -> HubError:
    endpoint = endpoint_label()
    if isinstance(error, OfflineModeIsEnabled) or constants.is_offline_mode():
        return HubError(OFFLINE_MISS, where=where)
    if isinstance(error, httpx.TimeoutException):
        failure = HubError(
            f"timed out waiting for the Hub at {endpoint}",
            where=where,
            hint="retry, or raise HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT",
        )
    else:
        failure = HubError(
            f"cannot reach the Hub at {endpoint}",
            where=where,
            hint="check the network or HF_ENDPOINT; with HF_HUB_OFFLINE=1 only cached files are used",
        )
    failure.transient = True
    return failure


@contextmanager
def push_errors(where: str, *, stage: str, token_given: bool) -> Iterator[None]:
    """Failures of a push as one-line HubErrors.

    `stage` ("setup", "upload" or "commit") says what a dropped connection leaves behind: nothing before
    the commit request, and possibly a commit after it was sent.
    """
    try:
        yield
    except Exception as raised:
        # huggingface_hub wraps the failure of each LFS upload in a RuntimeError naming the file.
        error = raised.__cause__ if type(raised) is RuntimeError and isinstance(raised.__cause__, Exception) else raised
        if involves_xet(raised):
            raise xet_error(error, where) from None
        mapped = _push_error_of(error, where, stage, token_given) or hub_error_of(error, where)
        if mapped is None:
            raise
        raise mapped from None


def _push_error_of(error: Exception, where: str, stage: str, token_given: bool) -> HubError | None:
    status = http_status(error) if isinstance(error, HfHubHTTPError) else None
    if isinstance(error, OfflineModeIsEnabled):
        return HubError("cannot push while HF_HUB_OFFLINE is set", where=where)
    if isinstance(error, RepositoryNotFoundError) and not isinstance(error, GatedRepoError):
        return HubError(
            "repository not found, or the token (if any) has no access to it",
            where=where,
            hint="check the name; pass {token} with write access or set HF_TOKEN",
        )
    if status == 401 and not token_given:
        return HubError(
            "pushing needs a token with write access (HTTP 401)", where=where, hint="pass {token} or set HF_TOKEN"
        )
    if status == 403:
        return HubError(
            "no write access: the token may not write to this repository or create repos in its namespace (HTTP 403)",
            where=where,
            hint="use a token with write access",
        )
    if isinstance(error, httpx.TransportError) and stage in ("upload", "commit"):
        if stage == "upload":
            failure = HubError("the connection dropped while uploading; nothing was committed", where=where)
        else:
            # create_commit leaves out files whose content the branch already holds, so a second push of the
            # same folder after a commit that did land makes no new commit.
            failure = HubError(
                "the connection dropped while committing; the commit may have been made",
                where=where,
                hint="pushing again is safe: unchanged files make no new commit",
            )
        failure.transient = True
        return failure
    if isinstance(error, ValueError) and stage in ("upload", "commit"):
        # huggingface_hub raises ValueError for LFS batch errors and malformed answers from the Hub.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return HubError(f"the Hub refused the upload: {first_line}", where=where)
    if isinstance(error, OSError) and not isinstance(error, ConnectionError | HfHubHTTPError):
        where = str(error.filename) if error.filename else where
        return HubError(f"cannot read a file to push: {error.strerror or error}", where=where)
    return None
