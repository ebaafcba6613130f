"""`detect_adapter`: an adapter's detection sums from real files agree with the report and a dense reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from csulora_cli.api import InspectRequest, SubspaceSpec, detect_adapter, inspect
from csulora_cli.subspace.estimate import EstimationParams


def checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors |= load_file(str(folder / shard))
    return tensors


def test_detection_matches_the_dense_reference_and_the_report(demo_models, tmp_path):
    base, aligned, adapter = demo_models
    # Every triplet stored (max_rank covers the widest module) and exact: V_K is V itself.
    spec = SubspaceSpec(
        base=str(base), aligned=str(aligned), estimation=EstimationParams(max_rank=128, exact=True), energy=0.9
    )
    detection = detect_adapter(adapter, spec)

    factors = load_file(str(adapter / "adapter_model.safetensors"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    base_weights, aligned_weights = checkpoint(base), checkpoint(aligned)
    names = sorted(key.removesuffix(".lora_A.weight") for key in factors if key.endswith(".lora_A.weight"))
    assert sorted(m.module for m in detection.modules) == [name.removeprefix("base_model.model.") for name in names]
    inner = update_energy = displacement_energy = 0.0
    for module in detection.modules:
        prefix = f"base_model.model.{module.module}"
        update = scale * factors[f"{prefix}.lora_B.weight"].double() @ factors[f"{prefix}.lora_A.weight"].double()
        key = f"{module.module}.weight"
        displacement = aligned_weights[key].double() - base_weights[key].double()
        expected = float((update * displacement).sum()) / float(update.norm() * displacement.norm())
        assert module.score("reversal") == pytest.approx(expected, abs=1e-5)
        inner += float((update * displacement).sum())
        update_energy += float(update.square().sum())
        displacement_energy += float(displacement.square().sum())
    assert detection.score("reversal") == pytest.approx(inner / (update_energy * displacement_energy) ** 0.5, abs=1e-5)
    # The off-subspace share is the report's own figure, module by module and in total.
    report = inspect(InspectRequest(adapter=adapter, subspace=spec, method="none")).report
    by_name = {m.module: m for m in detection.modules}
    for module_report in report.modules:
        assert by_name[module_report.module].score("off_share") == pytest.approx(
            module_report.figures.off_subspace_fraction, abs=1e-5
        )
    assert detection.score("off_share") == pytest.approx(report.totals.off_subspace_fraction, abs=1e-5)
    # The demo writes half of each update along V's top directions: far above chance.
    assert detection.score("enrichment") > 2.0
