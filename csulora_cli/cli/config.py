"""`--config FILE.yaml`: defaults for any option of a command; flags given on the command line win.

The file is read before the command line is parsed and handed to the parser as its map of defaults,
so every value goes through the option's own type and anything typed on the command line wins.
Paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from ..errors import FormatError, UsageError
from .declared import MODEL, PATH
from .options import declared_options


def read_config_file(path: Path) -> dict:
    import yaml  # only when a config is given: startup stays short for every other command

    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError("config file does not exist", where=str(path)) from None
    except yaml.YAMLError as error:
        # A usage error (exit 2), like a mistyped flag: the file is part of the command line.
        raise UsageError(f"not valid YAML ({_yaml_problem(error)})", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise FormatError(f"cannot be read as YAML ({error})", where=str(path)) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise FormatError("expected a mapping of option names to values", where=str(path))
    return values


def _yaml_problem(error) -> str:
    """Where and what: `line 3, column 1: expected ',' or ']'` (PyYAML counts lines from 0)."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def config_defaults(group, args: list[str]) -> dict | None:
    """The parser's default map {command: {parameter: value}} from the `--config` in `args`, if any.

    One preset serves every command: a key that only another command takes is skipped; a key that no
    command takes is an error, with the nearest known key as a suggestion.
    """
    command_name = next((arg for arg in args if not arg.startswith("-")), None)
    commands = getattr(group, "commands", {})
    if command_name not in commands:
        return None
    path = _config_path(args)
    if path is None:
        return None
    # Keys are option names without `--` (`cache-dir` or `cache_dir`); the parser wants parameter names.
    by_flag = _options_by_flag(commands[command_name])
    known_anywhere = {flag for command in commands.values() for flag in _options_by_flag(command)}
    defaults = {}
    for key, value in read_config_file(path).items():
        flag = str(key).replace("_", "-")
        if flag == "config" or flag not in known_anywhere:
            raise UsageError(f"unknown option {key!r}{_suggestion(flag, known_anywhere)}", where=str(path))
        name = by_flag.get(flag)
        if name is not None:
            defaults[name] = _relative_to(path.parent, name, value)
    return {command_name: defaults}


def _options_by_flag(command) -> dict[str, str]:
    by_flag = {}
    for parameter in command.params:
        if getattr(parameter, "param_type_name", None) == "option":
            for flag in parameter.opts:
                if flag.startswith("--"):
                    by_flag[flag[2:]] = parameter.name
    return by_flag


def _suggestion(flag: str, known: set[str]) -> str:
    close = difflib.get_close_matches(flag, sorted(known - {"config"}), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _relative_to(folder: Path, name: str, value):
    """A value that names a file or folder (`value=PATH` in its declaration) is read against the config
    file's folder, so a preset means the same from any working directory. A model (`value=MODEL`) is a folder
    or a Hub repo id: read against the config's folder when that names an existing folder, and left as typed
    (a repo id) otherwise."""
    if not isinstance(value, str) or not value:
        return value
    declared = declared_options().get(name)
    kind = declared.value if declared is not None else None
    if kind == PATH:
        given = Path(value).expanduser()
        return str(given if given.is_absolute() else folder / given)
    if kind == MODEL and not Path(value).expanduser().is_absolute():
        candidate = folder / value
        return str(candidate) if candidate.exists() else value
    return value


def _config_path(args: list[str]) -> Path | None:
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--config" and index + 1 < len(args):
            return Path(args[index + 1]).expanduser()
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]).expanduser()
    return None
