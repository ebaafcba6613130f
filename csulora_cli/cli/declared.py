"""Options as declarations: every command-line option is one field of a group (a frozen dataclass of the
options that go together), and the field carries every fact the command line needs about it.

    @dataclass(frozen=True)
    class Correction(OptionGroup):
        lambda_: float = option("--lambda", metavar="F", panel=METHOD, help="...",
                                default=default_of(CorrectionParams, "lambda_"))

The field is the option's name, type and default; `option(...)` adds its flag, help, `--help` panel, what
its value names (a path or a model, read against a `--config` file's folder), whether only estimation reads
it, and the library parameter it sets when that is named otherwise (`--rank` sets `max_rank`). A command
takes a group as one parameter (`correction: Correction`); `takes_option_groups` turns each such parameter
into the group's typer options (typer reads options from the function's signature) and hands the command
one instance per group. The tables `--help`, `--config` and the error boundary read are derived from the
groups (`options.py`), never written out again. No torch here.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

# The `--help` panels, in the order `--help` lists them (`help.py`).
PANELS = ("Inputs", "Method", "Estimation", "Gate", "Output", "Hub")
INPUTS, METHOD, ESTIMATION, GATE, OUTPUT, HUB = PANELS
# What an option's value names: read against the folder of a `--config` file that sets it (`config.py`).
PLAIN, PATH, MODEL = "plain", "path", "model"  # a model is a folder or a Hub repo id
# Flags that take no value show no placeholder; the others show what they take.
FLAG = ""
_DECLARED = "csulora option"


@dataclass(frozen=True)
class Declared:
    """What the command line knows of one option, besides the name, type and default of its field."""

    flag: str
    help: str
    panel: str
    metavar: str | None = None  # None: typer's own (a Literal's choices)
    short: str | None = None  # a one-letter alias, `-q`
    value: str = PLAIN
    # Only estimating bases reads it: typed beside `--subspace` (bases already estimated) it is refused.
    estimation_only: bool = False
    # The library parameter it sets, where that is not the option's own name (`max_rank` for `--rank`).
    parameter: str | None = None
    show_default: bool = True


def option(
    flag: str,
    *,
    default: Any,
    help: str,
    panel: str,
    metavar: str | None = None,
    short: str | None = None,
    value: str = PLAIN,
    estimation_only: bool = False,
    parameter: str | None = None,
    show_default: bool = True,
) -> Any:
    """A group's field that is a command-line option (`dataclasses.field` with the option's facts)."""
    declared = Declared(flag, help, panel, metavar, short, value, estimation_only, parameter, show_default)
    return field(default=default, metadata={_DECLARED: declared})


def default_of(library_type: type, parameter: str) -> Any:
    """The default the library's own type gives `parameter`: the command line shows and uses that one."""
    (found,) = (item for item in dataclasses.fields(library_type) if item.name == parameter)
    if found.default is not dataclasses.MISSING:
        return found.default
    return found.default_factory()


@dataclass(frozen=True)
class OptionGroup:
    """Options that go together, as one typed value handed to a command. Besides the options, how each was
    given: `typed` names those given on the command line (or the environment), `preset` those a `--config`
    file set."""

    typed: frozenset[str] = field(default=frozenset(), kw_only=True, repr=False)
    preset: frozenset[str] = field(default=frozenset(), kw_only=True, repr=False)


def declared_fields(group: type[OptionGroup]) -> list[tuple[str, Declared]]:
    """(name, declaration) of each of a group's options, in the order the group lists them."""
    return [(item.name, item.metadata[_DECLARED]) for item in dataclasses.fields(group) if _DECLARED in item.metadata]


def _typer_parameters(group: type[OptionGroup]) -> list[inspect.Parameter]:
    types = typing.get_type_hints(group)
    defaults = {item.name: item.default for item in dataclasses.fields(group)}
    parameters = []
    for name, declared in declared_fields(group):
        flags = (declared.flag, declared.short) if declared.short else (declared.flag,)
        typer_option = typer.Option(
            *flags, metavar=declared.metavar, help=declared.help, show_default=declared.show_default
        )
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=defaults[name],
                annotation=Annotated[types[name], typer_option],
            )
        )
    return parameters


def takes_option_groups(command):
    """Let `command` take option groups: each parameter annotated with an `OptionGroup` subclass becomes, in
    its place, the group's options (so `--help` lists them in that order), and the command receives one
    instance of the group filled from them. Other parameters (the context, arguments) pass through as typed.

    typer reads a command's options from its signature, so the returned function has the expanded one
    (`__signature__`), every parameter keyword-only (typer passes them so); two groups declaring the same
    option name fail here, when the command is defined. typer hands the context to a parameter annotated
    `typer.Context`: one is added, and not passed on, where the command takes none.
    """
    signature = inspect.signature(command, eval_str=True)
    groups = {
        name: parameter.annotation
        for name, parameter in signature.parameters.items()
        if isinstance(parameter.annotation, type) and issubclass(parameter.annotation, OptionGroup)
    }
    context_names = [
        name
        for name, parameter in signature.parameters.items()
        if isinstance(parameter.annotation, type) and issubclass(parameter.annotation, typer.Context)
    ]
    parameters = []
    for name, parameter in signature.parameters.items():
        if name in groups:
            parameters.extend(_typer_parameters(groups[name]))
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    context_name = context_names[0] if context_names else _CONTEXT
    if not context_names:
        parameters.append(inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

    @functools.wraps(command)
    def with_groups(**values):
        context = values[context_name] if context_names else values.pop(_CONTEXT)
        for name, group in groups.items():
            values[name] = _filled(group, values, context)
        return command(**values)

    with_groups.__signature__ = signature.replace(parameters=parameters)
    with_groups.__annotations__ = {}  # the signature above is the one to read
    return with_groups


_CONTEXT = "_context"


def _filled(group: type[OptionGroup], values: dict, context: typer.Context) -> OptionGroup:
    mine = {name: values.pop(name) for name, _ in declared_fields(group)}
    sources = {name: context.get_parameter_source(name) for name in mine}
    typed = frozenset(name for name, source in sources.items() if source and source.name in _TYPED)
    preset = frozenset(name for name, source in sources.items() if source and source.name == "DEFAULT_MAP")
    return group(**mine, typed=typed, preset=preset)


# How click says a value was given: typed on the command line or set in the environment.
_TYPED = ("COMMANDLINE", "ENVIRONMENT")
