"""Which model is the base and which the aligned one, checked against what the sources say.

The subspace is the same either way, but `V = W_aligned - W_base` changes sign with the order, and with
it every signed statistic (`reversal`, `reversing_share`) and `csulora-signed`: a swapped pair makes a
`reversal` gate pass the adapters it exists to catch. The order is checked where a source names a
model: an adapter's `base_model_name_or_path` (trained on the aligned model), and a model's card
(`base_model`) or `config.json` (`base_model`, `_name_or_path`), which name the model it was made from.
The models' files are read through their sources (`ModelFiles.text_file`), local folders and Hub repos
alike; a subspace folder's models are known only from its manifest, so only those that are local folders
still present are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ...checkpoints.description import HUB, SourceDescription
from ...checkpoints.protocol import ModelFiles
from ...errors import UsageError
from ...events import Events

CARD_FILE = "README.md"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class OrderEvidence:
    """What the sources say of the base/aligned order: one sentence per source that confirms it, and one per
    source that contradicts it (both empty: nothing says either way)."""

    agreeing: list[str]
    contradicting: list[str]


def check_order(
    base: ModelFiles | None,
    aligned: ModelFiles | None,
    adapters: list[tuple[str, dict]],
    order_check: str,
    events: Events,
) -> OrderEvidence:
    """Warn about (or with "refuse", for a gate, refuse) a base/aligned order the sources contradict; "accept"
    is the user's confirmation (`requests.ORDER_CHECKS`). Returns what the sources said, either way."""
    evidence = order_evidence(base, aligned, adapters)
    if order_check == "accept" or not evidence.contradicting:
        return evidence
    what = (
        f"the base and aligned models look swapped: {'; '.join(evidence.contradicting)}. Swapped, "
        "V = W_aligned - W_base changes sign, and with it reversal, reversing_share and csulora-signed"
    )
    fix = (
        "give the pre-alignment model as the base and the aligned one second (a subspace folder: estimate it "
        "again that way round), or pass {confirm_order}"
    )
    if order_check == "refuse":
        raise UsageError(f"{what}, so a gate would pass what it exists to catch; {fix} if the order is right")
    events.warn(f"{what}; {fix} if the order is right")
    return evidence


def order_evidence(
    base: ModelFiles | None, aligned: ModelFiles | None, adapters: list[tuple[str, dict]]
) -> OrderEvidence:
    """Each source that names a model, read once: an adapter names the model it was trained on (the aligned
    one), a model's card or config the model it was made from (for the aligned model, the base).

    `base` and `aligned` are None where the run does not know them (a subspace folder that does not record
    them); `adapters` pairs each adapter's label with its `adapter_config.json`.
    """
    evidence = OrderEvidence([], [])
    if base is None or aligned is None:
        return evidence
    base_is, aligned_is = base.describe(), aligned.describe()
    for label, config in adapters:
        trained_on = config.get("base_model_name_or_path")
        if not isinstance(trained_on, str):
            continue
        on_aligned, on_base = names_model(trained_on, aligned_is), names_model(trained_on, base_is)
        if on_aligned and not on_base:
            evidence.agreeing.append(f"adapter {label} names the aligned model (base_model_name_or_path)")
        elif on_base and not on_aligned:
            evidence.contradicting.append(
                f"adapter {label} was trained on {trained_on} (its base_model_name_or_path), the model given as "
                "the base, where an adapter to correct is trained on the aligned model"
            )
    for where, parent in declared_parents(base):
        if names_model(parent, aligned_is) and not names_model(parent, base_is):
            evidence.contradicting.append(
                f"{where} names {parent}, the model given as aligned, as the model it was made from"
            )
    for where, parent in declared_parents(aligned):
        if names_model(parent, base_is) and not names_model(parent, aligned_is):
            evidence.agreeing.append(f"{where} names the base model as the model it was made from")
    return evidence


def declared_parents(model: ModelFiles) -> list[tuple[str, str]]:
    """(file, model name) for each model a model's card or config says it was made from."""
    parents = []
    card = model.text_file(CARD_FILE)
    if card is not None:
        for name in _asnames_model(_front_matter(card.text).get("base_model")):
            parents.append((f"{card.where} (base_model)", name))
    config_file = model.text_file(CONFIG_FILE)
    if config_file is not None:
        try:
            config = json.loads(config_file.text)
        except ValueError:
            config = {}
        if isinstance(config, dict):
            for key in ("base_model", "_name_or_path"):
                for name in _asnames_model(config.get(key)):
                    parents.append((f"{config_file.where} ({key})", name))
    return parents


def _front_matter(text: str) -> dict:
    if not text.startswith("---"):
        return {}
    block = text[3:].split("\n---", 1)[0]
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _asnames_model(value) -> list[str]:
    if isinstance(value, str) and value.strip():
        return [value.strip()]
    if isinstance(value, list):
        return [item.strip() for item in value if isinstance(item, str) and item.strip()]
    return []


def names_model(reference: str, model: SourceDescription) -> bool:
    """Whether `reference` (a path or a repo id, as a config writes it) names the model `model` describes."""
    reference = reference.rstrip("/")
    repo_part = reference.split("@", 1)[0]
    if model.kind == HUB:
        repo = model.repo or ""
        return repo_part == repo or (bool(repo) and Path(reference).name == repo.split("/")[-1])
    if not model.path:
        return False
    folder = Path(model.path)
    try:
        if Path(reference).expanduser().resolve() == folder.resolve():
            return True
    except (OSError, RuntimeError):
        pass
    # A local copy of a Hub model is usually named after the repo (`models/Llama-3.2-3B`).
    return "/" in repo_part and not Path(repo_part).is_absolute() and repo_part.split("/")[-1] == folder.name
