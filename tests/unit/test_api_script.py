"""The Python API as a user's script calls it: the README's example run as written in the demo's folder,
then the forms a user types (one adapter as a string or a Path, a list, a request that names no bases)."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
from pathlib import Path

import pytest

from csulora_cli.api import CorrectRequest, InspectRequest, SubspaceSpec, inspect
from csulora_cli.errors import UsageError
from csulora_cli.testing.builders import build_demo

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_script() -> tuple[str, list[str]]:
    """The Python block after the README's marker, and the lines it says the script prints."""
    text = README.read_text()
    after = text.split("<!-- tested as a user script: tests/unit/test_api_script.py -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", after, re.DOTALL)[1]
    printed = re.search(r"```\n\nprints\n\n((?:    .*\n)+)", after)[1]
    return code, [line.removeprefix("    ") for line in printed.splitlines()]


def test_the_readme_script_runs_as_written_and_prints_what_it_says(tmp_path, single_thread):
    build_demo(tmp_path)
    code, expected = readme_script()
    script = tmp_path / "script.py"
    script.write_text(code)
    printed = io.StringIO()
    with contextlib.chdir(tmp_path), contextlib.redirect_stdout(printed):
        runpy.run_path(str(script), run_name="__main__")
    assert printed.getvalue().splitlines() == expected
    assert (tmp_path / "api-safe" / "csulora_report.json").is_file()


@pytest.mark.parametrize("adapters", ["adapter", Path("adapter"), ["adapter"], ("adapter",)])
def test_one_adapter_or_a_list(adapters):
    request = CorrectRequest(adapters=adapters, out="safe", subspace=SubspaceSpec(subspace="s"))
    assert request.adapters == (adapters if not isinstance(adapters, (list, tuple)) else adapters[0],)
    assert request.out == Path("safe")


def test_a_subspace_spec_without_bases_is_refused_as_it_is_built():
    with pytest.raises(UsageError, match="^subspace: names no bases"):
        SubspaceSpec()
    with pytest.raises(UsageError, match="^subspace: names no bases"):
        CorrectRequest(adapters="adapter", out="safe", subspace=None)
    with pytest.raises(UsageError, match="^aligned: needs the base model too"):
        SubspaceSpec(aligned="aligned")
    with pytest.raises(UsageError, match="^adapters: a folder, a Hub repo id, or a list of them; got int"):
        CorrectRequest(adapters=3, out="safe", subspace=SubspaceSpec(subspace="s"))


def test_inspect_without_a_subspace_lists_the_modules(demo_models):
    _, _, adapter = demo_models
    assert inspect(InspectRequest(adapter=str(adapter))).summaries


def test_every_public_function_has_an_example():
    import csulora_cli.api as api

    functions = ["correct", "estimate_subspace", "inspect", "detect_adapter", "verify_outputs", "push_output"]
    for name in functions:
        doc = getattr(api, name).__doc__ or ""
        assert f"{name}(" in doc, f"{name} has no example in its docstring"
