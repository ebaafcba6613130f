"""Run the CLI (in process, or as the installed console script), and read back what it wrote.

`run_cli` invokes the app in this process through typer's `CliRunner`: the same parser, error boundary
and exit codes as the console script, without importing torch again for every call. `run_console_script`
starts a real process, for what only a process shows (signals, kills, the console script itself, Hub
settings that huggingface_hub reads once at import). The dense float64 references the tests compare
against are built here from the files on disk, independently of the library's own math.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from typer.testing import CliRunner

from csulora_cli.cli import app
from csulora_cli.report import validate
from csulora_cli.report.schema_files import SCHEMA_NAMES

# Basis rank the end-to-end tests estimate with: small models, quick runs.
RANK = 8
# Tokens of the Hub stand-in's users: WRITER may push to `org` (the `hub` fixture of tests/e2e/conftest.py),
# READER may read org/private and write nothing.
WRITER = "hf_writerTOKEN0123456789"
READER = "hf_readerTOKEN0123456789"
# Wide enough for every demo module: a basis of this many columns holds all of V (the `full_subspace` fixture).
FULL_RANK = 128


def _find_script() -> str:
    beside_python = Path(sys.executable).parent / "csulora"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("csulora")
    if found is None:
        raise RuntimeError("the csulora console script is not installed (pip install -e .)")
    return found


CSULORA = _find_script()


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def json(self):
        """The JSON document on stdout, checked against its command's shipped JSON Schema."""
        try:
            document = json.loads(self.stdout)
        except json.JSONDecodeError as error:
            raise AssertionError(f"stdout is not JSON ({error}):\n{self.stdout}\nstderr:\n{self.stderr}") from None
        if isinstance(document, dict) and document.get("command") in SCHEMA_NAMES:
            validate_against_schema(document, document["command"])
        return document

    def report(self) -> dict:
        """The one adapter's report in `correct --json` / `inspect --json`."""
        (report,) = self.reports()
        return report

    def reports(self) -> list[dict]:
        document = self.json()
        assert document["command"] in ("correct", "inspect"), document["command"]
        return document["adapters"]

    def subspace(self) -> dict:
        """The `subspace` record of `estimate-subspace --json`."""
        document = self.json()
        assert document["command"] == "estimate-subspace", document["command"]
        return document["subspace"]

    def describe(self) -> str:
        return f"csulora {' '.join(self.args)}\nrc={self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_cli(
    *args, env: dict[str, str | None] | None = None, cwd: Path | None = None, input: str | None = None
) -> CliResult:
    """Run `csulora ARGS...` in this process; `env` entries are set (or, with value None, removed) meanwhile;
    `input` is what the command reads on stdin.

    The Hub stays offline: huggingface_hub read HF_HUB_OFFLINE=1 at import (tests/conftest.py).
    """
    strings = tuple(str(arg) for arg in args)
    environment = {"CSULORA_DEBUG": None} | {
        key: None if value is None else str(value) for key, value in (env or {}).items()
    }
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(app, list(strings), input=input, env=environment, catch_exceptions=False)
    return CliResult(strings, result.exit_code, result.stdout, result.stderr)


# huggingface_hub reads these variables once, at import, into `constants`: an in-process run against the
# Hub stand-in sets the constants each would have set (the process-wide import stays offline otherwise).
_HUB_TIMEOUTS = ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")


def run_cli_on_hub(*args, env: dict[str, str | None], cwd: Path | None = None) -> CliResult:
    """`run_cli` with huggingface_hub's constants set from `env`'s HF_ENDPOINT, HF_HUB_OFFLINE, HF_HOME and
    timeouts, as a fresh process started with that environment would have them (Xet off: the stand-in
    speaks LFS). Other variables (HF_TOKEN, CSULORA_CACHE) are read at run time and pass through."""
    from unittest import mock

    from huggingface_hub import constants

    endpoint = str(env["HF_ENDPOINT"]).rstrip("/")
    values = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE") == "1",
        "HF_HUB_DISABLE_XET": True,
    }
    if env.get("HF_HOME") is not None:
        values["HF_HUB_CACHE"] = str(Path(env["HF_HOME"]) / "hub")
    values |= {name: float(env[name]) for name in _HUB_TIMEOUTS if env.get(name) is not None}
    with mock.patch.multiple(constants, **values):
        return run_cli(*args, env=env, cwd=cwd)


