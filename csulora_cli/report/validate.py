"""Checking a document against the JSON Schemas that ship in the package, their `$ref`s resolved.

The schemas refer to each other by file name (`report.schema.json#/$defs/...`), so a validator needs a
registry of all of them; this builds it once, so a user checks an output in one call:
`csulora_cli.report.validate(json.load(open("csulora_report.json")))`, or `csulora validate FILE`.
The validator is `jsonschema` (`pip install 'csulora[schema]'`), imported only here, only when asked.
"""

from __future__ import annotations

import functools

from ..errors import CsuloraError, FormatError
from .schema_files import SCHEMA_NAMES, load_schema

# The keys only a subspace folder's manifest has together (a report records its subspace inside `subspace`).
_MANIFEST_KEYS = {"sources", "estimation", "storage"}


def schema_for(document) -> str:
    """Which shipped schema describes `document`: its `command` (a `--json` document), `subspace` for a
    subspace folder's manifest (`subspace.json`), else `report`."""
    if isinstance(document, dict) and document.get("command") in SCHEMA_NAMES:
        return document["command"]
    if isinstance(document, dict) and _MANIFEST_KEYS <= document.keys() and "adapter" not in document:
        return "subspace"
    return "report"


def validate(document, schema: str | None = None) -> str:
    """Raise `FormatError` naming the first place where `document` breaks its schema; return the schema's name.

        import json
        from csulora_cli.report import validate
        validate(json.load(open("adapter-safe/csulora_report.json")))   # "report"

    `schema` is one of `SCHEMA_NAMES` (default: chosen by `schema_for`).
    """
    name = schema or schema_for(document)
    if name not in SCHEMA_NAMES:
        raise CsuloraError(f"no schema {name!r}; there are {', '.join(SCHEMA_NAMES)}", parameter="schema")
    validator = _validator(name)
    errors = sorted(validator.iter_errors(document), key=lambda error: list(error.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(part) for part in first.absolute_path) or "(the document)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise FormatError(f"does not match {name}.schema.json at {where}: {first.message}{more}")
    return name


@functools.cache
def _validator(name: str):
    try:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
    except ImportError:
        raise CsuloraError("validating needs the jsonschema package: pip install 'csulora[schema]'") from None
    registry = Registry().with_resources(
        (f"{schema}.schema.json", Resource.from_contents(load_schema(schema))) for schema in SCHEMA_NAMES
    )
    return Draft202012Validator(load_schema(name), registry=registry)
