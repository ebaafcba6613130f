"""A model known only from a description recorded elsewhere (a subspace folder's manifest), as `ModelFiles`.

A local folder recorded there is read where it was, when it is still there; a Hub repo recorded there is not
fetched: the run that reads the folder never opened that repo.
"""

from __future__ import annotations

from pathlib import Path

from .description import LOCAL, SourceDescription, TextFile


class RecordedModel:
    def __init__(self, description: SourceDescription):
        self.description = description

    def describe(self) -> SourceDescription:
        return self.description

    def text_file(self, name: str) -> TextFile | None:
        if self.description.kind != LOCAL or not self.description.path:
            return None
        return read_text_file(Path(self.description.path) / name)


def read_text_file(path: Path) -> TextFile | None:
    """A local text file, or None when it is absent or cannot be read as text."""
    try:
        return TextFile(str(path), path.read_text())
    except (OSError, UnicodeDecodeError):
        return None
