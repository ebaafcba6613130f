"""`--config FILE.yaml`: defaults for any option of a command; flags given on the command line win.

The file is read before the command line is parsed and handed to the parser as its map of defaults,
so every value goes through the option's own type and anything typed on the command line wins.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import FormatError, UsageError


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


def config_defaults(group, args: list[str]) -> dict | None:
    """The parser's default map {command: {parameter: value}} from the `--config` in `args`, if any."""
    command_name = next((arg for arg in args if not arg.startswith("-")), None)
    commands = getattr(group, "commands", {})
    if command_name not in commands:
        return None
    path = _config_path(args)
    if path is None:
        return None
    # Keys are option names without `--` (`cache-dir` or `cache_dir`); the parser wants parameter names.
    by_flag = {}
    for parameter in commands[command_name].params:
        if getattr(parameter, "param_type_name", None) == "option":
            for flag in parameter.opts:
                if flag.startswith("--"):
                    by_flag[flag[2:]] = parameter.name
    defaults = {}
    for key, value in read_config_file(path).items():
        name = by_flag.get(str(key).replace("_", "-"))
        if name is None or name == "config":
            raise UsageError(f"unknown option {key!r} for {command_name}", where=str(path))
        defaults[name] = value
    return {command_name: defaults}


def _config_path(args: list[str]) -> Path | None:
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--config" and index + 1 < len(args):
            return Path(args[index + 1]).expanduser()
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]).expanduser()
    return None
