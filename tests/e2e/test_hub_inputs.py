"""Adapters and subspaces by Hub repo id, through the real huggingface_hub client against the stand-in.

In process (`run_cli`) with `hub_online` (tests/e2e/conftest.py), which points huggingface_hub at the
stand-in and gives each test an HF cache of its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from csulora_cli.testing.builders import TinyLlama, build_demo, make_adapter_factors, write_adapter
from tests.helpers import RANK, WRITER, assert_ok, assert_one_line_error, load_tensors, read_report, run_cli

SECRET = "hf_secretTOKEN0123456789"


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict[str, Path]:
    """The demo pair, its adapter (with training leftovers a repo may hold), a q/v adapter, and a subspace."""
    root = tmp_path_factory.mktemp("hub-inputs")
    base, aligned, adapter = build_demo(root / "models")
    (adapter / "optimizer.pt").write_bytes(b"\0" * 300_000)  # never needed
    (adapter / "checkpoint-100").mkdir()
    (adapter / "checkpoint-100" / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
    (adapter / "README.md").write_text("---\nlicense: mit\n---\n\n# demo adapter\n")
    qv = root / "adapter-qv"
    write_adapter(
        qv,
        make_adapter_factors(TinyLlama(), ("q_proj", "v_proj"), seed=7),
        {"target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": str(aligned)},
    )
    subspace = root / "subspace"
    assert_ok(run_cli("estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", subspace))
    return {"base": base, "aligned": aligned, "adapter": adapter, "qv": qv, "subspace": subspace}


def lora_b(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_tensors(folder / "adapter_model.safetensors").items() if "lora_B" in k}


def served(hub, fragment: str) -> int:
    return sum(r.body_bytes for r in hub.data_requests() if fragment in r.path)


# huggingface_hub's own look-up of AI agent harnesses for its user agent (at most once a day per HF_HOME):
# not a request csulora makes.
NOT_OURS = "/api/agent-harnesses"


def requests(hub) -> list[tuple[str, str]]:
    """(method, path without query) of every request csulora made to the stand-in."""
    return [(r.method, r.path.split("?")[0]) for r in hub.log if r.path.split("?")[0] != NOT_OURS]


def test_adapter_by_id_fetches_only_its_files_and_lands_under_its_repo_name(hub_online, local, tmp_path):
    commit = hub_online.push("org/adapter", local["adapter"])
    out = tmp_path / "safe"
    result = assert_ok(run_cli("correct", "org/adapter", "--subspace", local["subspace"], "--out-dir", out, "--json"))
    folder = out / "org" / "adapter"
    report = read_report(folder)
    assert result.report() == report
    assert report["adapter"] == "org/adapter"
    assert report["adapter_source"] | {"endpoint": None} == {
        "kind": "hub",
        "repo": "org/adapter",
        "revision": "main",
        "commit": commit,
        "endpoint": None,
    }
    assert served(hub_online, "optimizer.pt") == 0 and served(hub_online, "checkpoint-100") == 0
    assert sorted(report["provenance"]["adapter_files"]) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    # What the repo holds besides the adapter is never fetched, and the report lists it.
    assert report["provenance"]["left_out"] == ["checkpoint-100/", "optimizer.pt"]
    assert not (folder / "optimizer.pt").exists()
    # The same bytes as correcting the local folder.
    alone = tmp_path / "alone"
    assert_ok(run_cli("correct", local["adapter"], "--subspace", local["subspace"], "--out", alone))
    for key, tensor in lora_b(alone).items():
        assert torch.equal(tensor, lora_b(folder)[key])
    assert commit in (folder / "README.md").read_text()


def test_pinned_then_offline_then_mixed_with_a_folder(hub_online, local, tmp_path, monkeypatch):
    commit = hub_online.push("org/adapter", local["adapter"])
    hub_online.push("org/adapter", local["qv"])  # main moves on; the pin stays
    pinned = f"org/adapter@{commit}"
    assert_ok(run_cli("correct", pinned, "--subspace", local["subspace"], "--out", tmp_path / "first"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_online.clear_log()
    offline = assert_ok(run_cli("correct", pinned, "--subspace", local["subspace"], "--out", tmp_path / "offline"))
    assert hub_online.log == [] and "warning" not in offline.stderr
    assert (tmp_path / "first" / "adapter_model.safetensors").read_bytes() == (
        tmp_path / "offline" / "adapter_model.safetensors"
    ).read_bytes()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    runs = tmp_path / "runs" / "a" / "adapter"
    shutil.copytree(local["adapter"], runs)
    shutil.rmtree(runs / "checkpoint-100")
    batch = tmp_path / "batch"
    assert_ok(run_cli("correct", runs, pinned, "--subspace", local["subspace"], "--out-dir", batch))
    assert sorted(str(p.relative_to(batch)) for p in batch.glob("**/csulora_report.json")) == [
        "adapter/csulora_report.json",
        "org/adapter/csulora_report.json",
    ]


@pytest.mark.parametrize(
    ("case", "mention"),
    [("unknown", "repository not found"), ("private", "repository not found"), ("gated", "gated")],
)
def test_adapter_repos_fail_as_model_repos_do(hub_online, local, tmp_path, case, mention):
    hub_online.push("org/private", local["adapter"], token=SECRET)
    hub_online.push("org/gated", local["adapter"], token=SECRET, gated=True)
    repo = {"unknown": "org/missing", "private": "org/private", "gated": "org/gated"}[case]
    out = tmp_path / "out"
    line = assert_one_line_error(run_cli("correct", repo, "--subspace", local["subspace"], "--out", out), 1, mention)
    assert repo in line and not out.exists()
    if case != "unknown":  # with the token, the same repo works
        assert_ok(run_cli("correct", repo, "--subspace", local["subspace"], "--out", out, "--token", SECRET))


def test_subspace_by_id_fetches_the_description_and_only_the_targeted_bases(hub_online, local, tmp_path):
    commit = hub_online.push("org/subspace", local["subspace"])
    hub_online.clear_log()
    out = tmp_path / "from-hub"
    assert_ok(run_cli("correct", local["qv"], "--subspace", "org/subspace", "--out", out))
    fetched = sorted({r.path.rsplit(f"/resolve/{commit}/", 1)[-1] for r in hub_online.data_requests()})
    targeted = sorted(
        f"bases/{path.name}"
        for path in (local["subspace"] / "bases").iterdir()
        if "q_proj" in path.name or "v_proj" in path.name
    )
    assert fetched == sorted(["subspace.json", *targeted])
    expected = sum((local["subspace"] / name).stat().st_size for name in [*targeted, "subspace.json"])
    assert sum(r.body_bytes for r in hub_online.data_requests()) == expected
    report = read_report(out)
    assert report["subspace"]["hub"] == {
        "repo": "org/subspace",
        "revision": "main",
        "commit": commit,
        "endpoint": report["subspace"]["hub"]["endpoint"],
    }
    alone = tmp_path / "from-folder"
    assert_ok(run_cli("correct", local["qv"], "--subspace", local["subspace"], "--out", alone))
    assert lora_b(out).keys() == lora_b(alone).keys()
    for key, tensor in lora_b(alone).items():
        assert torch.equal(tensor, lora_b(out)[key]), key


def test_subspace_repo_of_another_schema_or_missing_a_module_is_refused_before_any_basis_moves(
    hub_online, local, tmp_path
):
    partial = tmp_path / "partial"
    shutil.copytree(local["subspace"], partial)
    for path in (partial / "bases").glob("*v_proj*"):
        path.unlink()
    hub_online.push("org/partial", partial)
    old = tmp_path / "old"
    shutil.copytree(local["subspace"], old)
    manifest = (old / "subspace.json").read_text().replace('"schema_version": 2', '"schema_version": 1')
    (old / "subspace.json").write_text(manifest)
    hub_online.push("org/old", old)
    hub_online.clear_log()
    line = assert_one_line_error(
        run_cli("correct", local["qv"], "--subspace", "org/partial", "--out", tmp_path / "o"), 1, "org/partial"
    )
    assert "does not cover adapter module" in line and "v_proj" in line
    line = assert_one_line_error(
        run_cli("correct", local["qv"], "--subspace", "org/old", "--out", tmp_path / "o"), 1, "schema 1"
    )
    assert served(hub_online, "/bases/") == 0
    assert not (tmp_path / "o").exists()


def test_share_once_push_a_subspace_then_correct_from_a_clean_machine(hub_online, local, tmp_path, monkeypatch):
    """The README's share-once workflow: one job estimates and pushes the subspace; another, with no
    checkpoints and an empty HF cache, corrects a q/v adapter against the repo, fetching only the
    description and the q/v bases, and writes the same B as with the local folder."""
    hub_online.allow_writes(WRITER, "org")
    published = tmp_path / "published"
    estimate = ("estimate-subspace", local["base"], local["aligned"], "--adapter", local["adapter"], "--rank", RANK)
    assert_ok(run_cli(*estimate, "--out", published, "--push-to-hub", "org/shared", env={"HF_TOKEN": WRITER}))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "clean-hf-cache"))
    hub_online.clear_log()
    out = tmp_path / "safe"
    assert_ok(run_cli("correct", local["qv"], "--subspace", "org/shared", "--out", out))
    fetched = sorted({r.path.split("/resolve/", 1)[1].split("/", 1)[1] for r in hub_online.data_requests()})
    bases = sorted(
        f"bases/{p.name}" for p in (published / "bases").iterdir() if "q_proj" in p.name or "v_proj" in p.name
    )
    assert fetched == sorted(["subspace.json", *bases])
    alone = tmp_path / "alone"
    assert_ok(run_cli("correct", local["qv"], "--subspace", published, "--out", alone))
    for key, tensor in lora_b(alone).items():
        assert torch.equal(tensor, lora_b(out)[key]), key


def test_correct_from_a_subspace_repo_resolves_it_once(hub_online, local, tmp_path):
    commit = hub_online.push("org/subspace", local["subspace"])
    hub_online.clear_log()
    assert_ok(run_cli("correct", local["adapter"], "--subspace", "org/subspace", "--out", tmp_path / "out"))
    # The folder holds the bases of exactly this adapter's modules (estimated with --adapter).
    names = ["subspace.json", *(f"bases/{path.name}" for path in (local["subspace"] / "bases").iterdir())]
    files = [(method, f"/org/subspace/resolve/{commit}/{name}") for name in names for method in ("HEAD", "GET")]
    made = requests(hub_online)
    assert made[0] == ("GET", "/api/models/org/subspace/revision/main")
    assert sorted(made[1:]) == sorted(files)


def test_a_hub_models_card_naming_the_other_model_is_order_evidence(hub_online, local, tmp_path):
    """As a local folder's card is (tests/cli/test_inputs_kept.py): read through the run's Hub client, at the
    resolved commit."""
    carded = tmp_path / "aligned"
    shutil.copytree(local["aligned"], carded)
    (carded / "README.md").write_text("---\nbase_model: org/base\n---\n\n# the aligned model\n")
    hub_online.push("org/base", local["base"])
    commit = hub_online.push("org/aligned", carded)
    # An adapter that names no model: the card is the only evidence.
    plain = tmp_path / "adapter"
    shutil.copytree(local["adapter"], plain)
    config = json.loads((plain / "adapter_config.json").read_text())
    (plain / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": None}))
    card = f"org/aligned@{commit[:12]}/README.md (base_model)"

    swapped = ("--base", "org/aligned", "--aligned", "org/base", "--rank", RANK)
    warned = assert_ok(run_cli("correct", plain, *swapped, "--dry-run"))
    assert f"swapped: {card} names org/base, the model given as aligned" in warned.stderr, warned.describe()
    gate = ("inspect", plain, *swapped, "--gate", "reversal", "--fail-below", "-1")
    assert_one_line_error(run_cli(*gate), 2, "swapped", card, "--confirm-order")

    out = tmp_path / "subspace"
    right = run_cli("estimate-subspace", "org/base", "org/aligned", "--adapter", plain, "--rank", RANK, "--out", out)
    assert "swapped" not in assert_ok(right).stderr
    evidence = json.loads((out / "subspace.json").read_text())["order"]["evidence"]
    assert evidence == [f"{card} names the base model as the model it was made from"]
