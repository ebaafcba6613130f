"""`--help` in groups (inputs, method, estimation, gate, output, Hub), with each command's examples last.

The app renders help as plain text (`rich_markup_mode=None`, so that `org/name[@revision]` shows as
typed), and typer's plain renderer ignores `rich_help_panel`: this command class groups the options
itself, by the panel each option's declaration names (`options.py`), and prints arguments by their own names
(`ADAPTER...`) instead of typer's type names (`<list[str]>`).
"""

from __future__ import annotations

import inspect

from typer.core import TyperCommand

from .declared import PANELS
from .options import declared_options

OTHER = "Other"  # what no declaration places: `--help` itself


class GroupedCommand(TyperCommand):
    """A command whose `--help` lists its options in groups and ends with its examples (`epilog`)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = ["[OPTIONS]"]
        for parameter in self.get_params(ctx):
            if parameter.param_type_name == "argument":
                pieces.append(argument_usage(parameter))
        return pieces

    def format_options(self, ctx, formatter) -> None:
        arguments = []
        panel_of = {name: declared.panel for name, declared in declared_options().items()}
        groups: dict[str, list[tuple[str, str]]] = {panel: [] for panel in [*PANELS, OTHER]}
        for parameter in self.get_params(ctx):
            if parameter.param_type_name == "argument":
                arguments.append((argument_usage(parameter), inspect.cleandoc(parameter.help or "")))
                continue
            record = parameter.get_help_record(ctx)
            if record is not None:
                groups[panel_of.get(parameter.name, OTHER)].append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        for panel, records in groups.items():
            if records:
                with formatter.section(panel):
                    formatter.write_dl(records)

    def format_epilog(self, ctx, formatter) -> None:
        """The examples, as typed: click would re-wrap them as a paragraph."""
        if not self.epilog:
            return
        formatter.write_paragraph()
        formatter.write("Examples:\n")
        for line in inspect.cleandoc(self.epilog).splitlines():
            formatter.write(f"  {line}\n" if line.strip() else "\n")


def argument_usage(argument) -> str:
    name = argument.metavar or argument.name.upper()
    name += "..." if argument.nargs != 1 else ""
    return name if argument.required else f"[{name}]"
