"""The JSON document every command prints with `--json`, and the tool record every report carries.

One shape per command whatever the number of adapters: `{"schema_version", "tool", "command", ...}`,
described by the JSON Schema files in `csulora_cli/schemas/` (README, "JSON output").
"""

from __future__ import annotations

from .. import __version__

# 2: one envelope per command, provenance in every report. Bumped whenever a field changes meaning or goes.
SCHEMA_VERSION = 2


def tool_record() -> dict:
    return {"name": "csulora", "version": __version__}


def envelope(command: str, **body) -> dict:
    return {"schema_version": SCHEMA_VERSION, "tool": tool_record(), "command": command, **body}
