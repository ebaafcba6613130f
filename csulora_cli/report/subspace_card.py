"""The README (model card) of a subspace folder pushed to the Hub (`estimate-subspace --push-to-hub`).

Built with huggingface_hub's `ModelCard`: front matter `tags: [csulora-subspace]` (and `base_model`, the
aligned model's repo, when it came from the Hub), then the sources with their commits or checkpoint
digests, the estimation parameters, `k` and the captured energy of each module, and how to use it.
Plain values in, text out: `pipeline/commands/publish.py` reads them from the folder.
"""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

from .. import __version__

TAG = "csulora-subspace"
CARD_FILE = "README.md"


def render_subspace_card(
    *,
    repo_id: str,
    revision: str,
    sources: dict,
    estimation: dict,
    energy: float,
    modules: list[dict],
    checkpoints: dict[str, list[str]],
) -> str:
    """`modules`: one record per basis (`module`, `transposed`, `k`, `stored_rank`, `captured_energy`,
    `displacement_energy`, `has_signal`); `checkpoints`: the content ids behind the bases, per side."""
    aligned = sources.get("aligned")
    metadata = ModelCardData(tags=[TAG], base_model=_hub_repo(aligned))
    subspace = repo_id if revision == "main" else f"{repo_id}@{revision}"
    lines = [
        f"# Safety subspace of {_name(aligned)}",
        "",
        f"The per-module safety subspace of {_name(aligned)} against its pre-alignment base "
        f"{_name(sources.get('base'))}, estimated by csulora {__version__}: for each weight, the top left "
        "singular vectors of the alignment's displacement `V = W_aligned - W_base`. `csulora correct` rewrites "
        "a LoRA adapter of the aligned model into the closest update inside it.",
        "",
        f"    csulora correct ADAPTER --subspace {subspace} --out-dir safe",
        "",
        "## Sources",
        "",
        f"- **Base model:** {_source_line(sources.get('base'), checkpoints.get('base') or [])}",
        f"- **Aligned model:** {_source_line(aligned, checkpoints.get('aligned') or [])}",
        "",
        "## Estimation",
        "",
        f"- **Parameters:** {estimation_sentence(estimation)}",
        f"- **Energy:** `k` is the smallest rank holding {energy} of each module's displacement energy `‖V‖²` "
        "(at most the stored columns); `correct --energy` chooses another share of the stored columns.",
        "",
        "## Modules",
        "",
        "| module | k | stored_rank | captured_energy | displacement_energy |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(_module_row(module) for module in modules),
    ]
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    return str(card).rstrip("\n") + "\n"


def estimation_sentence(estimation: dict) -> str:
    """The estimation parameters as a sentence, not as `exact False`."""
    if not estimation:
        return "not recorded."
    known = {"max_rank", "exact", "seed", "power_iterations"}
    if estimation.get("exact"):
        how = "exact SVD of each displacement"
    else:
        iterations = estimation.get("power_iterations")
        plural = "" if iterations == 1 else "s"
        how = (
            f"randomized range finder (sketch seed {estimation.get('seed')}, {iterations} power iteration{plural}; "
            "exact SVD was not used)"
        )
    sentence = f"{how}, keeping at most {estimation.get('max_rank')} basis columns per module"
    others = ", ".join(f"{key} {value}" for key, value in estimation.items() if key not in known)
    return f"{sentence} ({others})." if others else f"{sentence}."


def _hub_repo(source) -> str | None:
    return source.get("repo") if isinstance(source, dict) and source.get("kind") == "hub" else None


def _name(source) -> str:
    if not isinstance(source, dict):
        return "an unrecorded model"
    return f"`{source.get('repo') or source.get('path')}`"


def _source_line(source, digests: list[str]) -> str:
    if not isinstance(source, dict):
        return "not recorded"
    if source.get("kind") == "hub":
        return f"`{source.get('repo')}` at commit `{source.get('commit')}`"
    files = ", ".join(f"`{digest}`" for digest in digests) or "not recorded"
    return f"`{source.get('path')}` (checkpoint files {files})"


def _module_row(module: dict) -> str:
    name = module["module"] + (" (transposed)" if module["transposed"] else "")
    displacement = f"{module['displacement_energy']:.4g}" if module["has_signal"] else "no signal"
    return f"| `{name}` | {module['k']} | {module['stored_rank']} | {module['captured_energy']:.4f} | {displacement} |"
