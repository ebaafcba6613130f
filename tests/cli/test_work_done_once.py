"""Work a run does once: one Hub client, one hash of each cached basis file, no V for a weight that did not
change. Each is counted on the real code path, in process."""

from __future__ import annotations

import pytest

from csulora_cli.checkpoints import digests
from csulora_cli.checkpoints.hub import client as hub_client_module
from csulora_cli.pipeline.plumbing import basis_source
from csulora_cli.subspace import estimating
from csulora_cli.testing.builders import TinyLlama, make_model_pair, write_checkpoint
from tests.helpers import RANK, assert_ok, run_cli


@pytest.fixture
def hub_clients(monkeypatch) -> list:
    """Every HubClient a run makes."""
    made = []
    original = hub_client_module.HubClient

    def counting(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(basis_source, "HubClient", counting)
    return made


@pytest.mark.parametrize(
    "command",
    [
        ["correct", "{adapter}", "--base", "{base}", "--aligned", "{aligned}", "--out", "{out}"],
        ["correct", "{adapter}", "--subspace", "{subspace}", "--out", "{out}"],
        ["estimate-subspace", "{base}", "{aligned}", "--adapter", "{adapter}"],
        ["inspect", "{adapter}", "--base", "{base}", "--aligned", "{aligned}"],
    ],
    ids=["correct-pair", "correct-folder", "estimate-adapter", "inspect"],
)
def test_one_hub_client_per_run(command, hub_clients, models, subspace, tmp_path):
    base, aligned, adapter = models
    names = {"base": base, "aligned": aligned, "adapter": adapter, "subspace": subspace, "out": tmp_path / "out"}
    assert_ok(run_cli(*[part.format(**names) for part in command], "--rank", RANK))
    assert len(hub_clients) == 1


def test_a_warm_correct_hashes_each_basis_file_once(models, tmp_path, monkeypatch):
    base, aligned, adapter = models
    common = ("--base", base, "--aligned", aligned, "--rank", RANK, "--cache-dir", tmp_path / "cache")
    cold = assert_ok(run_cli("correct", adapter, *common, "--out", tmp_path / "cold", "--json")).report()
    hashed = []
    original = digests.sha256_of_file
    monkeypatch.setattr(digests, "sha256_of_file", lambda path: hashed.append(path) or original(path))
    warm = assert_ok(run_cli("correct", adapter, *common, "--out", tmp_path / "warm", "--json")).report()
    assert not [path for path in hashed if "bases" in path.parts], hashed
    # The digests recorded without reading the files back are the files' own.
    bases = warm["subspace"]["bases"]
    assert bases == cold["subspace"]["bases"]
    for record in bases:
        (path,) = (tmp_path / "cache" / "bases").rglob(record["file"])
        assert record["sha256"] == original(path)


def test_weights_alignment_left_alone_never_form_a_displacement(tmp_path, monkeypatch):
    shape = TinyLlama()
    base_weights, aligned_weights = make_model_pair(shape, seed=3)
    unchanged = ("model.embed_tokens.weight", "lm_head.weight")
    for key in unchanged:
        aligned_weights[key] = base_weights[key].clone()
    write_checkpoint(tmp_path / "base", base_weights)
    write_checkpoint(tmp_path / "aligned", aligned_weights)
    formed = []
    original = estimating.form_displacement
    monkeypatch.setattr(estimating, "form_displacement", lambda *args: formed.append(args[2]) or original(*args))
    result = assert_ok(run_cli("estimate-subspace", tmp_path / "base", tmp_path / "aligned", "--rank", RANK, "--json"))
    estimated = {entry["base_key"] for entry in result.json()["subspace"]["modules"]}
    assert estimated and not estimated & set(unchanged)
    assert set(formed) == estimated  # every changed weight formed once, the unchanged ones never
