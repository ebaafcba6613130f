"""The one family of user-facing errors.

Every error a user can cause (bad file, bad flag, mismatched model) is a `CsuloraError`; the CLI's
`main()` turns it into one stderr line and an exit code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CsuloraError(Exception):
    """A problem with the user's input; `where` names the file, tensor or flag at fault."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def one_line(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split())

    def __str__(self) -> str:
        return self.one_line()


class UsageError(CsuloraError):
    """A flag or option value that cannot be used (exit 2, like a parse error)."""

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


class GateTripped(Exception):
    """`inspect --fail-above` found too much off-subspace energy (exit 3); not an error of input."""

    exit_code = 3
