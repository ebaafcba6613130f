"""`csulora correct` end to end, in process through typer's CliRunner (tests/helpers.py run_cli; docs/cli.md,
docs/method.md sections 1-6).

The corrected update `s * B' @ A` read back from the written file is compared with a dense float64
reference of docs/method.md section 4 built here from the model and adapter files: V from the checkpoints,
its exact SVD, the rank rule of section 2, the SVD of the dense dW, and X* formed explicitly.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from csulora_cli.testing.builders import TinyLlama, make_adapter_factors, write_adapter
from tests.helpers import (
    RANK,
    assert_ok,
    assert_one_line_error,
    energy_rank,
    exact_subspace,
    load_tensors,
    run_cli,
    safetensors_header_bytes,
    snapshot,
    tensor_bytes,
)

ENERGY = 0.99
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
REPORT = "csulora_report.json"
OUTPUT_FILES = {CONFIG, WEIGHTS, REPORT, "README.md"}
# float32 compute and a float32 basis against a float64 reference
RELATIVE_TOLERANCE = 1e-4
MODULE_FIELDS = {
    "module",
    "base_key",
    "kind",
    "shape",
    "rank",
    "alpha",
    "scale",
    "status",
    "subspace",
    "update_energy",
    "corrected_energy",
    "removed_energy",
    "attenuation_energy",
    "aligned_energy",
    "off_subspace_energy",
    "cosine",
    "directions",
}


@pytest.fixture(scope="module")
def corrected(models, subspace, root):
    """One adapter corrected with the defaults (csulora, lambda 3, eps 0.05): (stdout JSON, OUT)."""
    _, _, adapter = models
    out = root / "corrected"
    result = assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out, "--json"))
    return result.report(), out


@pytest.fixture(scope="module")
def exact_bases(models) -> dict[str, tuple[torch.Tensor, int]]:
    """Per base key: the exact float64 basis of V and the k of the energy rule (docs/method.md section 2)."""
    base, aligned, adapter = models
    bases = {}
    for module in adapter_modules(adapter):
        key = f"{module}.weight"
        left, singular_values, total = exact_subspace(base, aligned, key)
        bases[key] = (left, energy_rank(singular_values, total, ENERGY, RANK))
    return bases


def adapter_modules(adapter: Path) -> list[str]:
    keys = load_tensors(adapter / WEIGHTS)
    return [
        key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        for key in keys
        if key.endswith(".lora_A.weight")
    ]


def factors(adapter: Path, module: str) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = load_tensors(adapter / WEIGHTS)
    prefix = f"base_model.model.{module}"
    return tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"]


def scale_of(adapter: Path) -> float:
    config = json.loads((adapter / CONFIG).read_text())
    return config["lora_alpha"] / config["r"]


def reference(lora_b, lora_a, scale, basis, method: str, lambda_: float, eps: float):
    """Dense docs/method.md section 4 (csulora) / section 5 (project) in float64: returns (dW, X*, a_i, sigma_i)."""
    update = scale * lora_b.double() @ lora_a.double()
    projector = basis @ basis.T
    left, sigma, right_t = torch.linalg.svd(update, full_matrices=False)
    aligned = (basis.T @ left).square().sum(dim=0)
    if method == "project":
        return update, projector @ update, aligned, sigma
    off = 1.0 - aligned
    weight = torch.where(off <= eps, torch.zeros_like(off), off)
    attenuation = 1.0 / (1.0 + lambda_ * weight)
    identity = torch.eye(update.shape[0], dtype=torch.float64)
    kept = projector @ left + (identity - projector) @ left * attenuation
    return update, kept @ torch.diag(sigma) @ right_t, aligned, sigma


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(actual - expected) / torch.linalg.matrix_norm(expected))


def check_against_reference(adapter, out, report, exact_bases, method="csulora", lambda_=3.0, eps=0.05):
    """The written B' gives s B' A == X* of the dense reference, and the report's figures match."""
    scale = scale_of(adapter)
    modules = {entry["module"]: entry for entry in report["modules"]}
    assert set(modules) == set(adapter_modules(adapter))
    for module, entry in modules.items():
        lora_a, lora_b = factors(adapter, module)
        new_a, new_b = factors(out, module)
        assert torch.equal(new_a, lora_a)
        basis, k = exact_bases[f"{module}.weight"]
        assert entry["subspace"]["k"] == k, module
        update, expected, aligned, sigma = reference(lora_b, lora_a, scale, basis[:, :k], method, lambda_, eps)
        written = scale * new_b.double() @ new_a.double()
        assert relative_error(written, expected) < RELATIVE_TOLERANCE, module
        # docs/method.md section 6, from the definitions on dense matrices.
        update_energy = float(update.square().sum())
        projected = basis[:, :k] @ (basis[:, :k].T @ update)
        assert entry["update_energy"] == pytest.approx(update_energy, rel=1e-5)
        assert entry["corrected_energy"] == pytest.approx(float(written.square().sum()), rel=1e-5)
        assert entry["attenuation_energy"] == pytest.approx(
            float((update - written).square().sum()) / update_energy, abs=1e-5
        )
        assert entry["aligned_energy"] == pytest.approx(float(projected.square().sum()) / update_energy, abs=1e-5)
        assert entry["off_subspace_energy"] == pytest.approx(1.0 - entry["aligned_energy"], abs=1e-9)
        cosine = float((update * written).sum()) / math.sqrt(update_energy * float(written.square().sum()))
        assert entry["cosine"] == pytest.approx(cosine, abs=1e-5)
        carrying = sigma > 1e-6 * sigma[0]
        fully = (1.0 - aligned[carrying]) <= entry_eps(report, eps)
        outside = (aligned[carrying] <= entry_eps(report, eps)) & ~fully
        assert entry["directions"] == {
            "aligned": int(fully.sum()),
            "partial": int((~fully & ~outside).sum()),
            "off": int(outside.sum()),
        }, module


