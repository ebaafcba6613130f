"""The method variants end to end (`--method csulora-signed`, `--method csulora-inside`, `--two-sided`),
checked against dense float64 computations from the model and adapter files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from csulora_cli.subspace.estimate import SubspaceBasis
from csulora_cli.subspace.folder import SUBSPACE_MANIFEST
from csulora_cli.subspace.store import read_basis_file, write_basis_file
from tests.cli.test_correct import REPORT, WEIGHTS, adapter_modules, factors, scale_of
from tests.helpers import (
    RANK,
    assert_ok,
    assert_one_line_error,
    model_tensor,
    run_cli,
    safetensors_header_bytes,
    tensor_bytes,
)


@pytest.fixture(scope="module")
def exact_folder(models, root):
    """An exact-SVD subspace folder, so dense U_k, W_k from the files are the tool's up to round-off."""
    base, aligned, adapter = models
    out = root / "exact-subspace"
    assert_ok(
        run_cli("estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--exact", "--out", out)
    )
    return out


def dense_pairs(models, module: str, k: int):
    """V's top-k singular pairs (u_j, w_j) in float64, from the model files."""
    base, aligned, _ = models
    key = f"{module}.weight"
    displacement = model_tensor(aligned, key).double() - model_tensor(base, key).double()
    left, _, right_t = torch.linalg.svd(displacement, full_matrices=False)
    return left[:, :k], right_t[:k].T


def run_variant(adapter, subspace, out, *options):
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out, "--rank", RANK, *options))
    before, after = tensor_bytes(adapter / WEIGHTS), tensor_bytes(out / WEIGHTS)
    assert safetensors_header_bytes(adapter / WEIGHTS) == safetensors_header_bytes(out / WEIGHTS)
    assert [key for key in before if before[key] != after[key] and ".lora_B." not in key] == []
    return json.loads((out / REPORT).read_text())


def test_signed_attenuates_negative_coefficients(models, exact_folder, tmp_path):
    _, _, adapter = models
    report = run_variant(adapter, exact_folder, tmp_path / "signed", "--method", "csulora-signed")
    assert report["method"]["params"] == {"lambda": 3.0}
    scale = scale_of(adapter)
    negatives = 0
    for entry in report["modules"]:
        module = entry["module"]
        lora_a, lora_b = (t.double() for t in factors(adapter, module))
        _, new_b = factors(tmp_path / "signed", module)
        update, written = scale * lora_b @ lora_a, scale * new_b.double() @ lora_a
        left, right = dense_pairs(models, module, entry["subspace"]["k"])
        before = (left * (update @ right)).sum(dim=0)
        after = (left * (written @ right)).sum(dim=0)
        row_space = torch.linalg.pinv(lora_a) @ lora_a
        reach = (row_space @ right).square().sum(dim=0)
        expected = torch.where(before < 0, before / (1.0 + 3.0 * reach), before)
        assert float((after - expected).abs().max()) <= 1e-4 * float(torch.linalg.matrix_norm(update)), module
        negatives += int((before < 0).sum())
    assert negatives > 0  # the check above is not vacuous


def test_two_sided_project_and_its_report(models, exact_folder, tmp_path):
    _, _, adapter = models
    report = run_variant(adapter, exact_folder, tmp_path / "two", "--method", "project", "--two-sided")
    assert report["method"]["params"] == {"two_sided": True}
    scale = scale_of(adapter)
    for entry in report["modules"]:
        module = entry["module"]
        lora_a, lora_b = (t.double() for t in factors(adapter, module))
        _, new_b = factors(tmp_path / "two", module)
        update, written = scale * lora_b @ lora_a, scale * new_b.double() @ lora_a
        left, right = dense_pairs(models, module, entry["subspace"]["k"])
        inside = left @ (left.T @ update @ right) @ right.T
        expected = inside @ torch.linalg.pinv(lora_a) @ lora_a
        error = torch.linalg.matrix_norm(written - expected) / torch.linalg.matrix_norm(update)
        assert float(error) < 1e-4, module
        fraction = float(inside.square().sum() / update.square().sum())
        assert entry["aligned_energy"] == pytest.approx(fraction, abs=1e-5)


def test_inside_and_two_sided_csulora_run(models, subspace, tmp_path):
    _, _, adapter = models
    inside = run_variant(adapter, subspace, tmp_path / "inside", "--method", "csulora-inside", "--lambda", "5")
    assert inside["method"]["params"] == {"lambda": 5.0, "eps": 0.05}
    both = run_variant(adapter, subspace, tmp_path / "both", "--two-sided")
    assert both["method"]["params"] == {"lambda": 3.0, "eps": 0.05, "two_sided": True}
    # The two-sided subspace is smaller, so more of each update lies outside it.
    one_sided = run_variant(adapter, subspace, tmp_path / "one")
    assert both["totals"]["off_subspace_energy"] > one_sided["totals"]["off_subspace_energy"]


@pytest.mark.parametrize("method", ["safelora", "csulora-signed"])
def test_two_sided_refused_where_it_has_no_meaning(models, subspace, tmp_path, method):
    _, _, adapter = models
    result = run_cli(
        "correct", adapter, "--subspace", subspace, "--out", tmp_path / "o", "--method", method, "--two-sided"
    )
    assert_one_line_error(result, 2, "--two-sided", method)
    assert not (tmp_path / "o").exists()


def test_subspace_folder_without_right_vectors(models, subspace, tmp_path):
    """A folder written before right vectors were stored: fine for csulora, a clear error for the rest."""
    _, _, adapter = models
    old = tmp_path / "old"
    shutil.copytree(subspace, old)
    manifest = json.loads((old / SUBSPACE_MANIFEST).read_text())
    (old / SUBSPACE_MANIFEST).write_text(json.dumps(dict(manifest, schema_version=1)))
    for path in (old / "bases").glob("*.safetensors"):
        basis, record = read_basis_file(path)
        kept = {key: record[key] for key in ("fingerprint", "module", "transposed")}
        write_basis_file(path, SubspaceBasis(basis.basis, basis.singular_values, basis.total_energy, 1.0), kept)
    assert_ok(run_cli("correct", adapter, "--subspace", old, "--dry-run", "--rank", RANK))
    for extra in (("--method", "csulora-signed"), ("--two-sided",)):
        result = run_cli("correct", adapter, "--subspace", old, "--out", tmp_path / "o", "--rank", RANK, *extra)
        assert_one_line_error(result, 1, "right singular vectors", "--subspace", "estimate-subspace")
    assert len(adapter_modules(adapter)) > 0
