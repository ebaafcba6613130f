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
    """huggingface_hub and HTTP exceptions as one-line HubErrors; the most specific cause first."""
    try:
        yield
    except GatedRepoError:
        raise HubError(
            "gated repository: request access on its Hub page, then pass a token that has it",
            where=where,
            hint="{token} or HF_TOKEN",
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            "repository not found, or private and the token (if any) has no access",
            where=where,
            hint="check the name; for a private repo pass {token} or set HF_TOKEN",
        ) from None
    except RevisionNotFoundError:
        raise HubError("revision not found in this repository", where=where) from None
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as error:
        raise _unreachable(error.__cause__ or error, where) from None
    except EntryNotFoundError:
        raise HubError("file not found at this revision", where=where) from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise HubError(
                "the Hub refused the token (HTTP 401)", where=where, hint="check {token} or HF_TOKEN"
            ) from None
        failure = HubError(f"the Hub answered HTTP {status}", where=where)
        failure.transient = status in TRANSIENT_STATUSES
        raise failure from None
    except httpx.TransportError as error:
        raise _unreachable(error, where) from None
    except FileMetadataError:
        raise HubError(
            "the endpoint answered without a commit or ETag: it does not look like a Hugging Face Hub",
            where=where,
            hint="check HF_ENDPOINT",
        ) from None
    except OSError as error:  # a size-check failure after a dropped download, or a full/read-only HF cache
        raise HubError(f"download failed: {error.strerror or error}", where=where) from None


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
