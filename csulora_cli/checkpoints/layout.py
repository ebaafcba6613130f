"""How a checkpoint names its weights, locally or on the Hub: one file, or shards listed in an index."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import FormatError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def read_weight_map(index_path: Path, where: str) -> dict[str, object]:
    """{tensor key: shard name} of an index file; the caller checks each shard name against its folder."""
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FormatError(f"not a safetensors index ({error})", where=where) from None
    if not isinstance(weight_map, dict):
        raise FormatError("weight_map is not a JSON object", where=where)
    return weight_map
