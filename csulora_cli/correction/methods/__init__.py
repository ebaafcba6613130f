"""The registry of correction methods: one entry per method, naming the module its rule lives in.

Torch-free: `--method`'s choices, `--help`, the request check (`check_method`) and docs/cli.md read these
entries without importing the numerical core; `get_method` imports a method's module when a run needs it.
Adding a method is a file beside `base.py` and one entry here (docs/architecture.md, "Recipes").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ...errors import UsageError

__all__ = ["METHODS", "MethodEntry", "check_method", "get_method"]


@dataclass(frozen=True)
class MethodEntry:
    """What the command line and the request check know of a method; its rule is `implementation` in `module`."""

    name: str
    summary: str
    module: str  # relative to this package (".csulora"), or an absolute module name
    implementation: str  # the `CorrectionMethod` subclass there
    # Whether `two_sided` has a meaning for the method (a usage error otherwise).
    two_sided: bool = True
    # The subspace folders it reads, of `subspace.params.SIDES` (spelled out: the registry imports nothing of the
    # package but its errors); a folder of another side is refused by name.
    sides: tuple[str, ...] = ("output",)
    # Whether it reads a safety adapter (`--safety-adapter`): required by it, refused by every other method.
    reads_safety_adapter: bool = False


# In the order `--method` lists them.
METHODS: dict[str, MethodEntry] = {
    entry.name: entry
    for entry in (
        MethodEntry(
            "csulora",
            "keep the in-subspace part of each direction, attenuate the rest by its off-subspace energy",
            ".csulora",
            "ClosestSafeUpdate",
        ),
        MethodEntry(
            "project", "keep only the part of the update inside the safety subspace", ".project", "HardProjection"
        ),
        MethodEntry(
            "safelora",
            "Safe LoRA: B' = C B with C = V V^T / ||V||_F, on the modules least similar after projection",
            ".safelora",
            "SafeLora",
            two_sided=False,  # C is defined on the output side only
        ),
        MethodEntry(
            "csulora-inside",
            "keep the off-subspace part of each direction, attenuate the in-subspace part by its aligned energy",
            ".csulora_inside",
            "InsideAttenuation",
        ),
        MethodEntry(
            "csulora-signed",
            "attenuate the update's negative coefficients along V's own directions u_j w_j^T",
            ".csulora_signed",
            "SignAwarePenalty",
            two_sided=False,  # its coefficients c_j are already two-sided (u_j^T dW w_j)
        ),
        MethodEntry("scale", "the whole update times alpha: the baseline", ".scale", "ScaleDown", two_sided=False),
        MethodEntry(
            "remove-top",
            "B' = (I - P_k) B: the update less its part in the subspace's top k directions",
            ".remove_top",
            "RemoveTopDirections",
            two_sided=False,
        ),
        MethodEntry(
            "readd",
            "append alpha U_k S_k W_k^T, the alignment's top-k change, to the update as extra rank",
            ".readd",
            "ReaddAlignment",
            two_sided=False,
        ),
        MethodEntry(
            "merge-safety",
            "dW' = (1 - w) dW + w dW_safety on the modules Safe LoRA's test flags, as extra rank",
            ".merge_safety",
            "MergeSafetyAdapter",
            two_sided=False,
            reads_safety_adapter=True,
        ),
        MethodEntry(
            "remove-inputs",
            "A' = A (I - Q_k Q_k^T): the update no longer reads an activation subspace's top k input directions",
            ".remove_inputs",
            "RemoveInputDirections",
            two_sided=False,
            sides=("input",),
        ),
        MethodEntry(
            "none", "copy the adapter unchanged; report only", ".none", "NoCorrection", sides=("output", "input")
        ),
    )
}


def check_method(name: str, two_sided: bool, safety_adapter: str | None = None) -> None:
    """A method name the registry knows, `two_sided` only for a method that has that form, and a safety
    adapter for the method that reads one (and for no other)."""
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}", parameter="method")
    if METHODS[name].reads_safety_adapter and safety_adapter is None:
        raise UsageError(f"{{method}} {name} needs the adapter to merge in: pass it", parameter="safety_adapter")
    if safety_adapter is not None and not METHODS[name].reads_safety_adapter:
        readers = ", ".join(entry.name for entry in METHODS.values() if entry.reads_safety_adapter)
        raise UsageError(f"is read by {{method}} {readers} only, not {name}", parameter="safety_adapter")
    if two_sided and not METHODS[name].two_sided:
        two_sided_methods = ", ".join(entry.name for entry in METHODS.values() if entry.two_sided)
        raise UsageError(
            f"{{method}} {name} has no two-sided form (it has for {two_sided_methods})", parameter="two_sided"
        )


def get_method(name: str):
    """The method `name` (a `base.CorrectionMethod`), its module imported now (with it, torch)."""
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}", parameter="method")
    entry = METHODS[name]
    implementation = getattr(importlib.import_module(entry.module, __name__), entry.implementation)
    return implementation(entry)
