"""The bases, the adapter and the models must agree: a subspace of another model pair of the same shapes, or
a base that is not the aligned model's, is refused rather than applied in silence; a subspace folder knows
the modules it was asked for and says what it lacks."""

from __future__ import annotations

import json

import pytest

from csulora_cli.testing.builders import build_demo
from tests.helpers import RANK, assert_ok, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def other_pair(tmp_path_factory):
    """A second demo pair with the same shapes (another seed), and a subspace folder estimated from it."""
    root = tmp_path_factory.mktemp("other-pair")
    base, aligned, adapter = build_demo(root, seed=1)
    subspace = root / "subspace"
    assert_ok(
        run_cli(
            "estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", subspace,
            "--cache-dir", root / "cache",
        )
    )  # fmt: skip
    return base, aligned, subspace


def test_a_subspace_of_another_pair_is_refused_unless_confirmed(models, other_pair, tmp_path):
    adapter = models[2]
    _, _, foreign = other_pair
    out = tmp_path / "safe"
    line = assert_one_line_error(
        run_cli("correct", adapter, "--subspace", foreign, "--out", out), 2, "--confirm-models", "trained on"
    )
    assert "another model pair" in line
    assert not out.exists()
    gate = run_cli("inspect", adapter, "--subspace", foreign, "--gate", "reversal", "--fail-below", "-0.05")
    assert_one_line_error(gate, 2, "--confirm-models")
    assert_ok(run_cli("correct", adapter, "--subspace", foreign, "--out", out, "--confirm-models"))


def test_a_wrong_aligned_model_is_refused(models, other_pair, tmp_path):
    base, _, adapter = models
    _, other_aligned, _ = other_pair
    result = run_cli(
        "correct", adapter, "--base", base, "--aligned", other_aligned, "--rank", RANK, "--dry-run",
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert_one_line_error(result, 2, "--confirm-models", str(other_aligned.resolve()))


def test_a_base_the_aligned_models_card_does_not_name_is_refused(models, other_pair, tmp_path):
    base, aligned, adapter = models
    other_base, _, _ = other_pair
    (aligned / "README.md").write_text(f"---\nbase_model: {base.resolve()}\n---\n# the aligned demo model\n")
    try:
        common = ("correct", adapter, "--aligned", aligned, "--rank", RANK, "--dry-run", "--cache-dir", tmp_path / "c")
        line = assert_one_line_error(run_cli(*common, "--base", other_base), 2, "README.md", "--confirm-models")
        assert "made from" in line
        assert_ok(run_cli(*common, "--base", base))
        assert_ok(run_cli(*common, "--base", other_base, "--confirm-models"))
    finally:
        (aligned / "README.md").unlink()


def test_verify_names_what_an_incomplete_subspace_folder_lacks(models, tmp_path):
    base, aligned, adapter = models
    subspace = tmp_path / "subspace"
    assert_ok(
        run_cli(
            "estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", subspace,
            "--cache-dir", tmp_path / "cache",
        )
    )  # fmt: skip
    (job,) = (subspace / "jobs").iterdir()
    record = json.loads(job.read_text())
    assert record["finished"] is True and len(record["asked"]) == len(list((subspace / "bases").iterdir()))
    assert_ok(run_cli("verify", subspace))

    # A job stopped half-way: its record says it did not finish, and one basis never came.
    first = sorted((subspace / "bases").iterdir())[0]
    first.unlink()
    job.write_text(json.dumps(record | {"finished": False}))
    line = assert_one_line_error(run_cli("verify", subspace), 1, "incomplete subspace folder", "1 module(s)")
    assert "did not finish" in line

    # A rerun of the same job fills the folder and finishes the record.
    assert_ok(
        run_cli(
            "estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", subspace,
            "--cache-dir", tmp_path / "cache",
        )
    )  # fmt: skip
    assert_ok(run_cli("verify", subspace))


def test_a_damaged_basis_file_fails_verify(models, subspace, tmp_path):
    import shutil

    copy = tmp_path / "subspace"
    shutil.copytree(subspace, copy)
    victim = sorted((copy / "bases").iterdir())[0]
    data = bytearray(victim.read_bytes())
    data[-8] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert_one_line_error(run_cli("verify", copy), 1, victim.name)
