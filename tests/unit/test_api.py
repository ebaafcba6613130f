"""The Python API: batch correction shares bases, no-signal modules, validation before work."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

import csulora_cli.subspace.estimating as bases_module
from csulora_cli.api import CorrectRequest, InspectRequest, SubspaceSpec, correct, inspect
from csulora_cli.correction.params import CorrectionParams
from csulora_cli.errors import CsuloraError, OutputExistsError, UsageError
from csulora_cli.subspace.estimate import EstimationParams
from csulora_cli.testing.builders import (
    TinyLlama,
    make_adapter_factors,
    make_model_pair,
    write_adapter,
    write_checkpoint,
)

PARAMS = EstimationParams(max_rank=8)


def test_batch_estimates_each_basis_once(demo_models, tmp_path, monkeypatch):
    base, aligned, demo_adapter = demo_models
    adapter, second = tmp_path / "runs" / "adapter", tmp_path / "runs" / "second"
    shutil.copytree(demo_adapter, adapter)
    shutil.copytree(demo_adapter, second)
    calls = []
    original = bases_module.estimate_basis
    monkeypatch.setattr(bases_module, "estimate_basis", lambda *a, **k: calls.append(1) or original(*a, **k))
    spec = SubspaceSpec(base=str(base), aligned=str(aligned), estimation=PARAMS, cache_dir=tmp_path / "c")
    reports = correct(CorrectRequest(adapters=(adapter, second), out_dir=tmp_path / "out", subspace=spec))
    modules = len(reports[0].modules)
    assert len(calls) == modules
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter", "second"]
    first_b = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    second_b = load_file(str(tmp_path / "out" / "second" / "adapter_model.safetensors"))
    assert all(torch.equal(first_b[key], second_b[key]) for key in first_b)


def test_unchanged_weight_is_reported_as_no_signal_and_kept(tmp_path):
    shape = TinyLlama(layers=1)
    base_weights, aligned_weights = make_model_pair(shape)
    key = "model.layers.0.self_attn.q_proj.weight"
    aligned_weights[key] = base_weights[key].clone()
    write_checkpoint(tmp_path / "base", base_weights)
    write_checkpoint(tmp_path / "aligned", aligned_weights)
    write_adapter(tmp_path / "adapter", make_adapter_factors(shape, ("q_proj", "v_proj")), {})
    spec = SubspaceSpec(base=str(tmp_path / "base"), aligned=str(tmp_path / "aligned"), estimation=PARAMS)
    report = correct(CorrectRequest(adapters=(tmp_path / "adapter",), out=tmp_path / "out", subspace=spec))[0]
    status = {module.module: module.status for module in report.modules}
    assert status == {"model.layers.0.self_attn.q_proj": "no_signal", "model.layers.0.self_attn.v_proj": "corrected"}
    before = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    b_key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    assert torch.equal(before[b_key], after[b_key])
    no_signal = next(m for m in report.modules if m.status == "no_signal")
    assert no_signal.subspace_rank == 0 and no_signal.figures.removed_energy == 0.0


def test_method_none_and_lambda_zero_leave_the_update(demo_models, tmp_path):
    base, aligned, adapter = demo_models
    spec = SubspaceSpec(base=str(base), aligned=str(aligned), estimation=PARAMS)
    for method, params in (("none", CorrectionParams()), ("csulora", CorrectionParams(lambda_=0.0))):
        report = correct(
            CorrectRequest(adapters=(adapter,), out=None, dry_run=True, subspace=spec, method=method, correction=params)
        )[0]
        assert report.totals.attenuation_fraction < 1e-10
        assert report.totals.cosine == pytest.approx(1.0)


def test_existing_output_refused_before_any_estimation(demo_models, tmp_path, monkeypatch):
    base, aligned, adapter = demo_models
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "taken.txt").write_text("an empty folder is free; this one is not\n")
    monkeypatch.setattr(bases_module, "estimate_basis", lambda *a, **k: pytest.fail("estimated before refusing"))
    spec = SubspaceSpec(base=str(base), aligned=str(aligned), estimation=PARAMS)
    with pytest.raises(OutputExistsError):
        correct(CorrectRequest(adapters=(adapter,), out=tmp_path / "out", subspace=spec))


def test_inspect_gate_needs_a_subspace(demo_models):
    _, _, adapter = demo_models
    # The library names the parameter; only the CLI spells it as a flag (--fail-above).
    with pytest.raises(UsageError, match="^fail_above: needs a subspace: pass subspace DIR or base BASE$") as raised:
        inspect(InspectRequest(adapter=adapter, fail_above=0.5))
    assert raised.value.parameter == "fail_above"
    summaries = inspect(InspectRequest(adapter=adapter)).summaries
    assert {s.rank for s in summaries} == {8} and all(s.scale == 2.0 for s in summaries)


@pytest.mark.parametrize(("which", "value"), [("base", float("nan")), ("aligned", float("inf"))])
def test_non_finite_model_weight_is_named(tmp_path, which, value):
    shape = TinyLlama(layers=1)
    weights = dict(zip(("base", "aligned"), make_model_pair(shape), strict=True))
    key = "model.layers.0.self_attn.q_proj.weight"
    weights[which][key][5, 3] = value  # one entry, in a row the base-energy sample skips
    for name, tensors in weights.items():
        write_checkpoint(tmp_path / name, tensors)
    write_adapter(tmp_path / "adapter", make_adapter_factors(shape, ("q_proj",)), {})
    spec = SubspaceSpec(base=str(tmp_path / "base"), aligned=str(tmp_path / "aligned"), estimation=PARAMS)
    with pytest.raises(CsuloraError, match=f"{key} holds NaN or Inf") as error:
        correct(CorrectRequest(adapters=(tmp_path / "adapter",), out=tmp_path / "out", subspace=spec))
    assert str(tmp_path / which) in str(error.value)
    assert not (tmp_path / "out").exists()
