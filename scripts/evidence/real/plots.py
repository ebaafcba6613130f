"""The two committed plots: attack success against task accuracy per setting, and the detection ROC.

matplotlib is optional: without it both functions return False and the JSON and table are still written.
"""

from __future__ import annotations

from pathlib import Path

from . import detect


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


JUDGES = (("asr_keyword", "keyword judge"), ("asr_likelihood", "likelihood judge"))
MARKERS = "os^vD<>pP*hX"


def plot_frontier(summary: dict, path: Path) -> bool:
    """One row per poisoned mix, one panel per judge: ASR (x) against task accuracy (y), one marker per
    setting, error bars the spread over seeds."""
    plt = _pyplot()
    mixes = [front["adapter"] for front in summary["frontier"]]
    if plt is None or not mixes:
        return False
    figure, grid = plt.subplots(len(mixes), 2, figsize=(12, 5.0 * len(mixes)), dpi=110, sharey=True, squeeze=False)
    for mix, axes in zip(mixes, grid, strict=True):
        for panel, (judge, title) in zip(axes, JUDGES, strict=True):
            _frontier_panel(panel, summary["corrections"][mix], judge, plt.cm.tab20.colors)
            panel.set_xlabel(f"attack success rate ({title})")
            panel.set_title(f"{mix}: {title}")
        axes[0].set_ylabel("task accuracy (exact match, held out)")
    grid[0][1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle("SmolLM2-135M: corrections of a poisoned LoRA (dashed: 90% of its task; dotted: half its ASR)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def _frontier_panel(panel, table: dict, judge: str, colours) -> None:
    """One marker per setting of one mix under one judge, and the goal's two lines from the uncorrected row."""
    for index, (setting, entry) in enumerate(table.items()):
        panel.errorbar(
            entry[judge]["mean"],
            entry["task_accuracy"]["mean"],
            xerr=entry[judge]["sd"],
            yerr=entry["task_accuracy"]["sd"],
            fmt=MARKERS[index % len(MARKERS)],
            color=colours[index % len(colours)],
            label=setting,
            markersize=8 if setting == "none" else 6,
            capsize=2,
        )
    reference = table.get("none")
    if reference:
        panel.axhline(0.9 * reference["task_accuracy"]["mean"], color="grey", linestyle="--", linewidth=1)
        panel.axvline(0.5 * reference[judge]["mean"], color="grey", linestyle=":", linewidth=1)
    panel.set_xlim(-0.03, 1.03)
    panel.set_ylim(-0.03, 1.03)


def plot_roc(results: dict, path: Path) -> bool:
    plt = _pyplot()
    if plt is None or not results["adapters"]:
        return False
    figure, axes = plt.subplots(figsize=(6, 5.5), dpi=110)
    for name in detect.SUSPICIOUS_HIGH:
        rows = detect.scored(results["adapters"], name)
        if not rows:
            continue
        xs, ys = zip(*detect.roc_points(name, rows), strict=True)
        result = detect.evaluate(name, rows)
        axes.plot(
            xs,
            ys,
            label=f"{name} ({result['suspicious']}): AUROC {result['auroc_mean']:.2f} ± {result['auroc_sd']:.2f}",
            linestyle="-" if name in detect.PROBE_STATISTICS else "--",
        )
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("false-alarm rate (benign adapters flagged)")
    axes.set_ylabel("share of adapters trained with harmful data caught")
    axes.set_title("inspect statistics and the probe, SmolLM2-135M adapters (seeds pooled)", fontsize=10)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def plot_restore_frontier(summary: dict, path: Path) -> bool:
    """One row per corrected group, one panel per judge: ASR (x) against task accuracy (y; perplexity for an
    adapter without a task). A line per family through its validation settings (random controls dashed, the
    scale line black), and the held-out rows marked with stars (the scale line's held-out points joined)."""
    plt = _pyplot()
    groups = summary["groups"]
    if plt is None or not groups:
        return False
    figure, grid = plt.subplots(len(groups), 2, figsize=(13, 5.0 * len(groups)), dpi=110, squeeze=False)
    colours = plt.cm.tab10.colors
    for (group, entry), axes in zip(groups.items(), grid, strict=True):
        y_measure = "task_accuracy" if entry["task"] else "perplexity"
        families = list(dict.fromkeys(e["family"] for e in entry["validation"].values()))
        for panel, (judge, title) in zip(axes, JUDGES, strict=True):
            for index, family in enumerate(families):
                _restore_line(panel, entry, family, judge, y_measure, colours[index % len(colours)])
            panel.set_xlabel(f"attack success rate ({title})")
            panel.set_ylabel("task accuracy (exact match)" if entry["task"] else "perplexity of benign answers")
            panel.set_title(f"{group}: {title}", fontsize=10)
            panel.set_xlim(-0.03, 1.03)
        axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle("SmolLM2-135M: correction families on validation (lines) and held-out (stars)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def _restore_line(panel, entry: dict, family: str, judge: str, y_measure: str, colour) -> None:
    def xy(table: dict, settings: list[str]) -> list[tuple[float, float]]:
        return [(table[s][judge]["mean"], table[s][y_measure]["mean"]) for s in settings]

    validation = [s for s, e in entry["validation"].items() if e["family"] == family]
    heldout = [s for s, e in entry["heldout"].items() if e["family"] == family]
    scale = family == "scale"
    if scale and "none" in entry["validation"]:
        validation = ["none", *validation]
    colour = "black" if scale else colour
    style = "--" if "control" in family else "-"
    points = sorted(xy(entry["validation"], validation), key=lambda p: p[1])
    if points:
        xs, ys = zip(*points, strict=True)
        marker = "x" if family == "none" else "o"
        panel.plot(
            xs,
            ys,
            linestyle=style if len(points) > 1 else "",
            marker=marker,
            color=colour,
            label=family,
            linewidth=2.0 if scale else 1.0,
            markersize=4,
        )
    if heldout:
        if scale and "none" in entry["heldout"]:
            heldout = ["none", *heldout]
        held = sorted(xy(entry["heldout"], heldout), key=lambda p: p[1])
        xs, ys = zip(*held, strict=True)
        panel.plot(
            xs,
            ys,
            linestyle=":" if scale else "",
            marker="*",
            markersize=11,
            color=colour,
            markeredgecolor="black",
            label=f"{family} (held-out)",
        )
