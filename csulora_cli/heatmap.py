"""A detection statistic per transformer block and module type, drawn as a heatmap PNG (`inspect --plot`).

`heatmap_grid` arranges the scores (plain data, no plotting); `write_heatmap` draws them with matplotlib,
an optional extra imported only here and only when a plot is asked for.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_atomically
from .correction.statistics import STATISTICS, AdapterDetection
from .errors import CsuloraError

# The block index of PEFT module names across model families: Llama `layers.3`, GPT-2 `h.3`, BERT `layer.3`.
_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")
OUTSIDE_BLOCKS = "other"  # the column of modules outside the numbered blocks (an output head, embeddings)
INSTALL_HINT = "pip install 'csulora[bench]'"


def block_and_kind(module_name: str) -> tuple[str, str]:
    """("3", "q_proj") for `base_model.model.model.layers.3.self_attn.q_proj`; ("other", name) outside blocks."""
    kind = module_name.rsplit(".", 1)[-1]
    found = _BLOCK.search(module_name)
    return (found[1] if found else OUTSIDE_BLOCKS), kind


@dataclass(frozen=True)
class HeatmapGrid:
    """values[row][column]: the statistic of module type `kinds[row]` in block `blocks[column]` (NaN: none)."""

    statistic: str
    kinds: tuple[str, ...]
    blocks: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]


def heatmap_grid(detection: AdapterDetection, statistic: str) -> HeatmapGrid:
    """Module types in the order the adapter first names them; blocks in numeric order, `other` last.

    Several modules in one cell (two heads of one type in a block) are pooled as one vector, like totals.
    """
    if statistic not in STATISTICS:
        raise CsuloraError(f"unknown statistic {statistic!r}; choose from {', '.join(STATISTICS)}", parameter="gate")
    cells: dict[tuple[str, str], list] = {}
    kinds: list[str] = []
    for module in detection.modules:
        block, kind = block_and_kind(module.module)
        if kind not in kinds:
            kinds.append(kind)
        cells.setdefault((kind, block), []).append(module)
    numbered = sorted({block for _, block in cells if block != OUTSIDE_BLOCKS}, key=int)
    blocks = numbered + ([OUTSIDE_BLOCKS] if any(block == OUTSIDE_BLOCKS for _, block in cells) else [])

    def value(kind: str, block: str) -> float:
        members = cells.get((kind, block))
        score = None if members is None else AdapterDetection(tuple(members)).score(statistic)
        return math.nan if score is None else score

    values = tuple(tuple(value(kind, block) for block in blocks) for kind in kinds)
    return HeatmapGrid(statistic, tuple(kinds), tuple(blocks), values)


def write_heatmap(grid: HeatmapGrid, path: Path, title: str | None = None) -> None:
    """Draw `grid` to `path` (PNG, written atomically); a CsuloraError with the install hint without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CsuloraError(
            "drawing {plot} needs matplotlib, which is not installed", parameter="plot", hint=INSTALL_HINT
        ) from None
    statistic = STATISTICS[grid.statistic]
    width = max(4.0, 1.2 + 0.35 * len(grid.blocks))
    height = max(2.5, 1.0 + 0.35 * len(grid.kinds))
    figure, axes = plt.subplots(figsize=(width, height), dpi=110)
    finite = [v for row in grid.values for v in row if math.isfinite(v)]
    if grid.statistic == "reversal":
        # Diverging around 0: red where the update moves the weights back toward the base model.
        limit = max((abs(v) for v in finite), default=1.0) or 1.0
        image = axes.imshow(grid.values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    else:
        image = axes.imshow(grid.values, cmap="magma" if statistic.suspicious == "high" else "magma_r", aspect="auto")
    axes.set_xticks(range(len(grid.blocks)), grid.blocks, fontsize=7)
    axes.set_yticks(range(len(grid.kinds)), grid.kinds, fontsize=7)
    axes.set_xlabel("block")
    if len(grid.blocks) * len(grid.kinds) <= 160:
        for row, values in enumerate(grid.values):
            for column, v in enumerate(values):
                if math.isfinite(v):
                    # A pale box keeps the figure legible on the darkest and the lightest cells alike.
                    box = {"facecolor": "white", "alpha": 0.6, "linewidth": 0, "pad": 0.8}
                    axes.text(column, row, f"{v:.2g}", ha="center", va="center", fontsize=6, bbox=box)
    figure.colorbar(image, ax=axes, label=f"{grid.statistic} ({statistic.suspicious} is suspicious)")
    axes.set_title(title or grid.statistic, fontsize=9)
    figure.tight_layout()
    image_bytes = io.BytesIO()
    figure.savefig(image_bytes, format="png")
    plt.close(figure)
    write_atomically(path, image_bytes.getvalue())
