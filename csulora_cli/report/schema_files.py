"""The JSON Schema (2020-12) files that describe csulora's outputs, shipped in the package.

`report` is `csulora_report.json`, `subspace` a subspace folder's `subspace.json` (the manifest
`estimate-subspace --out` writes); the others are what each command prints with `--json`. They refer
to each other by file name (`report.schema.json#/$defs/...`), so a validator needs them side by side:
`schema_folder()` is where they are.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

SCHEMA_NAMES = ("report", "subspace", "correct", "inspect", "estimate-subspace", "verify", "push", "probe")


def schema_folder() -> Path:
    return Path(str(files("csulora_cli.report") / "schemas"))


def schema_file(name: str) -> Path:
    if name not in SCHEMA_NAMES:
        raise KeyError(f"no schema {name!r}; there are {', '.join(SCHEMA_NAMES)}")
    return schema_folder() / f"{name}.schema.json"


def load_schema(name: str) -> dict:
    return json.loads(schema_file(name).read_text())
