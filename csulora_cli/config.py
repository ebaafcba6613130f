"""`--config FILE.yaml`: defaults for any option of a command; flags given on the command line win."""

from __future__ import annotations

from pathlib import Path

import click
import yaml
from click.core import ParameterSource

from .errors import FormatError, UsageError


def read_config_file(path: Path) -> dict:
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError("config file does not exist", where=str(path)) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise FormatError(f"not valid YAML ({str(error).splitlines()[0]})", where=str(path)) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise FormatError("expected a mapping of option names to values", where=str(path))
    return values


def apply_config(ctx: click.Context, path: Path | None, options: dict) -> dict:
    """Return `options` with every value the user did not type taken from the config file.

    Keys are option names without `--` (`cache-dir` or `cache_dir`); each value goes through the
    option's own click type, so a bad value fails exactly like the same flag would.
    """
    if path is None:
        return options
    by_flag = {}
    for parameter in ctx.command.params:
        if isinstance(parameter, click.Option):
            for flag in parameter.opts:
                by_flag[flag.lstrip("-")] = parameter
    merged = dict(options)
    for key, value in read_config_file(path).items():
        parameter = by_flag.get(str(key).replace("_", "-"))
        if parameter is None or parameter.name == "config":
            raise UsageError(f"unknown option {key!r} for this command", where=str(path))
        if ctx.get_parameter_source(parameter.name) != ParameterSource.DEFAULT:
            continue
        try:
            merged[parameter.name] = parameter.type_cast_value(ctx, value)
        except click.BadParameter as error:
            raise UsageError(f"bad value for {key}: {error.message}", where=str(path)) from None
    return merged
