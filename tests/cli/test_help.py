"""`--help` as a newcomer reads it: options in groups, arguments by name (no type names), jargon explained,
and two or three examples last."""

from __future__ import annotations

import re

import pytest

from csulora_cli.cli.help import PANELS
from tests.helpers import assert_ok, run_cli

COMMANDS = ("estimate-subspace", "correct", "inspect", "verify", "push", "demo")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_groups_options_and_ends_with_examples(command):
    text = assert_ok(run_cli(command, "--help")).stdout
    assert not re.search(r"<(list\[|str>|Path>)|\bTEXT\b|\bPATH\b", text), text
    sections = re.findall(r"^(\w[\w ]*):$", text, re.MULTILINE)
    assert "Options" not in sections and set(sections) - {"Arguments", "Other", "Examples"} <= set(PANELS)
    assert sections[-1] == "Examples"
    examples = text.split("\nExamples:\n", 1)[1].strip().splitlines()
    assert 2 <= len(examples) <= 3 and all(line.strip().startswith(f"csulora {command}") for line in examples)


def test_correct_groups_inputs_method_estimation_output_hub():
    text = run_cli("correct", "--help").stdout
    sections = re.findall(r"^(\w[\w ]*):$", text, re.MULTILINE)
    assert sections == ["Arguments", "Inputs", "Method", "Estimation", "Output", "Hub", "Other", "Examples"]
    assert "ADAPTER..." in text.splitlines()[0]


def test_jargon_is_explained():
    text = " ".join(run_cli("correct", "--help").stdout.split())
    for words in ("0 keeps it, larger removes more", "counts as aligned when", "hard projection", "both sides"):
        assert words in text, words


def test_estimate_subspace_push_help_is_its_own():
    estimate = " ".join(run_cli("estimate-subspace", "--help").stdout.split())
    assert "with a model card written into it" in estimate and "{name}" not in estimate