def run_console_script(
    *args, env: dict[str, str | None] | None = None, cwd: Path | None = None, timeout: float = 300
) -> CliResult:
    """Run the installed `csulora ARGS...` in a subprocess; `env` as for `run_cli`.

    CSULORA_DEBUG is cleared unless asked for, and the Hub is kept offline.
    """
    environment = dict(os.environ)
    environment.pop("CSULORA_DEBUG", None)
    environment["HF_HUB_OFFLINE"] = "1"
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = str(value)
    strings = tuple(str(arg) for arg in args)
    completed = subprocess.run(
        [CSULORA, *strings],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(strings, completed.returncode, completed.stdout, completed.stderr)


def validate_against_schema(document, name: str) -> None:
    """Raise when `document` does not match the package's `<name>.schema.json`, through the helper users
    call (`csulora_cli.report.validate`, which resolves the schemas' `$ref`s to each other)."""
    validate(document, name)


def read_report(folder: Path) -> dict:
    """An output folder's csulora_report.json, checked against report.schema.json."""
    report = json.loads((folder / "csulora_report.json").read_text())
    validate_against_schema(report, "report")
    return report


def assert_ok(result: CliResult) -> CliResult:
    assert result.rc == 0, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    return result


def assert_one_line_error(result: CliResult, code: int, *mentions: str) -> str:
    """Exit `code`, exactly one line on stderr, no traceback, nothing on stdout; returns the line."""
    assert result.rc == code, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    assert len(result.stderr_lines) == 1, result.describe()
    assert result.stdout.strip() == "", result.describe()
    line = result.stderr_lines[0]
    for mention in mentions:
        assert mention in line, f"{mention!r} not in the error line:\n{result.describe()}"
    return line


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (bytes), by relative POSIX path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under `root`, by relative path."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": root.read_bytes()}
    tree: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        tree[key] = path.read_bytes() if path.is_file() else None
    return tree


def safetensors_header_bytes(path: Path) -> bytes:
    """The raw JSON header of a safetensors file (key order, dtypes, shapes, offsets, metadata)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return handle.read(length)


def safetensors_header(path: Path) -> dict:
    return json.loads(safetensors_header_bytes(path))


def tensor_bytes(path: Path) -> dict[str, bytes]:
    """Each tensor's raw data bytes, by key, straight from the file's offsets."""
    header = safetensors_header(path)
    header.pop("__metadata__", None)
    data = path.read_bytes()
    start = 8 + len(safetensors_header_bytes(path))
    return {
        key: data[start + info["data_offsets"][0] : start + info["data_offsets"][1]] for key, info in header.items()
    }


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def model_tensor(folder: Path, key: str) -> torch.Tensor:
    """One tensor of a local model folder (single `model.safetensors`, or shards with an index)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shard = folder / json.loads(index.read_text())["weight_map"][key]
    else:
        shard = folder / "model.safetensors"
    with safe_open(str(shard), framework="pt") as handle:
        return handle.get_tensor(key)


def exact_subspace(base: Path, aligned: Path, key: str, transposed: bool = False):
    """Dense float64 SVD of V = W_a - W_b in output-space form: (U, S, total energy)."""
    displacement = model_tensor(aligned, key).double() - model_tensor(base, key).double()
    if transposed:
        displacement = displacement.T
    left, singular_values, _ = torch.linalg.svd(displacement, full_matrices=False)
    return left, singular_values, float(displacement.square().sum())


def energy_rank(singular_values: torch.Tensor, total_energy: float, energy: float, max_rank: int) -> int:
    """docs/method.md section 2: k = min(max_rank, smallest k whose cumulative energy reaches `energy`)."""
    cumulative = torch.cumsum(singular_values.double().square(), dim=0) / total_energy
    reached = int(torch.nonzero(cumulative >= energy)[0, 0]) + 1
    return min(reached, max_rank)
