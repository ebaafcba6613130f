"""`csulora_cli.report.validate` and `csulora validate FILE`: outputs checked against the shipped schemas,
their `$ref`s resolved, in one call (the tests' own schema checks go through it: tests/helpers.py)."""

from __future__ import annotations

import json

import pytest

from csulora_cli.errors import FormatError
from csulora_cli.report import validate
from tests.helpers import assert_ok, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def corrected(models, subspace, root):
    out = root / "validated"
    assert_ok(run_cli("correct", models[2], "--subspace", subspace, "--out", out))
    return out


def test_a_report_and_a_json_document_validate_in_one_call(corrected, models, subspace):
    report = json.loads((corrected / "csulora_report.json").read_text())
    assert validate(report) == "report"
    document = json.loads(run_cli("inspect", models[2], "--subspace", subspace, "--json").stdout)
    assert validate(document) == "inspect"  # its $refs into report.schema.json resolved


def test_a_broken_document_names_where_it_breaks(corrected):
    report = json.loads((corrected / "csulora_report.json").read_text())
    report["modules"][0]["rank"] = "eight"
    with pytest.raises(FormatError, match=r"^does not match report.schema.json at modules/0/rank: 'eight' is not"):
        validate(report)


def test_the_command_checks_files(corrected, tmp_path):
    report = corrected / "csulora_report.json"
    result = assert_ok(run_cli("validate", report))
    assert result.stdout.strip() == f"valid: {report} (report.schema.json)"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(json.loads(report.read_text()) | {"modules": {}}))
    line = assert_one_line_error(run_cli("validate", broken), 1, str(broken), "modules")
    assert "report.schema.json" in line
    (tmp_path / "not.json").write_text("{")
    assert_one_line_error(run_cli("validate", tmp_path / "not.json"), 1, "not JSON")
