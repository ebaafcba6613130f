"""Adding a correction method or a detection statistic is one registry entry (docs/architecture.md,
"Recipes"): followed here, the new method is offered by `--method`, listed in `--help`, accepted by the
request check and runs; the new statistic is offered by `--gate` and gates.

`--method` and `--gate` read the registries when the command line is built, as they would read an entry
written in the registry's file: the entries are added in a fresh process, before it imports the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

from csulora_cli.correction.methods import METHODS, MethodEntry, check_method
from csulora_cli.errors import UsageError

# A method per the recipe: its rule in a module of its own, a `CorrectionMethod` subclass.
HALVING = """
from csulora_cli.correction.methods.base import CorrectionMethod


class Halving(CorrectionMethod):
    def corrected_b(self, update, subspace, params):
        return update.lora_b * 0.5
"""

DRIVER = """
import json, sys
from csulora_cli.correction import methods, statistics

methods.METHODS["halve"] = methods.MethodEntry("halve", "halve every update", "halving", "Halving", two_sided=False)
statistics.STATISTICS["inside_share"] = statistics.Statistic(
    "inside_share", "low", "share of the update inside the subspace", lambda e: 1.0 - statistics.off_share(e)
)

from typer.testing import CliRunner
from csulora_cli.api import CorrectionParams, CorrectRequest, SubspaceSpec
from csulora_cli.cli import app

adapter, subspace, out = sys.argv[1:]
runner = CliRunner()
found = {"help": runner.invoke(app, ["correct", "--help"]).stdout}
corrected = runner.invoke(app, ["correct", adapter, "--subspace", subspace, "--method", "halve", "--out", out])
found["correct"] = [corrected.exit_code, corrected.stderr]
try:
    CorrectRequest(adapters=adapter, out=out, subspace=SubspaceSpec(subspace=subspace), method="halve",
                   correction=CorrectionParams(two_sided=True))
except Exception as error:
    found["two_sided"] = str(error)
gated = runner.invoke(app, ["inspect", adapter, "--subspace", subspace, "--gate", "inside_share", "--fail-below", "1"])
found["gate"] = [gated.exit_code, gated.stderr]
print(json.dumps(found))
"""


def test_a_registered_method_and_statistic_are_offered_checked_and_run(models, subspace, tmp_path):
    _, _, adapter = models
    (tmp_path / "halving.py").write_text(HALVING)
    out = tmp_path / "halved"
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(Path.cwd())]))
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(adapter), str(subspace), str(out)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.splitlines()[-1])
    assert f"--method <{'|'.join([*METHODS, 'halve'])}>" in found["help"]
    assert found["correct"] == [0, ""]
    original = load_file(adapter / "adapter_model.safetensors")
    halved = load_file(out / "adapter_model.safetensors")
    b_keys = [key for key in original if "lora_B" in key]
    assert b_keys
    for key in b_keys:
        torch.testing.assert_close(halved[key], original[key] * 0.5)
    assert found["two_sided"].startswith("two_sided: method halve has no two-sided form")
    assert found["gate"][0] == 3 and "inside_share" in found["gate"][1]


def test_the_request_check_reads_the_registry(monkeypatch):
    monkeypatch.setitem(METHODS, "halve", MethodEntry("halve", "halve every update", "halving", "Halving"))
    check_method("halve", two_sided=True)
    monkeypatch.delitem(METHODS, "halve")
    try:
        check_method("halve", two_sided=False)
    except UsageError as error:
        assert "unknown method 'halve'" in str(error)
    else:
        raise AssertionError("an unregistered method was accepted")


def test_the_report_schema_lists_every_registered_method():
    schema = json.loads((Path(__file__).parents[2] / "csulora_cli/report/schemas/report.schema.json").read_text())
    assert schema["properties"]["method"]["properties"]["name"]["enum"] == list(METHODS)
