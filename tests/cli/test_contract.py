"""The batch and CI contract: where outputs go, one JSON shape per command, provenance a deploy gate can
verify, the model card, the guards against silently ignored input, and presets for every command.

In process through typer's CliRunner (tests/helpers.py); the subprocess checks of startup and the
console script are in tests/e2e/test_startup.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from csulora_cli.errors import FormatError
from tests.helpers import (
    RANK,
    assert_ok,
    assert_one_line_error,
    load_tensors,
    read_report,
    run_cli,
    snapshot,
    validate_against_schema,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def runs(models, root) -> Path:
    """The common training layout: runs/<name>/adapter, every adapter named `adapter`."""
    _, _, adapter = models
    for name in ("a", "b"):
        shutil.copytree(adapter, root / "runs" / name / "adapter")
    return root / "runs"


@pytest.fixture(scope="module")
def batch(runs, subspace, root) -> tuple[Path, dict]:
    """`correct runs/*/adapter --out-dir DIR --json`: (DIR, the printed document)."""
    out = root / "batch"
    adapters = sorted(runs.glob("*/adapter"))
    result = assert_ok(run_cli("correct", *adapters, "--subspace", subspace, "--out-dir", out, "--json"))
    return out, result.json()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# 1. Many adapters


def test_out_dir_keeps_paths_below_the_common_parent(runs, batch):
    out, document = batch
    assert sorted(str(path.relative_to(out)) for path in out.glob("*/*")) == ["a/adapter", "b/adapter"]
    assert [report["output"] for report in document["adapters"]] == [
        str((out / name / "adapter").resolve()) for name in ("a", "b")
    ]
    for name in ("a", "b"):
        assert read_report(out / name / "adapter")["adapter"] == str((runs / name / "adapter").resolve())


def test_out_dir_with_one_adapter_uses_its_folder_name(models, subspace, tmp_path):
    _, _, adapter = models
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out-dir", tmp_path / "safe"))
    assert [path.name for path in (tmp_path / "safe").iterdir()] == ["adapter"]
    assert (tmp_path / "safe" / "adapter" / "adapter_model.safetensors").is_file()


def test_out_dir_that_exists_receives_nested_outputs_and_refuses_existing_ones(runs, subspace, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    adapters = sorted(runs.glob("*/adapter"))
    assert_ok(run_cli("correct", *adapters, "--subspace", subspace, "--out-dir", out))
    assert (out / "a" / "adapter" / "csulora_report.json").is_file()
    before = snapshot(tmp_path)
    line = assert_one_line_error(run_cli("correct", *adapters, "--subspace", subspace, "--out-dir", out), 1)
    assert "--overwrite" in line and str(out / "a" / "adapter") in line
    assert snapshot(tmp_path) == before


def test_out_with_several_adapters_points_at_out_dir(runs, subspace, tmp_path):
    adapters = sorted(runs.glob("*/adapter"))
    line = assert_one_line_error(run_cli("correct", *adapters, "--subspace", subspace, "--out", tmp_path / "o"), 2)
    assert "--out" in line and "--out-dir" in line
    assert not (tmp_path / "o").exists()


def test_two_inputs_landing_in_one_folder_are_named(runs, subspace, tmp_path):
    first = runs / "a" / "adapter"
    line = assert_one_line_error(
        run_cli("correct", first, runs / "a" / ".." / "a" / "adapter", "--subspace", subspace, "--out-dir", tmp_path),
        2,
    )
    assert str(first) in line and "same folder" in line
    nested = tmp_path / "outer"
    shutil.copytree(first, nested)
    shutil.copytree(first, nested / "inner")
    line = assert_one_line_error(
        run_cli("correct", nested, nested / "inner", "--subspace", subspace, "--out-dir", tmp_path / "o"), 2
    )
    assert str(nested) in line and str(nested / "inner") in line and "nest" in line


# 2. One JSON shape per command


def test_correct_json_has_one_shape_for_one_and_for_several(models, runs, subspace, batch):
    _, _, adapter = models
    _, several = batch
    one = assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--dry-run", "--json")).json()
    for document in (one, several):
        assert set(document) == {"schema_version", "tool", "command", "dry_run", "adapters"}
        assert document["schema_version"] == 2 and document["command"] == "correct"
        assert document["tool"]["name"] == "csulora"
    assert len(one["adapters"]) == 1 and len(several["adapters"]) == 2


def test_estimate_and_correct_name_modules_alike(models, subspace, batch, tmp_path):
    base, aligned, adapter = models
    estimated = assert_ok(
        run_cli(
            "estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--json", "--cache-dir", tmp_path
        )
    ).subspace()
    report = batch[1]["adapters"][0]
    by_module = {entry["module"]: entry for entry in estimated["modules"]}
    assert set(by_module) == {entry["module"] for entry in report["modules"]}
    for entry in report["modules"]:
        mine = by_module[entry["module"]]
        assert mine["base_key"] == entry["base_key"]
        for field in ("k", "captured_energy", "displacement_energy"):
            assert mine["subspace"][field] == pytest.approx(entry["subspace"][field])


def test_table_columns_show_the_json_fields_of_their_name(models):
    _, _, adapter = models
    document = assert_ok(run_cli("inspect", adapter, "--json")).json()
    table = assert_ok(run_cli("inspect", adapter, env={"COLUMNS": "250"})).stdout
    header = next(line for line in table.splitlines() if "update_energy" in line)
    columns = [cell.strip() for cell in header.strip("┃│ ").split("┃")]
    first = document["adapters"][0]["modules"][0]
    row = next(line for line in table.splitlines() if first["module"] in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    shown = dict(zip(columns, cells, strict=True))
    # ||dW||_F used to be shown beside the JSON's ||dW||_F^2: now the column is the field.
    assert float(shown["update_energy"]) == pytest.approx(first["update_energy"], rel=1e-3)
    assert float(shown["top_singular_value"]) == pytest.approx(first["top_singular_value"], rel=1e-3)


def test_the_schemas_reject_what_they_do_not_describe(batch):
    report = json.loads(json.dumps(batch[1]["adapters"][0]))
    validate_against_schema(report, "report")
    for broken in (
        {key: value for key, value in report.items() if key != "provenance"},
        report | {"schema_version": 1},
        report | {"totals": report["totals"] | {"attenuation_energy": -0.5}},
        report | {"unexpected": True},
    ):
        with pytest.raises(FormatError):
            validate_against_schema(broken, "report")
    with pytest.raises(FormatError):
        validate_against_schema(batch[1] | {"adapters": {}}, "correct")


# 3. Provenance, and `verify`


def test_report_records_the_digests_of_what_went_in_and_came_out(runs, subspace, batch):
    out, _ = batch
    folder = out / "a" / "adapter"
    report = read_report(folder)
    provenance = report["provenance"]
    source = runs / "a" / "adapter"
    assert provenance["adapter_files"] == {path.name: sha256(path) for path in source.iterdir()}
    written = {path.name for path in folder.iterdir()} - {"csulora_report.json"}
    assert provenance["output_files"] == {name: sha256(folder / name) for name in written}
    assert provenance["command_line"][:2] == ["csulora", "correct"] and "--out-dir" in provenance["command_line"]
    assert provenance["created"].endswith("Z")
    bases = {entry["base_key"]: entry for entry in report["subspace"]["bases"]}
    assert {module["base_key"] for module in report["modules"]} == set(bases)
    for entry in bases.values():
        assert entry["sha256"] == sha256(subspace / "bases" / entry["file"])
        shard_digest = entry["base_content"].removesuffix(":" + entry["base_key"]).removeprefix("sha256:")
        assert f"sha256:{shard_digest}" in report["subspace"]["checkpoints"]["base"]
    # The checkpoint digests are the shard files' own sha256.
    base = Path(report["subspace"]["base"]["path"])
    shard_digests = {f"sha256:{sha256(path)}" for path in base.glob("*.safetensors")}
    assert set(report["subspace"]["checkpoints"]["base"]) <= shard_digests


def test_token_is_removed_from_the_recorded_command_line(models, subspace, tmp_path):
    _, _, adapter = models
    out = tmp_path / "out"
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out, "--token", "hf_secretvalue"))
    text = (out / "csulora_report.json").read_text() + (out / "README.md").read_text()
    assert "hf_secretvalue" not in text
    assert read_report(out)["provenance"]["command_line"][-2:] == ["--token", "***"]


def test_verify_passes_then_names_a_flipped_byte_an_extra_file_and_a_missing_one(batch, tmp_path):
    out, _ = batch
    folder = tmp_path / "shipped"
    shutil.copytree(out / "a" / "adapter", folder)
    result = assert_ok(run_cli("verify", folder, "--json"))
    assert result.json()["outputs"] == [{"folder": str(folder), "files": 3, "ok": True, "problem": None}]

    weights = folder / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    line = assert_one_line_error(run_cli("verify", folder), 1, str(weights), "differs")
    assert line.startswith("csulora: error: ")
    weights.write_bytes(original)

    (folder / "token.txt").write_text("hf_x\n")
    assert_one_line_error(run_cli("verify", folder), 1, str(folder / "token.txt"), "extra")
    (folder / "token.txt").unlink()

    (folder / "README.md").unlink()
    assert_one_line_error(run_cli("verify", folder), 1, str(folder / "README.md"), "missing")


def test_verify_refuses_a_folder_without_a_report(models):
    _, _, adapter = models
    assert_one_line_error(run_cli("verify", adapter), 1, "csulora_report.json", "missing")


# 5. The model card


def test_card_keeps_the_input_front_matter_on_top_and_its_body_below(models, subspace, tmp_path):
    _, aligned, original = models
    adapter = tmp_path / "carded"
    shutil.copytree(original, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": "org/aligned"}))
    (adapter / "README.md").write_text(
        "---\nlicense: apache-2.0\nlibrary_name: peft\ntags:\n- lora\n---\n\n# My adapter\n\nTrained on the b data.\n"
    )
    out = tmp_path / "out"
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out))
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    card = ModelCard(text)
    assert card.data.license == "apache-2.0" and card.data.library_name == "peft"
    assert card.data.tags == ["lora", "csulora"]
    assert card.data.base_model == "org/aligned"
    body = card.text
    assert body.index("## Safety correction (csulora)") < body.index("# My adapter")
    assert "Trained on the b data." in body
    assert "{" not in body.split("# My adapter")[0]  # no raw JSON dict for the subspace
    assert f"folder `{subspace.resolve()}`" in body and "Energy removed:" in body

    # Corrected again on purpose: still one csulora section, tags not repeated.
    again = tmp_path / "again"
    assert_ok(run_cli("correct", out, "--subspace", subspace, "--out", again, "--recorrect"))
    card = ModelCard((again / "README.md").read_text())
    assert card.data.tags == ["lora", "csulora"] and card.text.count("## Safety correction (csulora)") == 1
    assert read_report(again)["adapter"] == str(out.resolve())


def test_card_without_an_input_card_gets_front_matter(models, subspace, tmp_path):
    _, _, adapter = models
    out = tmp_path / "out"
    assert_ok(run_cli("correct", adapter, "--subspace", subspace, "--out", out))
    card = ModelCard((out / "README.md").read_text())
    assert card.data.tags == ["csulora"] and card.data.library_name == "peft"
    assert card.data.base_model is None  # a local path is not a Hub repo id


# 7. and 8. Guards


@pytest.mark.parametrize(
    ("flags", "named"),
    [(("--seed", "5"), "--seed"), (("--exact",), "--exact"), (("--power-iterations", "3"), "--power-iterations")],
)
def test_estimation_flags_beside_subspace_are_a_usage_error(models, subspace, tmp_path, flags, named):
    _, _, adapter = models
    for command in (("correct", adapter, "--out", tmp_path / "o"), ("inspect", adapter)):
        line = assert_one_line_error(run_cli(*command, "--subspace", subspace, *flags), 2, named, "--subspace")
        assert line.startswith("csulora: error: ")
    assert not (tmp_path / "o").exists()


def test_rank_beside_subspace_caps_the_columns_and_no_more_than_stored(models, subspace, batch, tmp_path):
    _, _, adapter = models
    line = assert_one_line_error(run_cli("inspect", adapter, "--subspace", subspace, "--rank", "512"), 2, "--rank")
    assert f"({RANK}, its max_rank)" in line
    capped = assert_ok(run_cli("inspect", adapter, "--subspace", subspace, "--rank", "2", "--json")).report()
    assert all(entry["subspace"]["k"] <= 2 for entry in capped["modules"])
    assert capped["subspace"]["rank_cap"] == 2 and capped["subspace"]["estimation"]["max_rank"] == RANK
    # Without --rank, one max_rank in the report: the folder's.
    report = batch[1]["adapters"][0]
    assert "rank_cap" not in report["subspace"] and "max_rank" not in report["subspace"]


def test_identical_models_are_an_error_at_estimation_naming_both(models, tmp_path):
    base, _, adapter = models
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    out = tmp_path / "subspace"
    line = assert_one_line_error(run_cli("estimate-subspace", base, copy, "--out", out), 1, str(base), str(copy))
    assert "no displacement" in line
    assert not out.exists()
    line = assert_one_line_error(
        run_cli("correct", adapter, "--base", base, "--aligned", copy, "--confirm-models", "--out", tmp_path / "o"),
        1,
        "no displacement",
    )
    assert str(base.resolve()) in line and str(copy.resolve()) in line
    assert not (tmp_path / "o").exists()


def test_a_corrected_adapter_is_refused_unless_recorrect(batch, subspace, tmp_path):
    out, _ = batch
    corrected = out / "a" / "adapter"
    line = assert_one_line_error(run_cli("correct", corrected, "--subspace", subspace, "--out", tmp_path / "o"), 2)
    assert str(corrected) in line and "--recorrect" in line
    assert_ok(run_cli("correct", corrected, "--subspace", subspace, "--out", tmp_path / "o", "--recorrect"))
    assert_ok(run_cli("inspect", corrected, "--subspace", subspace))  # inspecting it is how one checks it


# 9. Presets


@pytest.mark.parametrize("preset", sorted(path.name for path in CONFIGS.glob("*.yaml")))
def test_every_preset_works_with_every_command(models, subspace, tmp_path, preset):
    base, aligned, adapter = models
    config = CONFIGS / preset
    commands = (
        ("estimate-subspace", base, aligned, "--adapter", adapter, "--out", tmp_path / "s", "--cache-dir", tmp_path),
        ("correct", adapter, "--subspace", subspace, "--out", tmp_path / "o"),
        ("inspect", adapter, "--subspace", subspace),
    )
    for command in commands:
        result = run_cli(*command, "--config", config)
        # ci-gate.yaml may trip its gate on the demo adapter (exit 3): the preset did its job.
        assert result.rc in (0, 3), result.describe()
        assert "unknown option" not in result.stderr


def test_preset_paths_are_relative_to_the_preset(models, subspace, tmp_path):
    _, _, adapter = models
    presets = tmp_path / "presets"
    presets.mkdir()
    shutil.copytree(subspace, presets / "shared-subspace")
    (presets / "team.yaml").write_text("subspace: shared-subspace\nout: ../corrected\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert_ok(run_cli("correct", adapter, "--config", presets / "team.yaml", cwd=elsewhere))
    assert (tmp_path / "corrected" / "csulora_report.json").is_file()
    assert not list(elsewhere.iterdir())


def test_misspelt_preset_key_gets_a_suggestion(models, subspace, tmp_path):
    _, _, adapter = models
    config = tmp_path / "typo.yaml"
    config.write_text("fail-abve: 0.5\n")
    line = assert_one_line_error(run_cli("inspect", adapter, "--subspace", subspace, "--config", config), 2)
    assert str(config) in line and "'fail-abve'" in line and "did you mean 'fail-above'?" in line


# A subspace folder filled by a split job that was killed: its leftovers are not bases, and what is missing
# is named as a missing basis, not as a missing model weight.


def test_partial_subspace_folder_names_the_missing_basis_and_ignores_hidden_leftovers(models, subspace, tmp_path):
    _, _, adapter = models
    partial = tmp_path / "partial"
    shutil.copytree(subspace, partial)
    (partial / "bases" / ".tmp-123-abc.safetensors").write_bytes(b"")  # a write cut short by a kill
    assert_ok(run_cli("correct", adapter, "--subspace", partial, "--dry-run"))
    removed = sorted((partial / "bases").glob("*q_proj*"))[0]
    removed.unlink()
    line = assert_one_line_error(run_cli("correct", adapter, "--subspace", partial, "--dry-run"), 1, str(partial))
    assert "no basis for adapter module" in line and "estimate-subspace" in line


# Compact subspace folders to publish (the Hub issue): float16 bases, upcast on read.


def test_float16_storage_halves_the_folder_and_barely_moves_the_correction(models, subspace, tmp_path):
    base, aligned, adapter = models
    compact = tmp_path / "compact"
    estimate = ("estimate-subspace", base, aligned, "--adapter", adapter, "--rank", RANK, "--out", compact)
    assert_ok(run_cli(*estimate, "--storage", "float16"))
    assert json.loads((compact / "subspace.json").read_text())["storage"] == "float16"
    size = lambda folder: sum(path.stat().st_size for path in (folder / "bases").iterdir())  # noqa: E731
    assert size(compact) < 0.6 * size(subspace)
    from csulora_cli.subspace.store import read_basis_file

    for path in (compact / "bases").iterdir():
        basis, _ = read_basis_file(path)
        full, _ = read_basis_file(subspace / "bases" / path.name)
        assert basis.basis.dtype == torch.float32  # upcast on read
        assert torch.allclose(basis.basis, full.basis, atol=1e-3)
    outputs = {}
    for name, folder in (("float32", subspace), ("float16", compact)):
        outputs[name] = tmp_path / name
        assert_ok(run_cli("correct", adapter, "--subspace", folder, "--out", outputs[name]))
    for key, full in load_tensors(outputs["float32"] / "adapter_model.safetensors").items():
        small = load_tensors(outputs["float16"] / "adapter_model.safetensors")[key]
        assert torch.allclose(small, full, rtol=1e-2, atol=1e-3 * float(full.abs().max())), key
    # One folder holds one storage: joining it with the other is refused, not mixed.
    line = assert_one_line_error(run_cli(*estimate), 1, str(compact))
    assert "--overwrite" in line
    line = assert_one_line_error(run_cli("estimate-subspace", base, aligned, "--storage", "float16"), 2, "--out")
