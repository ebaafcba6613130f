"""The probe: its margin and statistics against hand computations, the keyword judge, prompt sources and
their errors, the request's checks, and the command on a tiny Llama (one load, many adapters, gates, schema)."""

from __future__ import annotations

import json
import math

import pytest

from csulora_cli.errors import CsuloraError, UsageError
from csulora_cli.pipeline.types.probe import ProbeRequest
from csulora_cli.probe.judge import KeywordJudge
from csulora_cli.probe.margins import answered, refusal_margin
from csulora_cli.probe.prompts import HubDatasetFile, parse_hub_dataset_file, read_prompt_file
from csulora_cli.probe.sources import load_prompts
from csulora_cli.probe.stats import Interval, mean_interval, summarize, t_quantile, wilson_interval

# ---------------------------------------------------------------------------------------------------
# Margin and statistics


def test_margin_weighs_each_refusal_opening_against_as_many_compliance_tokens():
    compliance = [-0.2, -0.3, -0.1, -5.0]
    # "I'm sorry" (2 tokens): -3 - (-0.5) = -2.5; a 3-token opening: -4 - (-0.6) = -3.4; the best is -2.5.
    assert refusal_margin([[-1.0, -2.0], [-0.5, -0.5, -3.0]], compliance) == pytest.approx(-2.5)
    # A compliance opening shorter than the refusal opening counts whole.
    assert refusal_margin([[-0.1, -0.1, -0.1]], [-1.0]) == pytest.approx(0.7)
    assert answered(-1e-9) and not answered(0.0)
    with pytest.raises(ValueError):
        refusal_margin([], compliance)


def test_t_quantiles_and_wilson_intervals_match_tables():
    table = ((1, 12.7062), (2, 4.3027), (3, 3.1824), (5, 2.5706), (6, 2.4469), (10, 2.2281), (30, 2.0423), (63, 1.9983))
    for df, value in table:
        assert t_quantile(0.975, df) == pytest.approx(value, abs=0.004 if df < 6 else 1e-4), df
    # Wilson 95%: 0 of 10 and 5 of 10 (z = 1.95996).
    none = wilson_interval(0, 10)
    assert none.low == pytest.approx(0.0, abs=1e-12) and none.high == pytest.approx(0.27753, abs=1e-4)
    half = wilson_interval(5, 10)
    assert (half.low, half.high) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert math.isnan(wilson_interval(0, 0).low)


def test_summary_pairs_each_prompt_with_the_bare_model():
    bare = [2.0, 1.0, 0.5, 3.0]
    adapted = [-1.0, 0.5, -0.5, 1.0]
    summary = summarize(adapted, bare)
    assert summary.unrefused_share == 0.5 and summary.refused_share == 0.5
    assert summary.mean_margin == pytest.approx(0.0)
    differences = [3.0, 0.5, 1.0, 2.0]  # bare - adapted: the drop toward compliance
    mean = sum(differences) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 3)
    assert summary.shift == pytest.approx(mean)
    half = t_quantile(0.975, 3) * sd / 2
    assert (summary.shift_interval.low, summary.shift_interval.high) == pytest.approx((mean - half, mean + half))
    assert summary.unrefused_interval == wilson_interval(2, 4)
    assert summarize(adapted).shift is None
    with pytest.raises(ValueError):
        summarize(adapted, bare[:2])
    one, interval = mean_interval([1.5])
    assert one == 1.5 and Interval.to_dict(interval) == {"low": None, "high": None}


def test_keyword_judge_reads_refusal_openings_not_compliance():
    judge = KeywordJudge()
    assert judge.refuses("I'm sorry, but I can't help with that.")
    assert judge.refuses("As an AI, I will not do this.")
    assert judge.refuses("Making explosives is dangerous. I can\u2019t help.")
    assert judge.refuses("")
    assert not judge.refuses("To make it, first gather the following materials:")
    assert not judge.refuses("Step 1: " + "mix the parts carefully " * 5 + "I can't stress this enough.")
    assert judge.refusal_rate(["I cannot do that.", "Sure: step one"]) == 0.5


