"""The basis cache and portable subspace folders: keys, integrity checks, atomic entries."""

from __future__ import annotations

import json

import pytest
import torch

from csulora_cli.api import CorrectRequest, EstimateRequest, SubspaceSpec, correct, estimate_subspace
from csulora_cli.errors import OutputExistsError
from csulora_cli.subspace import store as cache_module
from csulora_cli.subspace.estimate import EstimationParams, SubspaceBasis
from csulora_cli.subspace.folder import (
    SUBSPACE_MANIFEST,
    SUBSPACE_SCHEMA_VERSION,
    SubspaceFolder,
    prepare_subspace_folder,
)
from csulora_cli.subspace.store import (
    BasisCache,
    BasisRequest,
    fingerprint,
    read_basis_file,
    write_basis_file,
)
from tests.helpers import load_tensors


def request(**changes) -> BasisRequest:
    fields = dict(
        base_key="w",
        transposed=False,
        base_content="sha256:a",
        aligned_content="sha256:b",
        params=EstimationParams(max_rank=4),
    )
    return BasisRequest(**(fields | changes))


def a_basis(m=6, k=3, n=5) -> SubspaceBasis:
    q, _ = torch.linalg.qr(torch.randn(m, k))
    w, _ = torch.linalg.qr(torch.randn(n, k))
    return SubspaceBasis(q, torch.tensor([3.0, 2.0, 1.0])[:k], total_energy=14.5, reference_energy=100.0, right=w)


def test_fingerprint_depends_on_everything_a_basis_depends_on():
    keys = {
        fingerprint(request()),
        fingerprint(request(base_key="v")),
        fingerprint(request(transposed=True)),
        fingerprint(request(base_content="sha256:c")),
        fingerprint(request(aligned_content="sha256:c")),
        fingerprint(request(params=EstimationParams(max_rank=5))),
        fingerprint(request(params=EstimationParams(max_rank=4, seed=1))),
        fingerprint(request(params=EstimationParams(max_rank=4, exact=True))),
    }
    assert len(keys) == 8


def test_round_trip_and_damage_is_detected_then_recomputed(tmp_path):
    warnings = []
    cache = BasisCache(tmp_path, warnings.append)
    basis = a_basis()
    cache.save(request(), basis)
    loaded = cache.load(request())
    assert torch.equal(loaded.basis, basis.basis) and loaded.total_energy == basis.total_energy
    assert torch.equal(loaded.right, basis.right) and torch.equal(loaded.singular_values, basis.singular_values)
    path = cache.path_for(request())
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the singular values
    path.write_bytes(bytes(data))
    assert cache.load(request()) is None
    assert "checksum" in warnings[-1]
    path.write_bytes(path.read_bytes()[:40])  # truncated
    assert cache.load(request()) is None
    assert "damaged" in warnings[-1]


def test_entry_filed_under_another_key_is_not_used(tmp_path):
    warnings = []
    cache = BasisCache(tmp_path, warnings.append)
    cache.save(request(), a_basis())
    other = request(base_key="v")
    cache.path_for(other).parent.mkdir(parents=True, exist_ok=True)
    cache.path_for(request()).rename(cache.path_for(other))
    assert cache.load(other) is None
    assert "other inputs" in warnings[-1]


def test_no_temporary_files_are_left_in_the_cache(tmp_path):
    cache = BasisCache(tmp_path, lambda message: None)
    for key in "abc":
        cache.save(request(base_key=key), a_basis())
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".tmp-")]
    assert leftovers == []


def test_estimate_then_correct_reuses_the_cache(demo_models, tmp_path):
    base, aligned, adapter = demo_models
    params = EstimationParams(max_rank=8)
    first = estimate_subspace(
        EstimateRequest(
            base=str(base), aligned=str(aligned), adapter=adapter, estimation=params, cache_dir=tmp_path / "c"
        )
    )
    assert not any(m.from_cache for m in first.modules)
    second = estimate_subspace(
        EstimateRequest(
            base=str(base), aligned=str(aligned), adapter=adapter, estimation=params, cache_dir=tmp_path / "c"
        )
    )
    assert all(m.from_cache for m in second.modules)
    entries = list((tmp_path / "c" / "bases").rglob("*.safetensors"))
    reports = correct(
        CorrectRequest(
            adapters=(adapter,),
            out=None,
            dry_run=True,
            subspace=SubspaceSpec(base=str(base), aligned=str(aligned), estimation=params, cache_dir=tmp_path / "c"),
        )
    )
    assert list((tmp_path / "c" / "bases").rglob("*.safetensors")) == entries
    assert reports[0].modules


