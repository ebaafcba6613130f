"""The one family of user-facing errors.

Every error a user can cause (bad file, bad value, mismatched model) is a `CsuloraError`; the CLI turns
it into one stderr line and an exit code. Anything else is a bug and keeps its traceback.

The library names the *parameters* at fault (`max_rank`, `fetch`), never command-line flags: a message
writes a parameter as `{name}` and `one_line(spell)` spells it, as itself for Python callers and as its
flag (`--rank`) in the CLI, which is the only place that knows the flags.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# `{max_rank}` in a message: a parameter name, spelled by whoever shows the message.
_PARAMETER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


def first_few(names: list[str], shown: int) -> str:
    """`a, b, c and 4 more`: a list a message names without growing past one line."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _as_named(name: str) -> str | None:
    return name


def spell_parameters(text: str, spell: Callable[[str], str | None] = _as_named) -> str:
    """`{name}` placeholders in a message, each as `spell` writes it (None: left as typed)."""
    return _PARAMETER.sub(lambda match: spell(match[1]) or match[0], text)


class CsuloraError(Exception):
    """A problem with the user's input; `where` names the file or tensor at fault, `parameter` the value."""

    exit_code = 1

    def __init__(
        self, message: str, *, where: str | None = None, parameter: str | None = None, hint: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.where = where
        self.parameter = parameter
        self.hint = hint

    def one_line(self, spell: Callable[[str], str | None] = _as_named) -> str:
        """The error as one line; `spell` turns a parameter name into what the reader typed (None: leave it)."""

        where = (spell(self.parameter) or self.parameter) if self.parameter and not self.where else self.where
        message = spell_parameters(self.message, spell)
        text = f"{where}: {message}" if where else message
        if self.hint:
            text += f" ({spell_parameters(self.hint, spell)})"
        return " ".join(text.split())

    def __str__(self) -> str:
        return self.one_line()


class UsageError(CsuloraError):
    """A parameter value that cannot be used (exit 2, like a parse error); `parameter` names it."""

    exit_code = 2


class FormatError(CsuloraError):
    """A file that is not what it claims to be: truncated safetensors, malformed JSON, wrong dtype."""


class MissingTensorError(CsuloraError):
    """A tensor the work needs is absent from a model or adapter."""


class ShapeMismatchError(CsuloraError):
    """Two tensors that must agree in shape do not."""


class UnsupportedAdapterError(CsuloraError):
    """An adapter kind the correction cannot handle exactly (DoRA, non-LoRA PEFT types)."""


class OutputExistsError(CsuloraError):
    """The destination exists and `--overwrite` was not given."""


class DiskFullError(CsuloraError):
    """A file could not be written for want of space (ENOSPC) or quota (EDQUOT); `where` names it."""


class LinkRefusedError(CsuloraError):
    """A symbolic link where csulora reads or copies files (an adapter folder): links are never followed."""


class GateTripped(Exception):
    """`inspect --fail-above` found too much off-subspace energy (exit 3); not an error of input."""

    exit_code = 3


class BatchFailures(CsuloraError):
    """`correct` with `keep_going`: some adapters were refused, the others written (`reports`).

    `failures` pairs each refused adapter's name with its error; the CLI prints one line for each and
    exits 1 after showing the reports of the adapters that were written.
    """

    def __init__(self, reports: list, failures: list[tuple[str, CsuloraError]]):
        written = len(reports)
        super().__init__(
            f"{len(failures)} of {written + len(failures)} adapters not corrected: "
            + "; ".join(f"{label}: {error}" for label, error in failures)
        )
        self.reports = reports
        self.failures = failures

    def lines(self, spell: Callable[[str], str | None] = _as_named) -> list[str]:
        """One line per refused adapter, its error naming it."""
        lines = []
        for label, error in self.failures:
            line = error.one_line(spell)
            lines.append(line if label in line else f"{label}: {line}")
        return lines
