"""In-process Hub fixtures: the real `huggingface_hub` client pointed at the local stand-in.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import, into `constants`; the tests'
conftest has already imported it offline, so `hub_online` patches those constants for one test, and
gives it an HF cache of its own (the stand-in's commit ids repeat across tests that push the same files).
The stand-in speaks the LFS transfer protocol, not Xet's, so Xet is switched off as well. Also a small
folder to push, and LFS upload retries without their waits.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import huggingface_hub.lfs
import pytest
from huggingface_hub import constants
from huggingface_hub.utils import http_backoff

from scripts.tools.hub_standin.server import FakeHub
from tests.helpers import WRITER


@pytest.fixture
def hub_online(monkeypatch, tmp_path_factory):
    with FakeHub() as server:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


@pytest.fixture
def hub(hub_online):
    """The stand-in where WRITER may push to `org` (test_hub.py has a read-only `hub` of its own)."""
    hub_online.allow_writes(WRITER, "org")
    return hub_online


@pytest.fixture
def folder(tmp_path) -> Path:
    """A small adapter-like folder: an LFS file, JSON and Markdown (regular files), a nested file."""
    root = tmp_path / "to-push"
    (root / "nested").mkdir(parents=True)
    (root / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4096)  # 1 MiB, binary
    (root / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (root / "README.md").write_text("# corrected adapter\n")
    (root / "nested" / "notes.txt").write_text("kept in a subfolder\n")
    return root


@pytest.fixture
def quick_retries(monkeypatch):
    """huggingface_hub's LFS uploads retry dropped connections after 1, 2, 4, 8, 8 s: no waiting here."""
    monkeypatch.setattr(huggingface_hub.lfs, "http_backoff", functools.partial(http_backoff, base_wait_time=0))
