"""`--push-to-hub` as the library sees it: requests that cannot be pushed are refused as they are made,
naming the parameter (the CLI spells it as the flag); the push record stays out of the report file."""

from __future__ import annotations

from dataclasses import replace

import pytest

from csulora_cli.api import CorrectRequest, EstimateRequest, PushSpec, SubspaceSpec
from csulora_cli.errors import UsageError
from csulora_cli.report.records import AdapterReport, PushRecord


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda folder: PushSpec("org/{nme}-safe"), "push_to_hub"),
        (lambda folder: PushSpec("org/x", revision="0123456789abcdef0123456789abcdef01234567"), "revision"),
        (lambda folder: EstimateRequest(base="b", aligned="a", push=PushSpec("org/x")), "push_to_hub"),
        (
            lambda folder: CorrectRequest(
                adapters=(folder,), subspace=SubspaceSpec(subspace=folder), dry_run=True, push=PushSpec("org/x")
            ),
            "push_to_hub",
        ),
        (
            lambda folder: CorrectRequest(
                adapters=(folder / "a", folder / "b"),
                subspace=SubspaceSpec(subspace=folder),
                out_dir=folder / "out",
                push=PushSpec("org/x"),
            ),
            "push_to_hub",
        ),
    ],
)
def test_unpushable_requests_are_refused_naming_the_parameter(make, parameter, tmp_path):
    with pytest.raises(UsageError) as refused:
        make(tmp_path)
    assert refused.value.parameter == parameter


def test_a_name_template_gives_each_output_its_repo(tmp_path):
    spec = PushSpec("org/{name}-safe")
    assert spec.templated and spec.repo_for("a-adapter") == "org/a-adapter-safe"
    assert not PushSpec("org/x").templated


def test_the_push_is_in_the_json_entry_and_not_in_the_report_file():
    report = AdapterReport(
        adapter="/a", output="/o", method={"name": "csulora", "params": {}, "reference": None}, subspace={}
    )
    pushed = PushRecord("org/x", "main", "c" * 40, "https://hub/org/x/commit/" + "c" * 40)
    assert report.document_entry() == report.to_dict()
    after_push = replace(report, pushed=pushed)
    assert after_push.document_entry() == report.to_dict() | {"pushed": pushed.to_dict()}
    assert after_push.to_dict() == report.to_dict()
