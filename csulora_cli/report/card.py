"""The README (model card) of a corrected adapter folder.

Built with huggingface_hub's `ModelCard`, so the Hub and every tool that reads cards sees what it
expects: the input card's YAML front matter stays at the top (gaining `tags: [csulora]`, and
`base_model` / `library_name` where it lacked them); then a short section saying what csulora did;
then the original card's body. The section sits between markers, so a card corrected again
(`--recorrect`) carries one section, the newest.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .. import __version__
from ..adapters.peft import LoraAdapter
from ..checkpoints.hub.refs import parse_hub_ref
from .records import REPORT_FILE, AdapterReport

TAG = "csulora"
SECTION_BEGIN = "<!-- csulora:begin -->"
SECTION_END = "<!-- csulora:end -->"
_SECTION = re.compile(re.escape(SECTION_BEGIN) + r".*?" + re.escape(SECTION_END) + r"\n*", re.DOTALL)


def render_card(adapter: LoraAdapter, report: AdapterReport) -> str:
    original = adapter.folder / "README.md"
    text = original.read_text(errors="replace") if original.is_file() else ""
    data, body = _split_card(text)
    tags = list(data.tags or [])
    if TAG not in tags:
        tags.append(TAG)
    data.tags = tags
    if not data.base_model:
        data.base_model = _base_model(adapter, report)
    if not data.library_name:
        data.library_name = "peft"
    body = _SECTION.sub("", body).lstrip("\n")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_section(report)}\n" + (f"\n{body}" if body else ""))
    return str(card).rstrip("\n") + "\n"


def _split_card(text: str) -> tuple[ModelCardData, str]:
    if not text.startswith("---"):
        return ModelCardData(), text
    card = ModelCard(text, ignore_metadata_errors=True)
    return card.data, card.text


def _base_model(adapter: LoraAdapter, report: AdapterReport) -> str | None:
    """A Hub repo id for `base_model` (the Hub links adapters to it): the adapter's own base model if it
    names a repo, else the aligned model when it came from the Hub. Local paths are not repo ids."""
    named = adapter.config.get("base_model_name_or_path")
    if isinstance(named, str) and "@" not in named and parse_hub_ref(named) and not Path(named).exists():
        return named
    aligned = report.subspace.get("aligned")
    if isinstance(aligned, dict) and aligned.get("kind") == "hub":
        return aligned.get("repo")
    return None


def _section(report: AdapterReport) -> str:
    method = report.method
    params = ", ".join(f"{key}={value}" for key, value in method["params"].items()) or "no parameters"
    reference = f" ({method['reference']})" if method["reference"] else ""
    totals = report.totals
    created = report.provenance.created if report.provenance else "unknown time"
    lines = [
        SECTION_BEGIN,
        "## Safety correction (csulora)",
        "",
        f"This adapter was rewritten by csulora {__version__} on {created} with `{method['name']}`: "
        f"{_what_was_written(report)}",
        "",
        f"- **Input adapter:** {_adapter_line(report)}",
        f"- **Method:** `{method['name']}` with {params}{reference}",
        f"- **Subspace:** {_subspace_line(report.subspace)}",
        f"- **Base model:** {_model_line(report.subspace, 'base')}",
        f"- **Aligned model:** {_model_line(report.subspace, 'aligned')}",
        f"- **Energy removed:** {totals.attenuation_fraction:.4f} of the update's energy, ||dW' - dW||^2 / "
        f"||dW||^2 (what was added, for a method that adds; off the subspace "
        f"before: {totals.off_subspace_fraction:.4f}; cosine to the original update: {totals.cosine:.4f})",
        "",
        f"Per-module figures and the sha256 of every input and output file are in `{REPORT_FILE}`; "
        "`csulora verify` checks this folder against it.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def _what_was_written(report: AdapterReport) -> str:
    """Which files and tensors differ from the input's, from what the modules record."""
    from ..correction.methods import METHODS

    entry = METHODS.get(report.method["name"])
    summary = f"{entry.summary}. " if entry is not None else ""
    if any(module.status == "added" for module in report.modules):
        return (
            f"{summary}The factors were written anew at one rank, with modules the input did not target added; "
            "`adapter_config.json` sets `r`, `lora_alpha` and `target_modules` to match."
        )
    if any(module.output_rank is not None for module in report.modules):
        return (
            f"{summary}Every LoRA factor was written anew at one rank (zero-padded, each module's scale folded "
            "into its `lora_B`); `adapter_config.json` sets `r` = `lora_alpha` to that rank without rank or alpha "
            "patterns; every other tensor is the original's."
        )
    # An input-side method rewrites what the update reads (A); every other method what it writes (B).
    factor = "lora_A" if entry is not None and entry.sides == ("input",) else "lora_B"
    return (
        f"{summary}Only `{factor}` tensors differ from the input's; `adapter_config.json` and every other tensor "
        "are the original's."
    )


def _subspace_line(subspace: dict) -> str:
    estimation = subspace.get("estimation") or {}
    how = f"max_rank {estimation.get('max_rank')}, energy {subspace.get('energy')}"
    if subspace.get("hub"):
        hub = subspace["hub"]
        return f"`{hub['repo']}` at commit `{hub['commit']}` ({how})"
    if subspace.get("folder"):
        return f"folder `{subspace['folder']}` ({how})"
    return f"estimated for this run ({how})"


def _adapter_line(report: AdapterReport) -> str:
    source = report.adapter_source or {}
    return _hub_line(source) if source.get("kind") == "hub" else f"`{report.adapter}`"


def _model_line(subspace: dict, side: str) -> str:
    source = subspace.get(side)
    if not isinstance(source, dict):
        return "not recorded"
    if source.get("kind") == "hub":
        return _hub_line(source)
    shards = (subspace.get("checkpoints") or {}).get(side) or []
    digests = ", ".join(f"`{shard}`" for shard in shards) or "not recorded"
    return f"`{source.get('path')}` (checkpoint files {digests})"


def _hub_line(source: dict) -> str:
    return f"`{source.get('repo')}` at commit `{source.get('commit')}`"
