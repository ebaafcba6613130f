"""`--help` in groups (inputs, method, estimation, gate, output, Hub), with each command's examples last.

The app renders help as plain text (`rich_markup_mode=None`, so that `org/name[@revision]` shows as
typed), and typer's plain renderer ignores `rich_help_panel`: this command class groups the options
itself, by the panel each parameter is listed under here, and prints arguments by their own names
(`ADAPTER...`) instead of typer's type names (`<list[str]>`).
"""

from __future__ import annotations

import inspect

from typer.core import TyperCommand

# Every parameter of every command, by the group `--help` lists it in, in this order.
PANELS: dict[str, tuple[str, ...]] = {
    "Inputs": ("subspace", "base", "aligned", "adapter", "modules", "layers", "confirm_order", "config", "schema"),
    "Method": (
        "method",
        "lambda_",
        "eps",
        "two_sided",
        "safelora_select",
        "safelora_threshold",
        "safelora_layers",
    ),
    "Estimation": ("rank", "energy", "exact", "seed", "power_iterations", "device", "cache_dir"),
    "Gate": ("gate", "fail_above", "fail_below", "plot"),
    "Output": ("out", "out_dir", "storage", "dry_run", "recorrect", "overwrite", "keep", "json_output", "quiet"),
    "Hub": ("push_to_hub", "private", "revision", "token", "fetch"),
}
PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}
OTHER = "Other"


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
        groups: dict[str, list[tuple[str, str]]] = {panel: [] for panel in [*PANELS, OTHER]}
        for parameter in self.get_params(ctx):
            if parameter.param_type_name == "argument":
                arguments.append((argument_usage(parameter), inspect.cleandoc(parameter.help or "")))
                continue
            record = parameter.get_help_record(ctx)
            if record is not None:
                groups[PANEL_OF.get(parameter.name, OTHER)].append(record)
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
