"""Hub sources end to end: the real `huggingface_hub` client against a local server speaking the Hub's routes.

Each test starts `FakeHub` on 127.0.0.1 in a thread of the test process, runs the CLI in process against
it (HF_ENDPOINT and the other variables huggingface_hub reads at import set through `run_cli_on_hub`),
and checks on the server's request log what was fetched.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from csulora_cli.testing.builders import (
    TinyLlama,
    make_adapter_factors,
    make_model_pair,
    write_adapter,
    write_checkpoint,
)
from scripts.tools.hub_standin import FakeHub
from tests.helpers import (
    RANK,
    assert_ok,
    assert_one_line_error,
    load_tensors,
    run_cli,
    run_cli_on_hub,
    run_console_script,
    safetensors_header,
    safetensors_header_bytes,
)

SHAPE = TinyLlama(layers=4)
SECRET = "hf_secretTOKEN0123456789"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """base/ and aligned/ as 4 bf16 shards each, a moved aligned/ (a later commit), adapters."""
    root = tmp_path_factory.mktemp("hub-models")
    base_weights, aligned_weights = make_model_pair(SHAPE, seed=3)
    _, moved_weights = make_model_pair(SHAPE, seed=4)  # a later commit of the aligned repo
    folders = {name: root / name for name in ("base", "aligned", "aligned-moved")}
    write_checkpoint(folders["base"], base_weights, shards=4)
    write_checkpoint(folders["aligned"], aligned_weights, shards=4)
    write_checkpoint(folders["aligned-moved"], moved_weights, shards=4)
    for folder in folders.values():
        (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (folder / "README.md").write_text("a model card naming no base model\n")
    for name, targets in (("adapter-qv", ("q_proj", "v_proj")), ("adapter-all", _ALL)):
        factors = make_adapter_factors(SHAPE, targets, rank=RANK, seed=5)
        write_adapter(root / name, factors, {"target_modules": list(targets), "base_model_name_or_path": "org/aligned"})
    folders["adapter-qv"], folders["adapter-all"] = root / "adapter-qv", root / "adapter-all"
    return folders


_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture
def hub(checkpoints, tmp_path_factory, monkeypatch):
    # An HF cache of each test's own: the stand-in's commit ids repeat across tests that push the same files.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    with FakeHub() as server:
        server.push("org/base", checkpoints["base"])
        server.push("org/aligned", checkpoints["aligned"])
        yield server


def hub_env(hub: FakeHub, **extra) -> dict:
    return {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": None, "HF_HUB_DISABLE_TELEMETRY": "1"} | extra


def run_on_hub(hub: FakeHub, *args, env=None):
    return run_cli_on_hub(*args, env=hub_env(hub, **(env or {})))


def correct(adapter: Path, out: Path, hub: FakeHub, *args, env=None):
    return run_on_hub(hub, "correct", adapter, "--base", "org/base", "--rank", RANK, "--out", out, *args, env=env)


def needed_bytes(folder: Path, targets: tuple[str, ...]) -> tuple[int, int]:
    """(tensor data bytes of the targeted weights, header bytes of the shards holding them) of a local copy."""
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    data, shards = 0, set()
    for key, shard in weight_map.items():
        if key.endswith(".weight") and key.split(".")[-2] in targets and ".layers." in key:
            start, end = safetensors_header(folder / shard)[key]["data_offsets"]
            data += end - start
            shards.add(shard)
    headers = sum(8 + len(safetensors_header_bytes(folder / shard)) for shard in shards)
    return data, headers


def snapshot_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir())


def b_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_tensors(folder / "adapter_model.safetensors").items() if "lora_B" in k}


def test_correct_fetches_only_the_targeted_tensors_by_range(hub, checkpoints, tmp_path):
    result = assert_ok(correct(checkpoints["adapter-qv"], tmp_path / "out", hub, "--fetch", "ranges", "--json"))
    data, headers = needed_bytes(checkpoints["base"], ("q_proj", "v_proj"))
    aligned_data, aligned_headers = needed_bytes(checkpoints["aligned"], ("q_proj", "v_proj"))
    safetensors_served = hub.bytes_served(".safetensors")
    # Exactly the q/v tensors and the headers of the shards holding them, from both repos; nothing else.
    assert safetensors_served == data + headers + aligned_data + aligned_headers
    whole = snapshot_bytes(checkpoints["base"]) + snapshot_bytes(checkpoints["aligned"])
    assert safetensors_served < whole / 2
    assert all(r.range is not None for r in hub.data_requests() if r.path.endswith(".safetensors"))
    # Besides tensors, whole files: each repo's index, and the card and config the base/aligned order check reads.
    others = [r.path.rsplit("/", 1)[1] for r in hub.data_requests() if not r.path.endswith(".safetensors")]
    assert sorted(others) == sorted(["model.safetensors.index.json", "README.md", "config.json"] * 2)

    # Same numbers as the local run on the same checkpoints.
    local = assert_ok(
        run_cli(
            "correct",
            checkpoints["adapter-qv"],
            "--base",
            checkpoints["base"],
            "--aligned",
            checkpoints["aligned"],
            "--rank",
            RANK,
            "--out",
            tmp_path / "local",
        )
    )
    assert local.rc == 0
    hub_b, local_b = b_tensors(tmp_path / "out"), b_tensors(tmp_path / "local")
    assert hub_b.keys() == local_b.keys()
    for key in hub_b:
        assert torch.equal(hub_b[key], local_b[key]), key

    report = json.loads((tmp_path / "out" / "csulora_report.json").read_text())
    commit = hub.repos["org/aligned"].refs["main"]
    assert report["subspace"]["aligned"] == {
        "kind": "hub",
        "repo": "org/aligned",
        "revision": "main",
        "commit": commit,
        "endpoint": hub.url,
    }
    assert commit in (tmp_path / "out" / "README.md").read_text()
    assert result.report()["subspace"]["base"]["commit"] == hub.repos["org/base"].refs["main"]


def test_second_run_and_offline_run_are_served_from_the_caches(hub, checkpoints, tmp_path):
    assert_ok(correct(checkpoints["adapter-qv"], tmp_path / "first", hub, "--fetch", "ranges"))
    hub.clear_log()
    assert_ok(correct(checkpoints["adapter-qv"], tmp_path / "second", hub))
    assert hub.data_requests() == []  # only the branch was resolved again (model info), no file bytes
    assert {r.path for r in hub.log} <= {"/api/models/org/base/revision/main", "/api/models/org/aligned/revision/main"}

    hub.clear_log()
    assert_ok(correct(checkpoints["adapter-qv"], tmp_path / "offline", hub, env={"HF_HUB_OFFLINE": "1"}))
    assert hub.log == []
    assert b_tensors(tmp_path / "offline").keys() == b_tensors(tmp_path / "first").keys()

    # The Hub unreachable (not declared offline): the commit resolved before serves, with a warning.
    down = {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    unreachable = assert_ok(correct(checkpoints["adapter-qv"], tmp_path / "down", hub, env=down))
    assert "cannot reach the Hub" in unreachable.stderr and "resolved on an earlier run" in unreachable.stderr
    for key, value in b_tensors(tmp_path / "first").items():
        assert torch.equal(value, b_tensors(tmp_path / "offline")[key])


def test_offline_without_the_tensor_bytes_is_one_clean_line(hub, checkpoints, tmp_path):
    """Refs, listings and headers are cached but neither bases nor shards: offline cannot go on."""
    cache = tmp_path / "cache"
    assert_ok(
        correct(checkpoints["adapter-qv"], tmp_path / "first", hub, "--fetch", "ranges", env={"CSULORA_CACHE": cache})
    )
    shutil.rmtree(cache / "bases")
    hub.clear_log()
    for fetch in ("ranges", "shards"):
        result = correct(
            checkpoints["adapter-qv"],
            tmp_path / f"offline-{fetch}",
            hub,
            "--fetch",
            fetch,
            env={"CSULORA_CACHE": cache, "HF_HUB_OFFLINE": "1"},
        )
        assert_one_line_error(result, 1, "HF_HUB_OFFLINE", ".safetensors")
        assert not (tmp_path / f"offline-{fetch}").exists()
    assert hub.log == []


def test_pinned_commit_needs_no_request_once_cached(hub, checkpoints, tmp_path):
    base_commit = hub.repos["org/base"].refs["main"]
    aligned_commit = hub.repos["org/aligned"].refs["main"]
    args = ("--base", f"org/base@{base_commit}", "--aligned", f"org/aligned@{aligned_commit}")
    adapter = checkpoints["adapter-qv"]
    assert_ok(run_on_hub(hub, "correct", adapter, *args, "--rank", RANK, "--out", tmp_path / "a"))
    hub.clear_log()
    assert_ok(run_on_hub(hub, "correct", adapter, *args, "--rank", RANK, "--out", tmp_path / "b"))
    assert hub.log == []


def test_a_moved_branch_never_reuses_a_stale_basis_and_a_pinned_commit_stays(hub, checkpoints, tmp_path):
    adapter = checkpoints["adapter-qv"]
    first_commit = hub.repos["org/aligned"].refs["main"]
    assert_ok(correct(adapter, tmp_path / "before", hub))
    moved_commit = hub.push("org/aligned", checkpoints["aligned-moved"])
    assert moved_commit != first_commit

    assert_ok(correct(adapter, tmp_path / "after", hub))
    after = json.loads((tmp_path / "after" / "csulora_report.json").read_text())
    assert after["subspace"]["aligned"]["commit"] == moved_commit
    assert any(not torch.equal(b, b_tensors(tmp_path / "before")[k]) for k, b in b_tensors(tmp_path / "after").items())

    assert_ok(
        run_on_hub(
            hub,
            "correct",
            adapter,
            "--base",
            "org/base",
            "--aligned",
            f"org/aligned@{first_commit}",
            "--rank",
            RANK,
            "--out",
            tmp_path / "pinned",
        )
    )
    pinned = json.loads((tmp_path / "pinned" / "csulora_report.json").read_text())
    assert pinned["subspace"]["aligned"]["commit"] == first_commit
    for key, value in b_tensors(tmp_path / "before").items():
        assert torch.equal(value, b_tensors(tmp_path / "pinned")[key])


def test_range_reads_retry_a_transient_status_and_resume_a_cut_body(hub, checkpoints, tmp_path):
    hub.fail_ranges = [503]  # the first ranged GET; huggingface_hub's backoff sends it again
    hub.cut_ranges = 1  # the next one stops halfway: csulora asks for the rest only
    assert_ok(correct(checkpoints["adapter-qv"], tmp_path / "out", hub, "--fetch", "ranges"))
    ranged = [r for r in hub.data_requests() if r.range is not None]
    assert [r.status for r in ranged[:3]] == [503, 206, 206]
    assert ranged[0].range == ranged[1].range
    cut, rest = (_range_of(r) for r in ranged[1:3])
    assert rest == (cut[0] + ranged[1].body_bytes, cut[1])
    # Exactly the needed bytes arrived once each, and the result is what a clean run writes.
    needed = sum(sum(needed_bytes(checkpoints[name], ("q_proj", "v_proj"))) for name in ("base", "aligned"))
    error_bodies = sum(r.body_bytes for r in ranged if r.status == 503)
    assert hub.bytes_served(".safetensors") == needed + error_bodies
    hub.clear_log()
    env = {"CSULORA_CACHE": tmp_path / "clean-cache"}
    assert_ok(correct(checkpoints["adapter-qv"], tmp_path / "clean", hub, "--fetch", "ranges", env=env))
    for key, value in b_tensors(tmp_path / "clean").items():
        assert torch.equal(value, b_tensors(tmp_path / "out")[key]), key


def _range_of(request) -> tuple[int, int]:
    start, end = request.range.removeprefix("bytes=").split("-")
    return int(start), int(end)


def test_a_server_ignoring_byte_ranges_is_refused(hub, checkpoints, tmp_path):
    hub.ignore_ranges = True
    result = correct(checkpoints["adapter-qv"], tmp_path / "out", hub, "--fetch", "ranges")
    assert_one_line_error(result, 1, "ignored the byte range", "--fetch shards")
    assert not (tmp_path / "out").exists()


def test_shards_mode_downloads_whole_shards_into_the_hf_cache(hub, checkpoints, tmp_path):
    hf_home = tmp_path / "hf"
    assert_ok(correct(checkpoints["adapter-qv"], tmp_path / "out", hub, "--fetch", "shards", env={"HF_HOME": hf_home}))
    shard_gets = [r for r in hub.data_requests() if r.path.endswith(".safetensors") and r.range is None]
    assert shard_gets, "whole shards are fetched without a Range header"
    commit = hub.repos["org/base"].refs["main"]
    snapshot = hf_home / "hub" / "models--org--base" / "snapshots" / commit
    downloaded = {path.name for path in snapshot.iterdir()}
    assert "model.safetensors.index.json" in downloaded
    for name in downloaded - {"model.safetensors.index.json", "config.json"}:
        assert (snapshot / name).read_bytes() == (checkpoints["base"] / name).read_bytes()

    # Another csulora run, with a cold basis cache, reads those shards from the HF cache.
    hub.clear_log()
    env = {"HF_HOME": hf_home, "CSULORA_CACHE": tmp_path / "other-cache"}
    assert_ok(correct(checkpoints["adapter-qv"], tmp_path / "again", hub, "--fetch", "ranges", env=env))
    assert hub.bytes_served(".safetensors") == 0


def test_auto_fetch_chooses_by_the_share_of_each_shard_needed(hub, checkpoints, tmp_path):
    assert_ok(correct(checkpoints["adapter-qv"], tmp_path / "qv", hub))
    assert all(r.range is not None for r in hub.data_requests() if r.path.endswith(".safetensors"))
    hub.clear_log()
    env = {"CSULORA_CACHE": tmp_path / "cold", "HF_HOME": tmp_path / "hf-all"}
    assert_ok(correct(checkpoints["adapter-all"], tmp_path / "all", hub, env=env))
    whole = [r for r in hub.data_requests() if r.path.endswith(".safetensors") and r.range is None]
    assert len(whole) >= 4  # most of every block shard is needed: both repos' shards come whole


def test_estimate_subspace_and_inspect_take_hub_repos(hub, checkpoints, tmp_path):
    out = tmp_path / "subspace"
    result = assert_ok(
        run_on_hub(
            hub,
            "estimate-subspace",
            "org/base",
            "org/aligned",
            "--modules",
            r"\.q_proj",
            "--rank",
            RANK,
            "--out",
            out,
            "--json",
        )
    )
    assert len(result.subspace()["modules"]) == SHAPE.layers
    index = json.loads((out / "subspace.json").read_text())
    assert index["sources"]["aligned"]["commit"] == hub.repos["org/aligned"].refs["main"]
    inspected = assert_ok(
        run_on_hub(hub, "inspect", checkpoints["adapter-qv"], "--base", "org/base", "--rank", RANK, "--json")
    )
    assert inspected.report()["subspace"]["base"]["kind"] == "hub"


def test_fail_fast_on_a_missing_tensor_before_any_tensor_data_moves(hub, checkpoints, tmp_path):
    broken = tmp_path / "aligned-missing"
    shutil.copytree(checkpoints["aligned"], broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.3.self_attn.v_proj.weight"]
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    hub.push("org/aligned", broken)
    hub.clear_log()
    result = correct(checkpoints["adapter-qv"], tmp_path / "out", hub, "--fetch", "shards")
    assert_one_line_error(result, 1, "model.layers.3.self_attn.v_proj.weight")
    # Headers only: 8-byte prefixes and header ranges, never a whole shard or a tensor's data.
    assert all(r.range is not None for r in hub.data_requests() if r.path.endswith(".safetensors"))
    header_bytes = needed_bytes(checkpoints["base"], ("q_proj", "v_proj"))[1] * 2
    assert hub.bytes_served(".safetensors") <= header_bytes
    assert not (tmp_path / "out").exists()


def test_fail_fast_on_a_shape_mismatch(hub, checkpoints, tmp_path):
    wrong = tmp_path / "aligned-wrong"
    weights = load_all(checkpoints["aligned"])
    weights["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(
        SHAPE.hidden, SHAPE.hidden + 1, dtype=torch.bfloat16
    )
    write_checkpoint(wrong, weights, shards=4)
    hub.push("org/wrong", wrong)
    result = correct(checkpoints["adapter-qv"], tmp_path / "out", hub, "--aligned", "org/wrong", "--confirm-models")
    assert_one_line_error(result, 1, "model.layers.0.self_attn.q_proj.weight")
    assert hub.bytes_served(".safetensors") <= 2 * needed_bytes(checkpoints["base"], _ALL)[1]


def load_all(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(folder.glob("*.safetensors")):
        tensors |= load_tensors(shard)
    return tensors


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("case", "mention"),
    [
        ("unknown repo", "repository not found"),
        ("private, no token", "repository not found"),
        ("wrong token", "refused the token"),
        ("gated, no token", "gated repository"),
        ("unknown revision", "revision not found"),
        ("no safetensors", "no model.safetensors"),
        ("no network", "cannot reach the Hub"),
        ("timeout", "timed out"),
        ("offline, not cached", "HF_HUB_OFFLINE"),
        ("bad fetch mode", "--fetch"),
    ],
)
def test_hub_failures_are_one_clean_line_without_the_token(case, mention, hub, checkpoints, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    hub.push("org/private", checkpoints["aligned"], token=SECRET)
    hub.push("org/gated", checkpoints["aligned"], token=SECRET, gated=True)
    hub.push("org/cards-only", empty)
    aligned, env, extra, code = "org/aligned", {}, (), 1
    if case == "unknown repo":
        aligned = "org/missing"
    elif case == "private, no token":
        aligned = "org/private"
    elif case == "wrong token":
        aligned, extra = "org/private", ("--token", "hf_notTheRightOne")
    elif case == "gated, no token":
        aligned = "org/gated"
    elif case == "unknown revision":
        aligned = "org/aligned@no-such-branch"
    elif case == "no safetensors":
        aligned = "org/cards-only"
    elif case == "no network":
        env = {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    elif case == "timeout":
        hub.stall_seconds = 1
        env = {"HF_HUB_ETAG_TIMEOUT": "0.25", "HF_HUB_DOWNLOAD_TIMEOUT": "0.25"}
    elif case == "offline, not cached":
        env = {"HF_HUB_OFFLINE": "1"}
    elif case == "bad fetch mode":
        extra, code = ("--fetch", "sometimes"), 2
    result = correct(checkpoints["adapter-qv"], tmp_path / "out", hub, "--aligned", aligned, *extra, env=env)
    line = assert_one_line_error(result, code, mention)
    assert SECRET not in result.stdout + result.stderr
    assert "hf_notTheRightOne" not in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how", ["flag", "HF_TOKEN"])
def test_private_and_gated_repos_with_a_token(how, hub, checkpoints, tmp_path):
    hub.push("org/private", checkpoints["aligned"], token=SECRET)
    hub.push("org/gated", checkpoints["base"], token=SECRET, gated=True)
    extra, env = (("--token", SECRET), {}) if how == "flag" else ((), {"HF_TOKEN": SECRET})
    # the aligned model under another repo name than the adapter's base_model_name_or_path
    args = (
        "--base",
        "org/gated",
        "--aligned",
        "org/private",
        "--confirm-models",
        "--rank",
        RANK,
        "--out",
        tmp_path / "out",
        "--json",
    )
    result = assert_ok(run_on_hub(hub, "correct", checkpoints["adapter-qv"], *args, *extra, env=env))
    assert any(r.authorization == f"Bearer {SECRET}" for r in hub.data_requests())
    written = "".join(path.read_text(errors="replace") for path in (tmp_path / "out").iterdir())
    assert SECRET not in result.stdout + result.stderr + written


@pytest.mark.slow
def test_token_stays_out_of_debug_tracebacks(hub, checkpoints, tmp_path):
    """The interpreter prints the traceback CSULORA_DEBUG asks for: a real process is the point."""
    hub.push("org/private", checkpoints["aligned"], token=SECRET)
    result = run_console_script(
        "correct",
        checkpoints["adapter-qv"],
        "--base",
        "org/base",
        "--rank",
        RANK,
        "--out",
        tmp_path / "out",
        "--aligned",
        "org/missing",
        "--token",
        SECRET,
        env=hub_env(hub, CSULORA_DEBUG="1"),
    )
    assert result.rc == 1
    assert "Traceback" in result.stderr
    assert SECRET not in result.stdout + result.stderr
