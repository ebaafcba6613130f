"""`--push-to-hub`: `correct` and `estimate-subspace` push their finished outputs, one commit per repo, and
a failed push keeps the local output whole and says so in one line.

In process, through the real `huggingface_hub` client and the Hub stand-in (`hub_online` in conftest.py);
what was pushed is downloaded back with `snapshot_download`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, snapshot_download

from tests.helpers import RANK, WRITER, assert_ok, assert_one_line_error, files_of, read_report, run_cli


def download(repo_id: str, cache: Path, revision: str = "main") -> tuple[Path, dict[str, bytes]]:
    """The repo's files at `revision`, without the `.gitattributes` every new repo starts with."""
    folder = Path(snapshot_download(repo_id, revision=revision, token=WRITER, cache_dir=cache))
    files = files_of(folder)
    files.pop(".gitattributes")
    return folder, files


def test_correct_pushes_the_finished_output_byte_identical(hub, models, subspace, tmp_path):
    _, _, adapter = models
    out = tmp_path / "safe"
    push = ("--push-to-hub", "org/safe", "--private", "--revision", "run-1", "--token", WRITER)
    document = assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out, *push, "--json")).json()
    pushed = document["adapters"][0]["pushed"]
    repo = hub.repos["org/safe"]
    assert pushed == {"repo_id": "org/safe", "revision": "run-1", "commit": repo.refs["run-1"], "url": pushed["url"]}
    assert pushed["commit"] in pushed["url"] and repo.is_private
    assert len(repo.commits) == 2  # the new repo's .gitattributes, then the output in one commit

    folder, files = download("org/safe", tmp_path / "hf", revision="run-1")
    assert files == files_of(out)
    card = ModelCard.load(folder / "README.md")
    assert "csulora" in card.data.tags and card.data.library_name == "peft"
    # The pushed report is the local one: the push is only in the --json entry, and the digests still hold.
    entry = document["adapters"][0]
    assert read_report(out) == {key: value for key, value in entry.items() if key != "pushed"}
    assert_ok(run_cli("verify", out))


def test_out_dir_with_a_name_template_pushes_one_repo_per_adapter(hub, models, subspace, tmp_path):
    _, _, adapter = models
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        shutil.copytree(adapter, runs / name)
    out = tmp_path / "corrected"
    push = ("--push-to-hub", "org/{name}-safe")
    correct = ("correct", runs / "a", runs / "b", "--subspace", subspace, "--out-dir", out)
    result = assert_ok(run_cli(*correct, *push, env={"HF_TOKEN": WRITER}))
    assert result.stderr == ""  # huggingface_hub's upload bars stay off stderr
    for name in ("a", "b"):
        commit = hub.repos[f"org/{name}-safe"].refs["main"]
        assert f"pushed: {(out / name).resolve()} -> org/{name}-safe@main (commit {commit[:12]})" in result.stdout
        _, files = download(f"org/{name}-safe", tmp_path / "hf" / name)
        assert files == files_of(out / name)


def test_estimate_subspace_pushes_the_folder_with_its_card(hub, models, tmp_path):
    base, aligned, adapter = models
    hub.push("org/base", base)
    hub.push("org/aligned", aligned)
    out = tmp_path / "subspace"
    estimate = ("estimate-subspace", "org/base", "org/aligned", "--adapter", adapter, "--rank", RANK, "--out", out)
    result = run_cli(*estimate, "--push-to-hub", "org/subspace", "--json", env={"HF_TOKEN": WRITER})
    subspace = assert_ok(result).subspace()
    assert subspace["pushed"]["commit"] == hub.repos["org/subspace"].refs["main"]

    folder, files = download("org/subspace", tmp_path / "hf")
    assert files == files_of(out) and "README.md" in files
    card = ModelCard.load(folder / "README.md")
    assert card.data.tags == ["csulora-subspace"] and card.data.base_model == "org/aligned"
    for repo_id in ("org/base", "org/aligned"):
        assert f"`{repo_id}` at commit `{hub.repos[repo_id].refs['main']}`" in card.text
    for module in subspace["modules"]:
        figures = module["subspace"]
        assert f"| `{module['module']}` | {figures['k']} | {RANK} | {figures['captured_energy']:.4f} |" in card.text
    assert (
        "at most 8 basis columns per module" in card.text
        and "csulora correct ADAPTER --subspace org/subspace --out-dir safe" in card.text
    )
    # The card is not a basis: the folder still serves `correct`.
    assert_ok(run_cli("correct", adapter, "--subspace", out, "--dry-run"))


def test_a_subspace_of_local_models_names_their_paths_and_checkpoint_digests(hub, models, tmp_path):
    base, aligned, adapter = models
    out = tmp_path / "subspace"
    push = ("--push-to-hub", "org/subspace", "--revision", "v1", "--energy", "0.5")
    estimate = ("estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", out)
    result = assert_ok(run_cli(*estimate, *push, env={"HF_TOKEN": WRITER}))
    assert f"pushed: {out} -> org/subspace@v1" in result.stdout
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model is None
    assert f"`{aligned.resolve()}` (checkpoint files `sha256:" in card.text
    assert "holding 0.5 of each module's" in card.text
    assert "--subspace org/subspace@v1 --out-dir safe" in card.text
    _, files = download("org/subspace", tmp_path / "hf", revision="v1")
    assert files == files_of(out)


