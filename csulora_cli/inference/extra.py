"""The optional dependencies of running a model, imported once here so a missing one is one clear line.

`import csulora_cli.inference.extra` raises a `CsuloraError` naming the extra to install when
transformers or peft is absent; every module of the room that runs a model imports it first.
"""

from __future__ import annotations

from ..errors import CsuloraError

INSTALL_HINT = "pip install 'csulora[probe]'"

try:
    import peft
    import transformers
except ImportError as error:
    raise CsuloraError(
        f"running a model needs transformers and peft ({error.name} is missing): {INSTALL_HINT}"
    ) from None

__all__ = ["peft", "transformers"]
