"""What a run reports: per-module records and totals (`records.py`), the output folder's README (`card.py`),
and `validate(document)`, which checks a report or a `--json` document against the shipped JSON Schemas."""

from .validate import validate

__all__ = ["validate"]
