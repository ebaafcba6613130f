"""Moving a Hub file's bytes: whole files through huggingface_hub into the HF cache, or byte ranges.

Whole files go through `hf_hub_download` (resumable, size-checked, into the cache other tools share);
a byte range is streamed into one buffer, since huggingface_hub has no ranged download of its own.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import torch
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff, httpx
from huggingface_hub.utils import tqdm as hf_tqdm

from ... import __version__
from ...events import Advance, Events
from .errors import HubError, hub_errors
from .snapshots import HubSnapshot


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
    """Bytes [start, end) of a file as a uint8 tensor, streamed into one buffer.

    huggingface_hub's `http_stream_backoff` retries (as `http_backoff` does) until a response starts.
    `advance(bytes)` reports progress to a task the caller started for a batch of ranges.
    """
    return read_range_and_size(snapshot, filename, start, end, token, advance)[0]


def read_range_and_size(
    snapshot: HubSnapshot, filename: str, start: int, end: int, token: str | None, advance: Advance | None = None
) -> tuple[torch.Tensor, int | None]:
    """`read_range`, and the file's whole size as the answer's `Content-Range` gives it (None if it does not)."""
    where = snapshot.where(filename)
    buffer = torch.empty(end - start, dtype=torch.uint8)
    url = hf_hub_url(snapshot.ref.repo_id, filename, revision=snapshot.commit)
    filled, file_size = 0, None
    # Offline, the session refuses the request before sending it: hub_errors says why.
    with hub_errors(where):
        while filled < end - start:
            received, dropped, total = _stream_into(buffer[filled:], url, start + filled, end, token, advance)
            filled += received
            file_size = total if total is not None else file_size
            # A body cut short resumes from the bytes received: http_stream_backoff retries only before a body.
            if not received:
                raise dropped or HubError("the server's answer ended before the byte range did", where=where)
    return buffer, file_size


def remote_size(snapshot: HubSnapshot, filename: str, token: str | None) -> int:
    """A file's size as the Hub's HEAD answer gives it (`X-Linked-Size`, else `Content-Length`)."""
    where = snapshot.where(filename)
    url = hf_hub_url(snapshot.ref.repo_id, filename, revision=snapshot.commit)
    with hub_errors(where):
        metadata = get_hf_file_metadata(url, token=token, library_name="csulora", library_version=__version__)
    if metadata.size is None:
        raise HubError("neither the file listing nor the server's answers give this file's size", where=where)
    return metadata.size


def _stream_into(
    into: torch.Tensor, url: str, start: int, end: int, token: str | None, advance: Advance | None
) -> tuple[int, Exception | None, int | None]:
    """Bytes [start, end) streamed into `into`: how many arrived, the error that cut them short if any, and
    the file's size from `Content-Range: bytes a-b/SIZE` (None when the server gives `*` or nothing)."""
    view = into.numpy()
    headers = build_hf_headers(token=token, library_name="csulora", library_version=__version__)
    headers["Range"] = f"bytes={start}-{end - 1}"
    headers["Accept-Encoding"] = "identity"  # a compressed body would not be the stored bytes
    filled = 0
    with http_stream_backoff("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
        hf_raise_for_status(response)
        if response.status_code != 206:
            # A server that ignores Range would send the whole file for every tensor.
            raise HubError(
                f"the server ignored the byte range (HTTP {response.status_code})",
                where=url.split("?")[0],
                hint="use {fetch} shards",
            )
        total = _content_range_total(response.headers.get("Content-Range"))
        try:
            for chunk in response.iter_bytes():
                take = min(len(chunk), len(view) - filled)
                view[filled : filled + take] = memoryview(chunk)[:take]
                filled += take
                if advance is not None:
                    advance(take)
        except httpx.TransportError as error:
            # Returned, not raised: raised here, http_stream_backoff would send the request again, then fail.
            return filled, error, total
    return filled, None, total


def _content_range_total(content_range: str | None) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+[^/]*/(\d+)\s*", content_range or "")
    return int(match[1]) if match else None


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
