"""Every option is one declaration (cli/declared.py, cli/options.py): each command's options are exactly the
declared ones, an option two groups declare agrees with itself, the tables `--help`, `--config`, the
estimation check and the error boundary read come from the declarations, and a new declaration reaches all
of them (docs/architecture.md, "Recipes": an option)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from csulora_cli.cli import app, options
from csulora_cli.cli.boundary import CsuloraGroup
from csulora_cli.cli.declared import OUTPUT, PATH, OptionGroup, declared_fields, option, takes_option_groups
from csulora_cli.cli.help import GroupedCommand
from csulora_cli.cli.options import ConfigFile, declared_options, estimation_only
from csulora_cli.errors import UsageError

COMMANDS = typer.main.get_command(app).commands


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_of_a_command_is_declared(name):
    declared = declared_options()
    for parameter in COMMANDS[name].params:
        if parameter.param_type_name == "option" and parameter.name != "help":
            assert parameter.name in declared, (name, parameter.name)
            assert declared[parameter.name].flag in parameter.opts


def test_an_option_two_groups_declare_means_the_same_in_both():
    facts = defaultdict(set)
    for group in options.GROUPS:
        for name, declared in declared_fields(group):
            facts[name].add(
                (declared.flag, declared.panel, declared.value, declared.parameter, declared.estimation_only)
            )
    assert {name: found for name, found in facts.items() if len(found) > 1} == {}


def test_the_tables_are_read_from_the_declarations():
    assert estimation_only() == {
        "exact": "--exact",
        "seed": "--seed",
        "power_iterations": "--power-iterations",
        "cache_dir": "--cache-dir",
    }
    paths = {name for name, declared in declared_options().items() if declared.value == "path"}
    assert paths == {"adapter", "cache_dir", "keep", "out", "out_dir", "subspace", "plot"}
    flag_of = typer.main.get_command(app).flag_of
    assert (flag_of("max_rank"), flag_of("lambda_"), flag_of("adapters"), flag_of("energy")) == (
        "--rank",
        "--lambda",
        "ADAPTER",
        "--energy",
    )


def test_defaults_are_the_librarys():
    from csulora_cli.api import CorrectionParams, EstimationParams, SubspaceSpec

    defaults = {name: parameter.default for name, parameter in ((p.name, p) for p in COMMANDS["correct"].params)}
    assert defaults["lambda_"] == CorrectionParams().lambda_ and defaults["rank"] == EstimationParams().max_rank
    assert defaults["energy"] == SubspaceSpec(subspace="s").energy and defaults["device"] == "auto"


# The recipe, followed: a group with one option, taken by a command.
@dataclass(frozen=True)
class Greeting(OptionGroup):
    greeting_file: Path | None = option(
        "--greeting-file",
        metavar="FILE",
        panel=OUTPUT,
        value=PATH,
        parameter="greeting",
        help="Where the greeting goes.",
        default=None,
    )


def test_a_declared_option_reaches_help_config_the_command_and_errors(monkeypatch, tmp_path):
    monkeypatch.setattr(options, "GROUPS", (*options.GROUPS, Greeting))
    received = []
    greeter = typer.Typer(cls=CsuloraGroup, rich_markup_mode=None, add_completion=False)

    @greeter.command("greet", cls=GroupedCommand)
    @takes_option_groups
    def greet(greeting: Greeting, config: ConfigFile) -> None:
        received.append(greeting)
        if greeting.greeting_file is None:
            raise UsageError("needs a file: give {greeting}", parameter="greeting")

    @greeter.command("other")
    def other() -> None:
        pass

    def invoke(*args):
        return CliRunner().invoke(greeter, list(args), catch_exceptions=False)

    assert "Output:\n  --greeting-file FILE  Where the greeting goes." in invoke("greet", "--help").stdout
    preset = tmp_path / "presets" / "greeting.yaml"
    preset.parent.mkdir()
    preset.write_text("greeting-file: hello.txt\n")
    assert invoke("greet", "--config", str(preset)).exit_code == 0
    assert received[-1].greeting_file == preset.parent / "hello.txt" and received[-1].preset == {"greeting_file"}
    assert invoke("greet", "--greeting-file", "typed.txt").exit_code == 0
    assert received[-1].greeting_file == Path("typed.txt") and received[-1].typed == {"greeting_file"}
    refused = invoke("greet")
    assert (refused.exit_code, refused.stderr) == (
        2,
        "csulora: error: --greeting-file: needs a file: give --greeting-file\n",
    )