def entry_eps(report: dict, default: float) -> float:
    return report["method"]["params"].get("eps", default)


def only_lora_b_changed(adapter: Path, out: Path, expect_changed: bool = True) -> None:
    """Header bytes (key order, dtypes, shapes, offsets, metadata) identical; only lora_B data differs."""
    original, written = adapter / WEIGHTS, out / WEIGHTS
    assert safetensors_header_bytes(written) == safetensors_header_bytes(original)
    assert written.stat().st_size == original.stat().st_size
    before, after = tensor_bytes(original), tensor_bytes(written)
    assert list(after) == list(before)
    for key in before:
        if ".lora_B." in key or "lora_embedding_B" in key:
            assert (after[key] != before[key]) is expect_changed, key
        else:
            assert after[key] == before[key], key


def assert_same_figures(actual, expected, where: str = "report") -> None:
    """Equal reports; floats to round-off (sums of the same figures may round differently run to run)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), where
        for key in expected:
            assert_same_figures(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
            assert_same_figures(left, right, f"{where}[{index}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert actual == pytest.approx(expected, rel=1e-12, abs=1e-15), where
    else:
        assert actual == expected, where


def test_one_adapter_output_folder(models, corrected):
    _, _, adapter = models
    report, out = corrected
    assert {path.name for path in out.iterdir()} == OUTPUT_FILES
    assert (out / CONFIG).read_bytes() == (adapter / CONFIG).read_bytes()
    only_lora_b_changed(adapter, out)
    # --json prints the report that was written.
    assert json.loads((out / REPORT).read_text()) == report
    assert report["output"] == str(out.resolve())
    assert report["adapter"] == str(adapter.resolve())


def test_report_schema(models, corrected):
    _, _, adapter = models
    report, _ = corrected
    assert report["schema_version"] == 2
    assert report["method"]["name"] == "csulora"
    assert report["method"]["params"] == {"lambda": 3.0, "eps": 0.05}
    assert report["subspace"]["energy"] == ENERGY
    assert set(report["totals"]) >= {"update_energy", "attenuation_energy", "off_subspace_energy", "cosine"}
    assert [entry["module"] for entry in report["modules"]] == adapter_modules(adapter)
    for entry in report["modules"]:
        assert set(entry) >= MODULE_FIELDS
        assert entry["status"] == "corrected"
        assert entry["kind"] == "linear"
        assert entry["rank"] == 8 and entry["alpha"] == 16 and entry["scale"] == 2.0
        assert entry["base_key"] == entry["module"] + ".weight"
        assert sum(entry["directions"].values()) <= entry["rank"]
        assert 0.0 < entry["attenuation_energy"] < 1.0
    totals = report["totals"]
    assert totals["update_energy"] == pytest.approx(sum(entry["update_energy"] for entry in report["modules"]))


def test_readme_records_provenance(models, corrected):
    _, _, adapter = models
    _, out = corrected
    readme = (out / "README.md").read_text()
    assert "csulora" in readme
    assert str(adapter.resolve()) in readme
    assert "lambda=3.0" in readme and "eps=0.05" in readme
    assert "lora_B" in readme


def test_matches_dense_reference(models, corrected, exact_bases):
    _, _, adapter = models
    report, out = corrected
    check_against_reference(adapter, out, report, exact_bases)


def test_lambda_and_eps_change_the_output(models, subspace, corrected, exact_bases, tmp_path):
    _, _, adapter = models
    out = tmp_path / "strong"
    result = assert_ok(
        run_cli(
            "correct", adapter, "--subspace", subspace, "--out", out, "--rank", RANK, "--lambda", "10", "--eps", "0.3"
        )
    )
    assert result.stdout.strip()  # the human-readable table
    report = json.loads((out / REPORT).read_text())
    assert report["method"]["params"] == {"lambda": 10.0, "eps": 0.3}
    only_lora_b_changed(adapter, out)
    default_b = {k: v for k, v in tensor_bytes(corrected[1] / WEIGHTS).items() if "lora_B" in k}
    strong_b = {k: v for k, v in tensor_bytes(out / WEIGHTS).items() if "lora_B" in k}
    assert all(strong_b[key] != default_b[key] for key in default_b)
    assert report["totals"]["attenuation_energy"] > corrected[0]["totals"]["attenuation_energy"]
    check_against_reference(adapter, out, report, exact_bases, lambda_=10.0, eps=0.3)


def test_config_file_values_used_and_flags_win(models, subspace, tmp_path):
    _, _, adapter = models
    config = tmp_path / "preset.yaml"
    config.write_text("lambda: 10\neps: 0.3\nmethod: project\nrank: 8\nenergy: 0.9\n")
    result = assert_ok(
        run_cli(
            "correct", adapter, "--subspace", subspace, "--config", config, "--method", "csulora", "--dry-run", "--json"
        )
    )
    report = result.report()
    assert report["method"]["name"] == "csulora"  # the flag wins over the file
    assert report["method"]["params"] == {"lambda": 10.0, "eps": 0.3}  # from the file
    assert report["subspace"]["energy"] == 0.9
    # A preset's rank beside a subspace folder caps its stored columns, as --rank does (configs/README.md);
    # the folder's own max_rank stays what it was estimated with.
    assert report["subspace"]["estimation"]["max_rank"] == RANK and report["subspace"]["rank_cap"] == 8
    assert list(tmp_path.iterdir()) == [config]


def test_method_project(models, subspace, exact_bases, tmp_path):
    _, _, adapter = models
    out = tmp_path / "projected"
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out, "--rank", RANK, "--method", "project"))
    report = json.loads((out / REPORT).read_text())
    assert report["method"]["name"] == "project"
    only_lora_b_changed(adapter, out)
    check_against_reference(adapter, out, report, exact_bases, method="project")
    for entry in report["modules"]:  # a hard projection keeps exactly the aligned energy
        assert entry["corrected_energy"] / entry["update_energy"] == pytest.approx(entry["aligned_energy"], abs=1e-5)


def test_method_none_copies_the_weights(models, subspace, tmp_path):
    _, _, adapter = models
    out = tmp_path / "unchanged"
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out, "--method", "none"))
    assert (out / WEIGHTS).read_bytes() == (adapter / WEIGHTS).read_bytes()
    assert (out / CONFIG).read_bytes() == (adapter / CONFIG).read_bytes()
    report = json.loads((out / REPORT).read_text())
    assert report["method"]["name"] == "none"
    for entry in report["modules"]:
        assert entry["status"] == "unchanged"
        assert entry["removed_energy"] == 0.0
        assert entry["cosine"] == pytest.approx(1.0)
        assert entry["off_subspace_energy"] > 0.0  # still reported


def test_several_adapters(models, subspace, corrected, exact_bases, tmp_path):
    """Several adapters with --out-dir: DIR/<path below their common parent>/ each, the same bytes as
    one-at-a-time runs."""
    _, aligned, original = models
    adapter = tmp_path / "inputs" / "adapter"
    shutil.copytree(original, adapter)
    second = tmp_path / "inputs" / "adapter_b"
    write_adapter(
        second,
        make_adapter_factors(TinyLlama(), ("q_proj", "down_proj"), seed=11),
        {"target_modules": ["q_proj", "down_proj"], "base_model_name_or_path": str(aligned), "lora_alpha": 8},
    )
    (second / "README.md").write_text("# adapter b\n\nTrained on the b data.\n")
    (second / "tokenizer_config.json").write_text('{"model_max_length": 128}\n')
    out = tmp_path / "batch"
    result = assert_ok(run_cli("correct", adapter, second, "--subspace", subspace, "--out-dir", out, "--json"))
    reports = result.reports()
    assert isinstance(reports, list) and len(reports) == 2
    assert sorted(path.name for path in out.iterdir()) == ["adapter", "adapter_b"]
    assert {path.name for path in (out / "adapter").iterdir()} == OUTPUT_FILES
    assert {path.name for path in (out / "adapter_b").iterdir()} == OUTPUT_FILES | {"tokenizer_config.json"}
    # The first adapter comes out exactly as when corrected alone.
    assert (out / "adapter" / WEIGHTS).read_bytes() == (corrected[1] / WEIGHTS).read_bytes()
    for source, folder, report in ((adapter, out / "adapter", reports[0]), (second, out / "adapter_b", reports[1])):
        assert report["adapter"] == str(source.resolve())
        assert report["output"] == str(folder.resolve())
        assert json.loads((folder / REPORT).read_text()) == report
        assert (folder / CONFIG).read_bytes() == (source / CONFIG).read_bytes()
        only_lora_b_changed(source, folder)
    assert (out / "adapter_b" / "tokenizer_config.json").read_bytes() == (second / "tokenizer_config.json").read_bytes()
    assert "Trained on the b data." in (out / "adapter_b" / "README.md").read_text()
    check_against_reference(second, out / "adapter_b", reports[1], exact_bases)


def test_dry_run_writes_nothing(models, subspace, corrected, tmp_path):
    _, _, adapter = models
    out = tmp_path / "never"
    before_adapter = snapshot(adapter)
    result = assert_ok(
        run_cli("correct", adapter, "--subspace", subspace, "--out", out, "--rank", RANK, "--dry-run", "--json")
    )
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert snapshot(adapter) == before_adapter
    report = result.report()
    assert report["output"] is None
    written = corrected[0]
    assert [entry["module"] for entry in report["modules"]] == [entry["module"] for entry in written["modules"]]
    assert_same_figures(report["modules"], written["modules"])
    assert_same_figures(report["totals"], written["totals"])


def test_existing_out_refused_and_overwrite_never_deletes_what_csulora_did_not_write(
    models, subspace, corrected, tmp_path
):
    _, _, adapter = models
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("someone else's work\n")
    (out / WEIGHTS).write_bytes(b"not an adapter")
    before = snapshot(tmp_path)
    common = ("correct", adapter, "--subspace", subspace, "--out", out, "--rank", RANK)
    line = assert_one_line_error(run_cli(*common), 1, "--overwrite", str(out))
    assert "Traceback" not in line
    assert snapshot(tmp_path) == before  # OUT exactly as it was, and no temporary folder left beside it

    # --overwrite replaces only a folder csulora wrote: this one is refused, naming what would be lost.
    line = assert_one_line_error(run_cli(*common, "--overwrite"), 1, str(out), "keep.txt", WEIGHTS)
    assert "replaces only a folder csulora wrote" in line
    assert snapshot(tmp_path) == before

    mine = tmp_path / "mine"
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", mine, "--rank", RANK))
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", mine, "--rank", RANK, "--overwrite"))
    assert {path.name for path in mine.iterdir()} == OUTPUT_FILES
    assert (mine / WEIGHTS).read_bytes() == (corrected[1] / WEIGHTS).read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine", "taken"]


def test_base_aligned_is_deterministic_and_matches_subspace(models, corrected, tmp_path):
    """--base/--aligned estimates (and caches) the bases on the way: the same bytes as --subspace;
    a second run (warm cache) into the same OUT rewrites every file byte for byte."""
    base, aligned, adapter = models
    out, cache = tmp_path / "out", tmp_path / "cache"
    common = ("correct", adapter, "--base", base, "--aligned", aligned, "--out", out, "--rank", RANK)
    common += ("--cache-dir", cache, "--device", "cpu")
    # SOURCE_DATE_EPOCH fixes the time that the report and card record (reproducible builds' convention).
    environment = {"SOURCE_DATE_EPOCH": "1780000000"}
    assert_ok(run_cli(*common, env=environment))
    first = snapshot(out)
    assert len(list((cache / "bases").rglob("*.safetensors"))) == len(adapter_modules(adapter))
    assert (out / WEIGHTS).read_bytes() == (corrected[1] / WEIGHTS).read_bytes()
    report = json.loads((out / REPORT).read_text())
    assert report["subspace"]["aligned"]["path"] == str(aligned.resolve())
    assert_same_figures(report["modules"], corrected[0]["modules"])

    assert_ok(run_cli(*common, "--overwrite", env=environment))
    second = snapshot(out)
    # Every byte again, except the command line the report records (it gained --overwrite).
    first_report, second_report = (json.loads(tree.pop(REPORT)) for tree in (first, second))
    assert second == first
    assert second_report["provenance"]["command_line"] == [*first_report["provenance"]["command_line"], "--overwrite"]
    assert first_report["provenance"]["created"] == "2026-05-28T20:26:40Z"
    first_report["provenance"]["command_line"] = second_report["provenance"]["command_line"]
    assert second_report == first_report


def test_aligned_defaults_to_base_model_name_or_path(models, corrected, tmp_path):
    base, aligned, adapter = models
    assert json.loads((adapter / CONFIG).read_text())["base_model_name_or_path"] == str(aligned)
    out = tmp_path / "out"
    assert_ok(run_cli("correct", adapter, "--base", base, "--out", out, "--rank", RANK))
    report = json.loads((out / REPORT).read_text())
    assert report["subspace"]["aligned"]["path"] == str(aligned.resolve())
    assert (out / WEIGHTS).read_bytes() == (corrected[1] / WEIGHTS).read_bytes()
