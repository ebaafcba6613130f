"""The README of a corrected adapter folder: what was done, with the original adapter's card below."""

from __future__ import annotations

import json

from .. import __version__
from ..adapters.peft import LoraAdapter
from .records import REPORT_FILE, AdapterReport


def render_card(adapter: LoraAdapter, report: AdapterReport) -> str:
    method = report.method
    params = ", ".join(f"{key}={value}" for key, value in method["params"].items()) or "none"
    lines = [
        "# Corrected LoRA adapter",
        "",
        f"Made by csulora {__version__} from `{adapter.folder.resolve()}`.",
        "",
        f"- method: `{method['name']}` ({params})" + (f", {method['reference']}" if method["reference"] else ""),
        f"- subspace: {json.dumps(report.subspace, sort_keys=True)}",
        f"- off-subspace energy before: {report.totals.off_subspace_fraction:.4f}; "
        f"energy removed: {report.totals.attenuation_fraction:.4f}; cosine to the original: {report.totals.cosine:.4f}",
        "",
        "Only `lora_B` / `lora_embedding_B` tensors were changed; `adapter_config.json` and every other tensor",
        f"are the original's. Per-module figures: `{REPORT_FILE}`.",
    ]
    original = adapter.folder / "README.md"
    if original.is_file():
        lines += [
            "",
            "---",
            "",
            "The original adapter's README follows.",
            "",
            original.read_text(errors="replace"),
        ]
    return "\n".join(lines) + "\n"