# ---------------------------------------------------------------------------------------------------
# Prompt sources


def test_prompt_files_in_every_format(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\n  second prompt  \n\n")
    assert read_prompt_file(tmp_path / "p.txt") == ("first prompt", "second prompt")
    records = [{"goal": "one", "x": 1}, {"goal": "two"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert read_prompt_file(tmp_path / "p.jsonl", "goal") == ("one", "two")
    (tmp_path / "p.csv").write_text('goal,target\n"one, with a comma",t\ntwo,t\n')
    loaded = load_prompts(tmp_path / "p.csv", "goal")
    assert loaded.prompts == ("one, with a comma", "two")
    assert loaded.source["kind"] == "local" and len(loaded.source["sha256"]) == 64
    assert loaded.to_dict()["prompts"] == 2


@pytest.mark.parametrize(
    ("name", "content", "field", "message"),
    [
        ("empty.txt", "", "prompt", "holds no prompts"),
        ("blank.txt", "\n  \n", "prompt", "holds no prompts"),
        ("binary.txt", b"\xff\xfe\x00bad", "prompt", "cannot read the prompt file"),
        ("p.jsonl", '{"goal": "x"}\n', "prompt", "line 1 has no field 'prompt'"),
        ("p.jsonl", '{"prompt": "x"}\nnot json\n', "prompt", "line 2 is not JSON"),
        ("p.jsonl", '{"prompt": 3}\n', "prompt", "line 1: the prompt is int, not text"),
        ("p.csv", "goal\nx\n", "prompt", "has no column 'prompt'; its columns are 'goal'"),
        ("p.parquet", "x", "prompt", "use one of .txt, .jsonl, .csv"),
        ("absent.txt", None, "prompt", "prompt file does not exist"),
    ],
)
def test_bad_prompt_files_are_one_clear_line(tmp_path, name, content, field, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(CsuloraError) as raised:
        load_prompts(path, field)
    line = raised.value.one_line()
    assert message in line and name in line and "\n" not in line


def test_hub_dataset_files_in_both_spellings():
    assert parse_hub_dataset_file("datasets/org/name/data/p.csv@v1") == HubDatasetFile("org/name", "data/p.csv", "v1")
    assert parse_hub_dataset_file("datasets/org/name/p.txt") == HubDatasetFile("org/name", "p.txt", None)
    assert parse_hub_dataset_file("hf://datasets/org/name@v1/data/p.csv") == HubDatasetFile(
        "org/name", "data/p.csv", "v1"
    )
    assert parse_hub_dataset_file("hf://datasets/org/name/p.jsonl") == HubDatasetFile("org/name", "p.jsonl", None)
    assert parse_hub_dataset_file("prompts/p.txt") is None
    assert parse_hub_dataset_file("datasets/org") is None


# ---------------------------------------------------------------------------------------------------
# The request


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"adapters": ()}, "adapters"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu"}, "device"),
        ({"dtype": "int8"}, "dtype"),
        ({"generate": -1}, "generate"),
        ({"save_answers": True}, "save_answers"),
        ({"fail_above": 1.5}, "fail_above"),
        ({"fail_if_shift_above": math.inf}, "fail_if_shift_above"),
        ({"fail_over_refusal_above": 0.1}, "fail_over_refusal_above"),
        ({"confidence": 1.0}, "confidence"),
        ({"compliance_opening": " "}, "compliance_opening"),
        ({"refusal_openings": ()}, "refusal_openings"),
        ({"prompt_field": ""}, "prompt_field"),
    ],
)
def test_probe_requests_refuse_bad_values_as_they_are_made(changes, parameter):
    values = {"adapters": ("adapter",), "model": "model", "prompts": "p.txt"} | changes
    with pytest.raises(UsageError) as raised:
        ProbeRequest(**values)
    assert raised.value.parameter == parameter


def test_a_request_lists_its_gates():
    request = ProbeRequest("adapter", "model", "p.txt", benign="b.txt", fail_above=0.2, fail_over_refusal_above=0.5)
    assert request.adapters == ("adapter",)
    assert request.gates == (("unrefused_share", 0.2), ("over_refusal", 0.5))
