"""The one place where errors become one stderr line and an exit code, for the console script and for
in-process callers alike (typer's `CliRunner` goes through the same `main`).

Exit codes: 0 ok, 1 error, 2 usage, 3 gate tripped, 130 interrupted. The library names parameters;
here they are spelled as the flags the user typed (`max_rank` -> `--rank`).
"""

from __future__ import annotations

import logging
import os
import re
import sys

import typer
from typer.core import TyperGroup

from ..errors import CsuloraError, GateTripped
from .config import config_defaults
from .options import declared_options
from .output import Output

# typer ships its own copy of click; its usage-error base class is reached through a public export.
_CLICK_ERROR = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException")


# What an interrupted command leaves behind, in the one line Ctrl-C prints.
_AFTER_INTERRUPT = {
    "estimate-subspace": "the bases finished so far are kept (cache, --out folder) and a rerun computes only the rest",
    "demo": "nothing is kept",
}
_NOTHING_WRITTEN = "nothing was written (an output appears only once complete)"


# click's words for an option typed last, without its value (`--out` at the end of the line).
_NO_VALUE = re.compile(r"^Option '(-[-\w]+)' requires an argument\.?$")


def _needs_a_value(message: str) -> str:
    """`--out needs a value (--out DIR)` rather than click's "requires an argument"."""
    match = _NO_VALUE.match(message)
    if match is None:
        return message
    flag = match[1]
    metavar = next((option.metavar for option in declared_options().values() if option.flag == flag), None)
    return f"{flag} needs a value" + (f" ({flag} {metavar})" if metavar else "")


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM while writing) during a command; typer would turn it into a silent exit 130."""

    def __init__(self, command: str | None):
        super().__init__(command)
        self.command = command

    def line(self) -> str:
        if self.command is None:
            return "csulora: interrupted"
        return f"csulora: interrupted: {self.command} stopped; {_AFTER_INTERRUPT.get(self.command, _NOTHING_WRITTEN)}"


class CsuloraGroup(TyperGroup):
    """The `csulora` command group, with csulora's error boundary around every invocation."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted(ctx.invoked_subcommand) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run a command; user errors become one line on stderr and an exit code (always `sys.exit`)."""
        debug = os.environ.get("CSULORA_DEBUG") == "1"
        args = list(sys.argv[1:] if args is None else args)
        output = Output()
        # huggingface_hub logs each retry as a warning; an error is still one line here. HF_HUB_VERBOSITY
        # asks for its messages back, as it does for every huggingface_hub tool.
        if "HF_HUB_VERBOSITY" not in os.environ:
            logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        try:
            code = super().main(
                args=args,
                prog_name=prog_name or "csulora",
                complete_var=complete_var,
                standalone_mode=False,
                default_map=config_defaults(self, args),
                obj={"argv": args},
                **extra,
            )
        except GateTripped as gate:
            output.error(f"csulora: error: {gate}")
            sys.exit(GateTripped.exit_code)
        except CsuloraError as error:
            if debug:
                raise
            output.error(f"csulora: error: {error.one_line(self.flag_of)}")
            sys.exit(error.exit_code)
        except _CLICK_ERROR as error:
            if debug:
                raise
            message = error.format_message()
            if type(error).__name__ == "NoArgsIsHelpError":
                # Bare `csulora` (or a group without its command): the help is the answer, not an error.
                output.error(message)
                sys.exit(error.exit_code)
            # A choice flag's refusal comes through typer's validation layer, which prefixes its own label.
            message = _needs_a_value(message.replace("Value error, ", ""))
            context = getattr(error, "ctx", None)
            command = context.info_name if context and context.info_name != "csulora" else ""
            # An option left without its value is refused while the group still parses: the command is
            # the first argument that names one.
            command = command or next((arg for arg in args if arg in self.commands), "")
            see = f"csulora {command} --help" if command else "csulora --help"
            output.error(f"csulora: error: {message} (see {see})")
            sys.exit(error.exit_code)
        except Interrupted as interrupted:
            output.error(interrupted.line())
            sys.exit(130)
        except (KeyboardInterrupt, typer.Abort):
            output.error("csulora: interrupted")
            sys.exit(130)
        except Exception as error:  # a bug: one line, unless asked for the traceback
            if debug:
                raise
            first_line = str(error).splitlines()[0] if str(error) else ""
            output.error(
                f"csulora: internal error: {type(error).__name__}: {first_line}"
                " (rerun with CSULORA_DEBUG=1 for the traceback)"
            )
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def flag_of(self, parameter: str) -> str | None:
        """The flag (or argument) that sets a library parameter; None for a name no command takes.

        A declaration names the library parameter it sets where that is not its own name (`--rank` sets
        `max_rank`) and spells its flag (`lambda_` is `--lambda`); otherwise the flag is `--` and the name
        with dashes, or an argument's placeholder (`adapters` is `ADAPTER`)."""
        declared = declared_options()
        for name, option in declared.items():
            if option.parameter == parameter or (name == parameter and option.parameter is None):
                return option.flag
        flag = "--" + parameter.replace("_", "-")
        arguments = {}
        for command in self.commands.values():
            for option in command.params:
                if flag in getattr(option, "opts", ()):
                    return flag
                if getattr(option, "param_type_name", None) == "argument":
                    arguments.setdefault(option.name, option.metavar)
        return arguments.get(parameter)
