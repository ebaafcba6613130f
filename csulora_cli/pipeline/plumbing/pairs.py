"""Whether the bases' model pair is the one the adapters were trained on: a subspace of another pair of the
same shapes corrects the wrong directions, in silence, and a gate reading it passes what it should catch.

Read from the same sources as the order check (`sides.py`): an adapter's `base_model_name_or_path` names
the model it was trained on, which must be the aligned model; the aligned model's card (or config) names in
`base_model` the model it was made from, which must be the base. A name that says nothing either way (none
given) is no mismatch; one that names the base instead of the aligned model is the order check's concern.
"""

from __future__ import annotations

from ...checkpoints.protocol import ModelFiles
from ...errors import UsageError
from .sides import declared_parents, names_model


def check_models_agree(
    base: ModelFiles | None, aligned: ModelFiles | None, adapters: list[tuple[str, dict]], confirmed: bool
) -> None:
    """Refuse bases whose aligned model is not the one an adapter names, or whose base is not the one the
    aligned model's card names, unless the user confirmed it (`confirmed`: the same model under another
    name, a copy in another folder)."""
    if confirmed or aligned is None:
        return
    aligned_is = aligned.describe()
    base_is = None if base is None else base.describe()
    for label, config in adapters:
        trained_on = config.get("base_model_name_or_path")
        if not isinstance(trained_on, str) or not trained_on.strip():
            continue
        if names_model(trained_on, aligned_is) or (base_is is not None and names_model(trained_on, base_is)):
            continue
        raise UsageError(
            f"adapter {label} was trained on {trained_on} (its base_model_name_or_path), but the bases come from "
            f"the aligned model {aligned_is.label}: bases of another model pair remove the wrong directions. "
            f"Use bases of {trained_on}'s pair, or pass {{confirm_models}} if it is that model under another name",
            parameter="confirm_models",
        )
    if base is None or base_is is None:
        return
    for where, parent in declared_parents(aligned):
        if not where.endswith("(base_model)"):
            continue  # `_name_or_path` is wherever the model was loaded from when saved: no claim of lineage
        if names_model(parent, base_is) or names_model(parent, aligned_is):
            continue
        raise UsageError(
            f"{where} names {parent} as the model the aligned model was made from, but the base given is "
            f"{base_is.label}: a displacement from another base is not the alignment's. Give {parent} as the "
            "base, or pass {confirm_models} if it is that model under another name",
            parameter="confirm_models",
        )