@pytest.mark.parametrize(
    ("case", "mention"),
    [
        ("no write access", "no write access"),
        ("repo of another type", "is a dataset repo, not a model repo"),
        ("connection dropped mid-upload", "dropped while uploading; nothing was committed"),
    ],
)
def test_a_failed_push_is_one_line_and_keeps_the_local_output(
    case, mention, hub, models, subspace, folder, tmp_path, quick_retries
):
    _, _, adapter = models
    hub.push("org/data", folder, repo_type="dataset")
    repo_id = {"no write access": "someone-else/safe", "repo of another type": "org/data"}.get(case, "org/safe")
    if case == "connection dropped mid-upload":
        hub.cut_uploads = 6  # the first upload and each of huggingface_hub's retries
    out = tmp_path / "safe"
    result = run_cli(
        "correct", adapter, "--subspace", subspace, "--out", out, "--push-to-hub", repo_id, "--token", WRITER
    )
    line = assert_one_line_error(result, 1, mention, repo_id, f"the local output {out.resolve()} is complete and kept")
    assert WRITER not in line
    assert hub.repos == {} or list(hub.repos) == ["org/safe"] and len(hub.repos["org/safe"].commits) == 1
    assert_ok(run_cli("verify", out))


@pytest.mark.parametrize(
    ("case", "code", "mentions"),
    [
        ("dry run", 2, ("--push-to-hub", "--dry-run")),
        ("estimate without --out", 2, ("--push-to-hub", "--out DIR")),
        ("several adapters, one repo", 2, ("--push-to-hub", "{name}")),
        # {name} is the output's path below --out-dir (a/adapter -> a-adapter); repo ids ignore case.
        ("two adapters, one repo name", 2, ("org/a-adapter-safe", "runs/A/adapter", "runs/a/adapter")),
        ("not a repo id", 2, ("--push-to-hub", "not a Hub repo id")),
        ("unknown placeholder", 2, ("--push-to-hub", "{nme}")),
        ("a commit for a branch", 2, ("--revision", "not a branch name")),
        ("--private alone", 2, ("--private", "--push-to-hub")),
    ],
)
def test_push_options_are_checked_before_any_work(case, code, mentions, hub, models, subspace, tmp_path):
    base, aligned, adapter = models
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        shutil.copytree(adapter, runs / name / "adapter")
    pair = (runs / "a" / "adapter", runs / "b" / "adapter")
    shutil.copytree(adapter, runs / "A" / "adapter")
    cased = (runs / "A" / "adapter", runs / "a" / "adapter")
    out = tmp_path / "out"
    correct = ("correct", "--subspace", subspace)
    args = {
        "dry run": (*correct, adapter, "--dry-run", "--push-to-hub", "org/x"),
        "estimate without --out": ("estimate-subspace", base, aligned, "--push-to-hub", "org/x"),
        "several adapters, one repo": (*correct, *pair, "--out-dir", out, "--push-to-hub", "org/x"),
        "two adapters, one repo name": (*correct, *cased, "--out-dir", out, "--push-to-hub", "org/{name}-safe"),
        "not a repo id": (*correct, adapter, "--out", out, "--push-to-hub", "org/not a name"),
        "unknown placeholder": (*correct, adapter, "--out", out, "--push-to-hub", "org/{nme}"),
        "a commit for a branch": (*correct, adapter, "--out", out, "--push-to-hub", "org/x", "--revision", "a" * 40),
        "--private alone": (*correct, adapter, "--out", out, "--private"),
    }[case]
    assert_one_line_error(run_cli(*args, "--token", WRITER), code, *mentions)
    assert not out.exists() and hub.log == []


@pytest.fixture
def api_makers(monkeypatch) -> list[str]:
    """The module that made each `HfApi` a run constructs (huggingface_hub makes some of its own in a commit)."""
    callers = []
    original = HfApi.__init__

    def counting(self, *args, **kwargs):
        callers.append(sys._getframe(1).f_globals.get("__name__", ""))
        original(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "__init__", counting)
    return callers


def test_a_push_goes_through_the_runs_one_client(hub, models, subspace, tmp_path, api_makers):
    """One `HfApi` serves the run's resolution and its push; the subspace repo is resolved once."""
    _, _, adapter = models
    hub.push("org/subspace", subspace)
    hub.clear_log()
    push = ("--push-to-hub", "org/safe", "--token", WRITER)
    assert_ok(run_cli("correct", adapter, "--subspace", "org/subspace", "--out", tmp_path / "out", *push))
    assert [maker for maker in api_makers if maker.startswith("csulora_cli")] == ["csulora_cli.checkpoints.hub.upload"]
    paths = [r.path.split("?")[0] for r in hub.log]
    assert [path for path in paths if "/revision/" in path] == ["/api/models/org/subspace/revision/main"]
    assert paths[-1] == "/api/models/org/safe/commit/main" and hub.repos["org/safe"].refs["main"]
