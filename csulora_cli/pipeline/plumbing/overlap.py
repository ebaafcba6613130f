"""Outputs that would destroy an input: refused before any work, whatever `overwrite` says.

An output folder is replaced whole (or filled and renamed into place), so one that is an input, lies
inside one, or holds one would destroy that input: a second run would then correct the corrected copy.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError


def local_folder(spec: str | Path | None) -> Path | None:
    """`spec` as a local folder when one exists under that name (a local folder wins over a Hub repo id)."""
    if spec is None:
        return None
    path = Path(spec).expanduser()
    return path if path.exists() else None


def refuse_output_over_inputs(output: Path, parameter: str, inputs: list[tuple[str, Path | None]]) -> None:
    """Refuse `output` (set by `parameter`) when it is, lies inside, or holds one of `inputs`.

    `inputs` pairs what each input is ("the adapter folder") with its folder (None: not a local folder).
    """
    target = output.expanduser().resolve()
    for what, folder in inputs:
        if folder is None:
            continue
        source = folder.expanduser().resolve()
        if target == source:
            relation = "is"
        elif source in target.parents:
            relation = "is inside"
        elif target in source.parents:
            relation = "holds"
        else:
            continue
        raise UsageError(
            f"{output} {relation} {what} {folder} this run reads; writing there would destroy it, "
            "with or without {overwrite}: choose another folder",
            parameter=parameter,
        )
