"""The command reference (docs/cli.md), rendered from the typer app itself.

`render_reference()` walks the click group behind `app`: the root options, then each command in the
order `csulora --help` lists them, with its usage line, help text, arguments and a table of every
option. The text depends on nothing but the app (no terminal width, no clock, no paths), so
`scripts/tools/cli_reference.py --check` and tests/cli/test_docs.py can compare it with the committed file.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import get_args, get_origin

import typer

from ..errors import CsuloraError, GateTripped, UsageError
from .app import app

PROGRAM = "csulora"
# The names `--help` would show for a value, kept the same whatever typer version renders them.
_VALUE_NAMES = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH", bool: "BOOLEAN"}


def render_reference() -> str:
    """docs/cli.md: every command, argument and option of `csulora`, as Markdown."""
    group = typer.main.get_command(app)
    root = group.context_class(group, info_name=PROGRAM)
    lines = [
        "# Command reference",
        "",
        "<!-- Generated from the typer app by `make docs` (csulora_cli/cli/reference.py).",
        "     Do not edit: change the help in csulora_cli/cli/app.py or options.py and regenerate. -->",
        "",
        "Every command, argument and option of `csulora`, as `csulora COMMAND --help` knows them. The",
        "defaults are the built-in ones: `--config FILE.yaml` can replace any of them (keys are option names",
        "without `--`), and a flag on the command line wins over both.",
        "",
        f"Exit status: 0 success, {CsuloraError.exit_code} error (one line on stderr),"
        f" {UsageError.exit_code} usage error,",
        f"{GateTripped.exit_code} `inspect --fail-above` tripped, 130 interrupted.",
        "",
    ]
    lines += _section(group, root, PROGRAM)
    lines += ["### Commands", "", "| command | what it does |", "| --- | --- |"]
    for name in group.list_commands(root):
        command = group.commands[name]
        lines.append(f"| [`{name}`](#{_anchor(f'{PROGRAM} {name}')}) | {_cell(_first_paragraph(command.help))} |")
    lines.append("")
    for name in group.list_commands(root):
        command = group.commands[name]
        context = command.context_class(command, info_name=name, parent=root)
        lines += _section(command, context, f"{PROGRAM} {name}")
    return "\n".join(lines).rstrip("\n") + "\n"


def _section(command, context, path: str) -> list[str]:
    parameters = [parameter for parameter in command.get_params(context) if not getattr(parameter, "hidden", False)]
    arguments = [parameter for parameter in parameters if parameter.param_type_name == "argument"]
    options = [parameter for parameter in parameters if parameter.param_type_name == "option"]
    usage = [path, "[OPTIONS]", *(_argument_usage(argument) for argument in arguments)]
    if hasattr(command, "commands"):
        usage.append(getattr(command, "subcommand_metavar", None) or "COMMAND [ARGS]...")
    lines = [f"## `{path}`", "", "    " + " ".join(usage), ""]
    if command.help:
        lines += [inspect.cleandoc(command.help), ""]
    if getattr(command, "epilog", None):
        lines += ["Examples:", "", *(f"    {line}" for line in inspect.cleandoc(command.epilog).splitlines()), ""]
    if arguments:
        lines += ["### Arguments", "", "| argument | takes | required | help |", "| --- | --- | --- | --- |"]
        for argument in arguments:
            takes = _value_name(argument) + (" ..." if argument.nargs != 1 else "")
            required = "yes" if argument.required else "no"
            lines.append(f"| `{_argument_name(argument)}` | {takes} | {required} | {_cell(_help(argument))} |")
        lines.append("")
    if options:
        lines += ["### Options", "", "| option | takes | default | help |", "| --- | --- | --- | --- |"]
        for option in options:
            flags = ", ".join(f"`{flag}`" for flag in [*option.opts, *option.secondary_opts])
            takes = "flag" if option.is_flag else _value_name(option)
            lines.append(f"| {flags} | {takes} | {_default(option, context)} | {_cell(_help(option))} |")
        lines.append("")
    return lines


def _argument_name(argument) -> str:
    return argument.metavar or argument.name.upper()


def _argument_usage(argument) -> str:
    name = _argument_name(argument) + ("..." if argument.nargs != 1 else "")
    return name if argument.required else f"[{name}]"


def _value_name(parameter) -> str:
    """What a parameter takes: its metavar, else the name of its type (INTEGER, FLOAT, TEXT, PATH)."""
    if parameter.metavar:
        return parameter.metavar
    descriptor = getattr(parameter, "type_descriptor", None)
    if descriptor is None:  # a typer that hands click its types
        return parameter.type.name.upper()
    annotation = descriptor.annotation
    if get_origin(annotation) in (list, tuple):
        annotation = get_args(annotation)[0]
    return _VALUE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)).upper())


def _default(option, context) -> str:
    if option.required:
        return "required"
    if option.show_default is False:
        return "-"
    default = option.get_default(context, call=False)
    if option.is_flag:
        return "on" if default else "off"
    if default is None or default == () or callable(default):
        return "-"
    return f"`{default}`"


def _help(parameter) -> str:
    return inspect.cleandoc(getattr(parameter, "help", None) or "")


def _first_paragraph(text: str | None) -> str:
    return inspect.cleandoc(text or "").split("\n\n")[0]


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading (lower case, spaces to dashes, punctuation dropped)."""
    kept = "".join(char for char in heading.lower() if char.isalnum() or char in " -_")
    return kept.replace(" ", "-")
