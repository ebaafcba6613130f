"""The detection heatmap: its grid (blocks x module types) and the PNG, with and without matplotlib."""

from __future__ import annotations

import math
import sys

import pytest

from csulora_cli.correction.statistics import AdapterDetection, DetectionEnergies, ModuleDetection
from csulora_cli.errors import CsuloraError
from csulora_cli.heatmap import INSTALL_HINT, block_and_kind, heatmap_grid, write_heatmap


def energies(update: float, inside: float, inner: float = 0.0) -> DetectionEnergies:
    """A module whose enrichment is (inside / update) / 0.25 and whose reversal is inner / sqrt(update)."""
    return DetectionEnergies(
        update_energy=update,
        inside_energy=inside,
        chance_inside_energy=0.25 * update,
        weighted_inside_energy=inside,
        chance_weighted_energy=0.25 * update,
        displacement_energy=1.0,
        captured_displacement_energy=1.0,
        displacement_inner=inner,
        reversing_energy=0.0,
    )


PREFIX = "base_model.model.model.layers"
DETECTION = AdapterDetection(
    (
        ModuleDetection(f"{PREFIX}.0.self_attn.q_proj", energies(1.0, 0.5, -0.5)),
        ModuleDetection(f"{PREFIX}.0.mlp.down_proj", energies(4.0, 1.0, 1.0)),
        ModuleDetection(f"{PREFIX}.10.self_attn.q_proj", energies(1.0, 0.25)),
        ModuleDetection(f"{PREFIX}.2.self_attn.q_proj", energies(2.0, 0.0)),
        ModuleDetection("base_model.model.lm_head", energies(1.0, 1.0)),
    )
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"{PREFIX}.3.self_attn.q_proj", ("3", "q_proj")),
        ("base_model.model.transformer.h.11.attn.c_attn", ("11", "c_attn")),
        ("base_model.model.bert.encoder.layer.4.attention.self.query", ("4", "query")),
        ("base_model.model.lm_head", ("other", "lm_head")),
    ],
)
def test_block_and_kind_read_peft_module_names(name, expected):
    assert block_and_kind(name) == expected


def test_the_grid_puts_each_module_in_its_block_and_type():
    grid = heatmap_grid(DETECTION, "enrichment")
    assert grid.kinds == ("q_proj", "down_proj", "lm_head")
    assert grid.blocks == ("0", "2", "10", "other")  # numeric order, not "0", "10", "2"
    q_proj, down_proj, lm_head = grid.values
    assert q_proj[:3] == (2.0, 0.0, 1.0) and math.isnan(q_proj[3])
    assert down_proj[0] == 1.0 and all(math.isnan(v) for v in down_proj[1:])
    assert lm_head[3] == 4.0
    reversal = heatmap_grid(DETECTION, "reversal").values
    assert reversal[0][0] == pytest.approx(-0.5) and reversal[1][0] == pytest.approx(0.5)


def test_modules_sharing_a_cell_are_pooled_as_one_vector():
    pair = AdapterDetection(
        (
            ModuleDetection(f"{PREFIX}.1.attn.heads.q_proj", energies(1.0, 1.0)),
            ModuleDetection(f"{PREFIX}.1.cross.q_proj", energies(3.0, 0.0)),
        )
    )
    assert heatmap_grid(pair, "enrichment").values == ((1.0,),)  # (1 + 0) / (0.25 * 4)


def test_an_unknown_statistic_is_refused_by_name():
    with pytest.raises(CsuloraError, match="choose from off_share, enrichment"):
        heatmap_grid(DETECTION, "entropy")


def test_write_heatmap_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plots" / "reversal.png"
    for statistic in ("reversal", "enrichment"):
        write_heatmap(heatmap_grid(DETECTION, statistic), path, title="adapter")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["reversal.png"]  # no temporary left behind


def test_without_matplotlib_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import matplotlib` raise ImportError, as on a machine without it.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    path = tmp_path / "map.png"
    with pytest.raises(CsuloraError) as raised:
        write_heatmap(heatmap_grid(DETECTION, "enrichment"), path)
    assert raised.value.parameter == "plot" and INSTALL_HINT in str(raised.value)
    assert not path.exists() and not list(tmp_path.iterdir())
