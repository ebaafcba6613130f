"""The optional dependencies of running a model, imported once here so a missing one is one clear line.

`import csulora_cli.inference.extra` raises a `CsuloraError` naming the extra to install when
transformers or peft is absent; every module of the room that runs a model imports it first.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import CsuloraError

INSTALL_HINT = "pip install 'csulora[probe]'"

try:
    import peft
    import transformers
except ImportError as error:
    raise CsuloraError(
        f"running a model needs transformers and peft ({error.name} is missing): {INSTALL_HINT}"
    ) from None

__all__ = ["peft", "quietly", "transformers"]


@contextmanager
def quietly() -> Iterator[None]:
    """transformers' and peft's loading chatter off for the block: their progress bars and deprecation
    warnings would break a command's stderr (progress through its own bar, an error in one line). The
    library's own switches are restored after, for callers that set them."""
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
