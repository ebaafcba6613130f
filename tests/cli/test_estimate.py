"""`csulora estimate-subspace` end to end, in process through typer's CliRunner (tests/helpers.py run_cli,
docs/cli.md)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from csulora_cli.testing.builders import TinyLlama, build_demo, make_model_pair, write_checkpoint
from tests.helpers import (
    assert_ok,
    assert_one_line_error,
    energy_rank,
    exact_subspace,
    load_tensors,
    model_tensor,
    run_cli,
    snapshot,
)

SHAPE = TinyLlama()
TWO_D_KEYS = {key for key, dims in SHAPE.weight_shapes().items() if len(dims) == 2}
TRANSPOSED_KEYS = {"model.embed_tokens.weight"}  # an Embedding's output space is its second axis
RANK = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("estimate-models"))


@pytest.fixture(scope="module")
def adapter_modules(models):
    _, _, adapter = models
    keys = load_tensors(adapter / "adapter_model.safetensors")
    return {
        key.removeprefix("base_model.model.").removesuffix(".lora_A.weight") + ".weight"
        for key in keys
        if key.endswith(".lora_A.weight")
    }


@pytest.fixture(scope="module")
def portable(models, tmp_path_factory):
    """estimate-subspace --adapter --out: the portable folder a CI job uploads."""
    base, aligned, adapter = models
    root = tmp_path_factory.mktemp("portable")
    out = root / "subspace"
    result = run_cli(
        "estimate-subspace",
        base,
        aligned,
        "--adapter",
        adapter,
        "--rank",
        RANK,
        "--out",
        out,
        "--json",
        env={"CSULORA_CACHE": root / "cache"},
    )
    return assert_ok(result), out


def subspace_files(folder) -> dict[str, tuple[dict, dict]]:
    """The bases of a portable subspace folder by base key: (metadata record, tensors)."""
    found = {}
    for path in sorted((folder / "bases").rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            record = json.loads(handle.metadata()["csulora"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        assert record["module"] not in found, f"two files for {record['module']}"
        found[record["module"]] = (record, tensors)
    return found


def by_module(payload: dict) -> dict[str, dict]:
    """Module records of `estimate-subspace --json` by weight key, with their subspace figures alongside."""
    return {entry["base_key"]: entry | entry["subspace"] for entry in payload["subspace"]["modules"]}


def test_default_module_set_then_cache_hit(models, tmp_path):
    """No --modules/--adapter: every 2-D weight; the second run takes every basis from the cache."""
    base, aligned, _ = models
    cache = tmp_path / "cache"
    first = assert_ok(
        run_cli(
            "estimate-subspace",
            base,
            aligned,
            "--rank",
            RANK,
            "--device",
            "cpu",
            "--json",
            env={"CSULORA_CACHE": cache},
        )
    )
    payload = first.json()
    assert payload["subspace"]["location"] == str(cache)  # the default cache is $CSULORA_CACHE
    modules = by_module(payload)
    assert set(modules) == TWO_D_KEYS
    for key, entry in modules.items():
        assert entry["transposed"] is (key in TRANSPOSED_KEYS)
        assert entry["from_cache"] is False
        assert entry["has_signal"] is True
        assert entry["stored_rank"] == RANK
        assert 1 <= entry["k"] <= RANK
        assert 0.99 <= entry["captured_energy"] <= 1.0 + 1e-9
        assert entry["displacement_energy"] > 0
    cached_files = sorted((cache / "bases").rglob("*.safetensors"))
    assert len(cached_files) == len(TWO_D_KEYS)
    mtimes = {path: path.stat().st_mtime_ns for path in cached_files}

    second = assert_ok(
        run_cli("estimate-subspace", base, aligned, "--rank", RANK, "--json", "--cache-dir", cache, "--device", "cpu")
    )
    again = by_module(second.json())
    assert set(again) == TWO_D_KEYS
    assert all(entry["from_cache"] is True for entry in again.values())
    for key, entry in again.items():
        for field in ("k", "stored_rank", "captured_energy", "displacement_energy", "transposed"):
            assert entry[field] == modules[key][field], (key, field)
    # No recompute: the cache files were not rewritten.
    assert sorted((cache / "bases").rglob("*.safetensors")) == cached_files
    assert {path: path.stat().st_mtime_ns for path in cached_files} == mtimes


def test_default_module_set_skips_identical_weights(tmp_path):
    base_weights, aligned_weights = make_model_pair(SHAPE, seed=3)
    aligned_weights["lm_head.weight"] = base_weights["lm_head.weight"].clone()
    write_checkpoint(tmp_path / "base", base_weights)
    write_checkpoint(tmp_path / "aligned", aligned_weights)
    result = assert_ok(run_cli("estimate-subspace", tmp_path / "base", tmp_path / "aligned", "--rank", RANK, "--json"))
    assert set(by_module(result.json())) == TWO_D_KEYS - {"lm_head.weight"}


def test_modules_regex_human_output(models, tmp_path):
    base, aligned, _ = models
    result = assert_ok(
        run_cli(
            "estimate-subspace",
            base,
            aligned,
            "--modules",
            r"self_attn\.q_proj",
            "--rank",
            RANK,
            "--cache-dir",
            tmp_path / "cache",
        )
    )
    # A table on stdout naming each selected module (as correct and inspect name it) and nothing else,
    # its columns named after the JSON fields they show.
    assert "model.layers.0.self_attn.q_proj" in result.stdout
    assert "model.layers.1.self_attn.q_proj" in result.stdout
    assert "k_proj" not in result.stdout and "mlp" not in result.stdout
    for column in ("stored_rank", "captured_energy", "displacement_energy", "from_cache"):
        assert column in result.stdout
    assert "subspace:" in result.stdout
    assert not result.stdout.lstrip().startswith("{")


def test_adapter_selects_its_modules_and_out_folder(portable, adapter_modules, models):
    """--adapter picks exactly the adapter's targets; --out writes a portable folder with subspace.json."""
    result, out = portable
    payload = result.json()
    assert payload["subspace"]["location"] == str(out)
    modules = by_module(payload)
    assert set(modules) == adapter_modules
    assert all(entry["transposed"] is False for entry in modules.values())

    manifest = json.loads((out / "subspace.json").read_text())
    assert manifest["schema_version"] == 2  # 2: basis files also hold the right singular vectors
    assert manifest["estimation"]["max_rank"] == RANK
    stored = subspace_files(out)
    assert set(stored) == adapter_modules
    base, aligned, _ = models
    for key, (record, tensors) in stored.items():
        assert record["transposed"] is False
        basis = tensors["basis"].double()
        assert basis.shape == (model_tensor(base, key).shape[0], RANK)
        assert torch.allclose(basis.T @ basis, torch.eye(RANK, dtype=torch.float64), atol=1e-5)
        # The stored basis spans the exact top-k subspace of V (k at the default energy 0.99).
        left, singular_values, total = exact_subspace(base, aligned, key)
        assert record["total_energy"] == pytest.approx(total, rel=1e-5)
        k = energy_rank(singular_values, total, 0.99, RANK)
        assert modules[key]["k"] == k
        exact_k, estimated_k = left[:, :k], basis[:, :k]
        # sin of the largest principal angle between the estimated and exact top-k subspaces
        residual = estimated_k - exact_k @ (exact_k.T @ estimated_k)
        assert torch.linalg.matrix_norm(residual, ord=2) < 1e-3
    # Only the manifest, the bases and the job record: nothing else (no cache) inside a portable folder.
    assert {path.split("/")[0] for path in snapshot(out)} == {"subspace.json", "bases", "jobs"}