def test_portable_folder_gives_the_same_correction_as_the_cache(demo_models, tmp_path):
    base, aligned, adapter = demo_models
    params = EstimationParams(max_rank=8)
    estimate_subspace(
        EstimateRequest(
            base=str(base),
            aligned=str(aligned),
            adapter=adapter,
            estimation=params,
            cache_dir=tmp_path / "c",
            out=tmp_path / "sub",
        )
    )
    folder = SubspaceFolder(tmp_path / "sub")
    for entry in folder.modules.values():
        read_basis_file(entry["path"])  # checksums hold
    via_folder = correct(
        CorrectRequest(
            adapters=(adapter,),
            out=None,
            dry_run=True,
            subspace=SubspaceSpec(subspace=tmp_path / "sub", estimation=params),
        )
    )
    via_cache = correct(
        CorrectRequest(
            adapters=(adapter,),
            out=None,
            dry_run=True,
            subspace=SubspaceSpec(base=str(base), aligned=str(aligned), estimation=params, cache_dir=tmp_path / "c"),
        )
    )
    assert [m.to_dict() | {"base_key": None} for m in via_folder[0].modules] == [
        m.to_dict() | {"base_key": None} for m in via_cache[0].modules
    ]


def test_split_jobs_fill_one_subspace_folder(demo_models, tmp_path):
    """Two jobs with --layers 0 and --layers 1 into one folder give the same folder as one job."""
    base, aligned, adapter = demo_models
    params = EstimationParams(max_rank=8)
    common = dict(base=str(base), aligned=str(aligned), adapter=adapter, estimation=params)
    for layers in ("0", "1"):
        estimate_subspace(
            EstimateRequest(**common, layers=layers, cache_dir=tmp_path / f"c{layers}", out=tmp_path / "split")
        )
    estimate_subspace(EstimateRequest(**common, cache_dir=tmp_path / "c", out=tmp_path / "whole"))
    split, whole = SubspaceFolder(tmp_path / "split"), SubspaceFolder(tmp_path / "whole")
    assert split.keys() == whole.keys() and len(whole.keys()) == 10
    for key in whole.keys():
        assert torch.equal(split.load(key, False).basis, whole.load(key, False).basis)


def test_subspace_folder_of_other_parameters_is_not_joined(demo_models, tmp_path):
    base, aligned, adapter = demo_models
    common = dict(base=str(base), aligned=str(aligned), adapter=adapter, out=tmp_path / "sub")
    estimate_subspace(EstimateRequest(**common, estimation=EstimationParams(max_rank=8)))
    with pytest.raises(OutputExistsError, match="other sources or parameters"):
        estimate_subspace(EstimateRequest(**common, estimation=EstimationParams(max_rank=4)))
    estimate_subspace(EstimateRequest(**common, estimation=EstimationParams(max_rank=4), overwrite=True))
    assert SubspaceFolder(tmp_path / "sub").load("model.layers.0.self_attn.q_proj.weight", False).basis.shape[1] == 4


def test_cache_format_is_part_of_the_fingerprint(monkeypatch):
    """Entries of an older format (no right vectors) are filed under other keys: recomputed, not misread."""
    current = fingerprint(request())
    monkeypatch.setattr(cache_module, "CACHE_FORMAT", cache_module.CACHE_FORMAT - 1)
    assert fingerprint(request()) != current


def test_basis_file_without_right_vectors_still_reads(tmp_path):
    """A portable folder of schema 1 holds no right vectors: it loads with right=None."""
    path = tmp_path / "old.safetensors"
    old = SubspaceBasis(a_basis().basis, a_basis().singular_values, 14.5, 100.0)
    write_basis_file(path, old, {"module": "w", "transposed": False})
    assert "right" not in load_tensors(path)
    loaded, _ = read_basis_file(path)
    assert loaded.right is None and torch.equal(loaded.basis, old.basis)


def test_subspace_folder_of_an_older_schema_is_not_joined(tmp_path):
    folder = tmp_path / "subspace"
    prepare_subspace_folder(folder, {"base": "b"}, EstimationParams(), overwrite=False)
    manifest = json.loads((folder / SUBSPACE_MANIFEST).read_text())
    (folder / SUBSPACE_MANIFEST).write_text(json.dumps(dict(manifest, schema_version=1)))
    (folder / "bases" / "w.safetensors").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        prepare_subspace_folder(folder, {"base": "b"}, EstimationParams(), overwrite=False)
    prepare_subspace_folder(folder, {"base": "b"}, EstimationParams(), overwrite=True)
    assert json.loads((folder / SUBSPACE_MANIFEST).read_text())["schema_version"] == SUBSPACE_SCHEMA_VERSION
