"""Naming the weights a job works on: a `Target` (base key and orientation), and transformer blocks.

Plain data and string rules, importable from the request types without the file formats behind them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class Target:
    """One basis to obtain: a base weight key and whether it is transposed to output-space form."""

    base_key: str
    transposed: bool


_LAYER_INDEX = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


def layer_of(key: str) -> int | None:
    """The transformer block a weight belongs to (`model.layers.7.mlp...` -> 7); None outside blocks."""
    match = _LAYER_INDEX.search("." + key)
    return int(match[1]) if match else None


def parse_layers(text: str) -> set[int]:
    """'0-15' or '3' or '0-3,8-11' -> the set of layer indices."""
    layers: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise UsageError(f"expected ranges such as 0-15 or 0-3,8-11, got {text!r}", parameter="layers")
        layers.update(range(int(match[1]), int(match[2] or match[1]) + 1))
    return layers