def test_rank_and_energy(models, tmp_path):
    base, aligned, _ = models
    key = "model.layers.0.mlp.gate_proj.weight"
    _, singular_values, total = exact_subspace(base, aligned, key)
    common = ("estimate-subspace", base, aligned, "--modules", r"layers\.0\.mlp\.gate_proj", "--json")

    low_energy = by_module(assert_ok(run_cli(*common, "--rank", RANK, "--energy", "0.5")).json())[key]
    assert low_energy["stored_rank"] == RANK
    assert low_energy["k"] == energy_rank(singular_values, total, 0.5, RANK)
    assert low_energy["captured_energy"] >= 0.5

    low_rank = by_module(
        assert_ok(run_cli(*common, "--rank", "2", "--energy", "0.99", "--cache-dir", tmp_path / "c")).json()
    )[key]
    assert low_rank["stored_rank"] == 2
    assert low_rank["k"] == 2 == energy_rank(singular_values, total, 0.99, 2)
    assert low_rank["captured_energy"] < 0.99
    assert low_energy["k"] < energy_rank(singular_values, total, 0.99, RANK)


def test_exact_svd(models, tmp_path):
    base, aligned, _ = models
    key = "model.layers.1.mlp.up_proj.weight"
    out = tmp_path / "exact"
    assert_ok(
        run_cli(
            "estimate-subspace",
            base,
            aligned,
            "--modules",
            r"layers\.1\.mlp\.up_proj",
            "--rank",
            RANK,
            "--exact",
            "--out",
            out,
        )
    )
    manifest = json.loads((out / "subspace.json").read_text())
    assert manifest["estimation"]["exact"] is True
    stored = subspace_files(out)
    assert list(stored) == [key]
    _, tensors = stored[key]
    _, singular_values, _ = exact_subspace(base, aligned, key)
    assert torch.allclose(
        tensors["singular_values"].double(), singular_values[:RANK], rtol=0, atol=1e-5 * float(singular_values[0])
    )


