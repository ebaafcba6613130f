"""Where the probe's prompts come from: a local `.txt`, `.jsonl` or `.csv` file, or a file of a Hub dataset.

    prompts.txt                                    one prompt a line, blank lines skipped
    prompts.jsonl / prompts.csv                    the `field` of each record / column
    datasets/ORG/NAME/PATH/FILE.csv@REVISION       a Hub dataset's file (revision optional: main)
    hf://datasets/ORG/NAME@REVISION/PATH/FILE.csv  the same, as huggingface_hub's file system writes it

Parsing only: `sources.py` finds the file (local, or fetched from the Hub and pinned by commit), so the
request types read `PromptSet` without reaching huggingface_hub.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CsuloraError, FormatError

EXTENSIONS = (".txt", ".jsonl", ".csv")
DEFAULT_FIELD = "prompt"
_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_DATASETS = re.compile(rf"^datasets/{_REPO}/(?P<file>[^@]+?)(?:@(?P<revision>[^@/]+))?$")
_HF_URL = re.compile(rf"^hf://datasets/{_REPO}(?:@(?P<revision>[^/]+))?/(?P<file>.+)$")


@dataclass(frozen=True)
class HubDatasetFile:
    repo: str
    filename: str
    revision: str | None = None  # None: the default branch

    @property
    def label(self) -> str:
        return f"datasets/{self.repo}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class PromptSet:
    """The prompts, in file order, and what the report records of their source (a Hub file's commit)."""

    prompts: tuple[str, ...]
    source: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.source, "prompts": len(self.prompts)}


def parse_hub_dataset_file(spec: str) -> HubDatasetFile | None:
    """The Hub dataset file `spec` names, or None when it names no Hub dataset file (a local path)."""
    for pattern in (_HF_URL, _DATASETS):
        match = pattern.match(spec)
        if match:
            return HubDatasetFile(match["repo"], match["file"], match["revision"])
    return None


def read_prompt_file(
    path: Path, prompt_field: str = DEFAULT_FIELD, label: str | None = None, field_parameter: str = "prompt_field"
) -> tuple[str, ...]:
    """The prompts of one local file; `field_parameter` is the parameter that chose `prompt_field`, which a
    missing field's message names."""
    where = label or str(path)
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise CsuloraError(
            f"cannot read prompts from a {suffix or 'file without an extension'}; use one of {', '.join(EXTENSIONS)}",
            where=where,
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CsuloraError("prompt file does not exist", where=where) from None
    except (OSError, UnicodeDecodeError) as error:
        raise FormatError(f"cannot read the prompt file: {error}", where=where) from None
    if suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines()]
    elif suffix == ".jsonl":
        prompts = _jsonl_prompts(text, prompt_field, where, field_parameter)
    else:
        prompts = _csv_prompts(text, prompt_field, where, field_parameter)
    prompts = [prompt for prompt in prompts if prompt]
    if not prompts:
        raise FormatError("holds no prompts", where=where)
    return tuple(prompts)


def _jsonl_prompts(text: str, prompt_field: str, where: str, field_parameter: str) -> list[str]:
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise FormatError(f"line {number} is not JSON ({error})", where=where) from None
        if not isinstance(record, dict) or prompt_field not in record:
            raise FormatError(
                f"line {number} has no field {prompt_field!r}",
                where=where,
                hint=f"choose it with {{{field_parameter}}}",
            )
        prompts.append(_as_prompt(record[prompt_field], f"line {number}", where))
    return prompts


def _csv_prompts(text: str, prompt_field: str, where: str, field_parameter: str) -> list[str]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    if prompt_field not in columns:
        raise FormatError(
            f"has no column {prompt_field!r}; its columns are {', '.join(map(repr, columns)) or 'none'}",
            where=where,
            hint=f"choose it with {{{field_parameter}}}",
        )
    return [_as_prompt(row[prompt_field], f"row {number}", where) for number, row in enumerate(reader, start=2)]


def _as_prompt(value, place: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FormatError(f"{place}: the prompt is {type(value).__name__}, not text", where=where)
    return value.strip()


def file_record(path: Path) -> dict:
    """The path and the content's sha256, so a report says exactly which prompts it read."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        digest = None
    return {"path": str(path.resolve()), "sha256": digest}
