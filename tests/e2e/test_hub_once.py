"""Work a Hub run does once: each ref is resolved once, and one huggingface_hub client serves the resolution,
the downloads and the pushes. Counted on the stand-in's request log, in process (`hub_online` and `hub` in
conftest.py)."""

from __future__ import annotations

import sys

import pytest
from huggingface_hub import HfApi

from tests.helpers import WRITER, assert_ok, run_cli

# huggingface_hub's own look-up of AI agent harnesses for its user agent (at most once a day per HF_HOME):
# not a request csulora makes.
NOT_OURS = "/api/agent-harnesses"


def requests(hub) -> list[tuple[str, str]]:
    """(method, path without query) of every request the stand-in answered, csulora's only."""
    return [(r.method, r.path.split("?")[0]) for r in hub.log if r.path.split("?")[0] != NOT_OURS]


@pytest.fixture
def api_makers(monkeypatch) -> list[str]:
    """The module that made each `HfApi` a run constructs (huggingface_hub makes some of its own inside a commit)."""
    callers = []
    original = HfApi.__init__

    def counting(self, *args, **kwargs):
        callers.append(sys._getframe(1).f_globals.get("__name__", ""))
        original(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "__init__", counting)
    return callers


def test_correct_from_a_subspace_repo_resolves_it_once(hub_online, models, subspace, tmp_path):
    _, _, adapter = models
    commit = hub_online.push("org/subspace", subspace)
    hub_online.clear_log()
    assert_ok(run_cli("correct", adapter, "--subspace", "org/subspace", "--out", tmp_path / "out"))
    # The folder holds the bases of exactly this adapter's modules (conftest.py estimates it with --adapter).
    names = ["subspace.json", *(f"bases/{path.name}" for path in (subspace / "bases").iterdir())]
    files = [(method, f"/org/subspace/resolve/{commit}/{name}") for name in names for method in ("HEAD", "GET")]
    made = requests(hub_online)
    assert made[0] == ("GET", "/api/models/org/subspace/revision/main")
    assert sorted(made[1:]) == sorted(files)


def test_a_push_goes_through_the_runs_one_client(hub, models, subspace, tmp_path, api_makers):
    _, _, adapter = models
    hub.push("org/subspace", subspace)
    hub.clear_log()
    push = ("--push-to-hub", "org/safe", "--token", WRITER)
    assert_ok(run_cli("correct", adapter, "--subspace", "org/subspace", "--out", tmp_path / "out", *push))
    assert [maker for maker in api_makers if maker.startswith("csulora_cli")] == ["csulora_cli.checkpoints.hub.upload"]
    made = requests(hub)
    assert [path for _, path in made if "/revision/" in path] == ["/api/models/org/subspace/revision/main"]
    assert made[-1] == ("POST", "/api/models/org/safe/commit/main")
    assert hub.repos["org/safe"].refs["main"]