def test_seed_is_part_of_the_cache_key_and_cache_dir_wins(models, tmp_path):
    base, aligned, _ = models
    cache, environment_cache = tmp_path / "cache", tmp_path / "env-cache"
    common = ("estimate-subspace", base, aligned, "--modules", r"layers\.0\.self_attn\.q_proj", "--rank", RANK)
    common += ("--json", "--cache-dir", cache)
    environment = {"CSULORA_CACHE": environment_cache}
    first = assert_ok(run_cli(*common, "--seed", "0", env=environment)).json()
    assert first["subspace"]["location"] == str(cache)  # --cache-dir wins over $CSULORA_CACHE
    out = tmp_path / "seeded"
    second = assert_ok(run_cli(*common, "--seed", "7", "--out", out, env=environment)).json()
    assert second["subspace"]["location"] == str(out)
    assert all(entry["from_cache"] is False for entry in first["subspace"]["modules"])
    assert all(entry["from_cache"] is False for entry in second["subspace"]["modules"])  # another seed: another basis
    assert len(list((cache / "bases").rglob("*.safetensors"))) == 2
    assert not list(environment_cache.rglob("*.safetensors"))
    assert json.loads((out / "subspace.json").read_text())["estimation"]["seed"] == 7


def test_out_refused_without_overwrite_and_overwrite_keeps_the_users_files(models, tmp_path):
    base, aligned, _ = models
    out = tmp_path / "subspace"
    out.mkdir()
    (out / "keep.txt").write_text("not a subspace")
    before = snapshot(tmp_path)
    common = (
        "estimate-subspace",
        base,
        aligned,
        "--modules",
        "k_proj",
        "--rank",
        RANK,
        "--out",
        out,
        "--cache-dir",
        tmp_path.parent / f"{tmp_path.name}-cache",
    )
    refused = run_cli(*common)
    assert_one_line_error(refused, 1, "--overwrite", str(out))
    assert snapshot(tmp_path) == before

    # --overwrite replaces only a folder csulora wrote: keep.txt is the user's, so it is refused.
    assert_one_line_error(run_cli(*common, "--overwrite"), 1, "keep.txt", str(out))
    assert snapshot(tmp_path) == before
    (out / "keep.txt").unlink()
    (out / "subspace.json").write_text('{"schema_version": 1}')  # a subspace of another estimation
    assert_ok(run_cli(*common, "--overwrite"))
    assert json.loads((out / "subspace.json").read_text())["schema_version"] == 2
    assert set(subspace_files(out)) == {f"model.layers.{i}.self_attn.k_proj.weight" for i in range(SHAPE.layers)}
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".csulora-tmp")]


def test_config_file_values_used_and_flags_win(models, tmp_path):
    base, aligned, _ = models
    cache = tmp_path / "config-cache"
    config = tmp_path / "estimate.yaml"
    config.write_text(f"rank: 5\nmodules: 'layers\\.0\\.self_attn\\.o_proj'\njson: true\ncache-dir: {cache}\n")
    from_config = assert_ok(run_cli("estimate-subspace", base, aligned, "--config", config))
    payload = from_config.json()  # json: true came from the file
    assert payload["subspace"]["location"] == str(cache)
    (entry,) = by_module(payload).values()
    assert entry["module"] == "model.layers.0.self_attn.o_proj"
    assert entry["base_key"] == "model.layers.0.self_attn.o_proj.weight"
    assert entry["stored_rank"] == 5

    flag_wins = assert_ok(run_cli("estimate-subspace", base, aligned, "--config", config, "--rank", "6"))
    (entry,) = by_module(flag_wins.json()).values()
    assert entry["stored_rank"] == 6
    assert entry["module"] == "model.layers.0.self_attn.o_proj"
    assert entry["base_key"] == "model.layers.0.self_attn.o_proj.weight"


def test_single_file_checkpoints(tmp_path):
    """A model folder with one model.safetensors (no index) is a source too."""
    base_weights, aligned_weights = make_model_pair(SHAPE, seed=5)
    for name, weights in (("base", base_weights), ("aligned", aligned_weights)):
        (tmp_path / name).mkdir()
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp_path / name / "model.safetensors"))
    result = assert_ok(
        run_cli(
            "estimate-subspace",
            tmp_path / "base",
            tmp_path / "aligned",
            "--modules",
            "down_proj",
            "--rank",
            RANK,
            "--json",
        )
    )
    modules = by_module(result.json())
    assert set(modules) == {f"model.layers.{i}.mlp.down_proj.weight" for i in range(SHAPE.layers)}
    for key, entry in modules.items():
        _, singular_values, total = exact_subspace(tmp_path / "base", tmp_path / "aligned", key)
        assert entry["displacement_energy"] == pytest.approx(total, rel=1e-5)
        assert entry["k"] == energy_rank(singular_values, total, 0.99, RANK)
