"""Moving a Hub file's bytes: whole files through huggingface_hub into the HF cache, or byte ranges.

Whole files go through `hf_hub_download` (resumable, size-checked, into the cache other tools share);
a byte range is streamed into one buffer, since huggingface_hub has no ranged download of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from huggingface_hub import constants, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
from huggingface_hub.utils import tqdm as hf_tqdm

from ... import __version__
from ...events import Advance, Events
from .errors import HubError, hub_errors
from .snapshots import HubSnapshot

# Transient failures while streaming a byte range are retried this many times, resuming where they stopped.
RANGE_RETRIES = 3
CHUNK_BYTES = 1 << 20


def cached_file(snapshot: HubSnapshot, filename: str) -> Path | None:
    """The file in the standard HF cache at this commit, when some tool has downloaded it."""
    found = try_to_load_from_cache(snapshot.ref.repo_id, filename, revision=snapshot.commit)
    return Path(found) if isinstance(found, str) else None


def download(snapshot: HubSnapshot, filename: str, token: str | None, events: Events) -> Path:
    """A whole file through huggingface_hub (resumable, size-checked, into the HF cache)."""
    # At a commit, huggingface_hub answers from its cache without a request (offline too); offline
    # and missing, it raises what hub_errors turns into the offline message.
    with hub_errors(snapshot.where(filename)):
        path = hf_hub_download(
            snapshot.ref.repo_id,
            filename,
            revision=snapshot.commit,
            token=token,
            library_name="csulora",
            library_version=__version__,
            tqdm_class=partial(_DownloadBar, events, f"downloading {filename}"),
        )
    return Path(path)


def read_range(
    snapshot: HubSnapshot, filename: str, start: int, end: int, token: str | None, advance: Advance | None = None
) -> torch.Tensor:
    """Bytes [start, end) of a file as a uint8 tensor, streamed into one buffer (resumed on transient errors).

    `advance(bytes)` reports progress to a task the caller started for a batch of ranges.
    """
    where = snapshot.where(filename)  # offline, the session refuses the request: hub_errors says why
    buffer = torch.empty(end - start, dtype=torch.uint8)
    view = buffer.numpy()
    url = hf_hub_url(snapshot.ref.repo_id, filename, revision=snapshot.commit)
    filled, attempts = 0, 0
    while filled < end - start:
        headers = build_hf_headers(token=token, library_name="csulora", library_version=__version__)
        headers["Range"] = f"bytes={start + filled}-{end - 1}"
        headers["Accept-Encoding"] = "identity"  # a compressed body would not be the stored bytes
        try:
            with hub_errors(where), _stream(url, headers) as response:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    take = min(len(chunk), end - start - filled)
                    view[filled : filled + take] = memoryview(chunk)[:take]
                    filled += take
                    if advance is not None:
                        advance(take)
        except HubError as error:
            attempts += 1
            if not error.transient or attempts > RANGE_RETRIES:
                raise
            time.sleep(min(2**attempts, 8))
    return buffer


@contextmanager
def _stream(url: str, headers: dict[str, str]) -> Iterator:
    with get_session().stream("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
        if response.status_code >= 400:
            response.read()  # the Hub's error headers and body, for hf_raise_for_status's message
        hf_raise_for_status(response)
        if response.status_code != 206:
            # A server that ignores Range would send the whole file for every tensor.
            raise HubError(
                f"the server ignored the byte range (HTTP {response.status_code})",
                where=url.split("?")[0],
                hint="use --fetch shards",
            )
        yield response


class _DownloadBar(hf_tqdm):
    """huggingface_hub's progress bar, silenced and forwarded to csulora's own display.

    A disabled tqdm keeps every method huggingface_hub may call (HTTP and Xet paths alike), so only
    `update` needs to be passed on.
    """

    def __init__(self, events: Events, description: str, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)
        self._forward = events.start(description, kwargs.get("total"), in_bytes=True)
        if kwargs.get("initial"):
            self._forward(kwargs["initial"])

    def update(self, n=1):
        self._forward(n or 0)
        return super().update(n)
