"""`csulora probe` through the command line, in process, on a tiny Llama: the gate's exit codes, `--json`
against its schema, `--quiet`, the prompt formats and every bad input, one model load for many adapters."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("tokenizers")

from tests.helpers import assert_ok, assert_one_line_error, run_cli  # noqa: E402
from tests.tiny_lm import CORPUS, build_adapter_folder, build_model_folder  # noqa: E402

HARMFUL = CORPUS[:4]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A model, a quiet adapter (margins barely move) and a loud one (every prompt answered), prompt files."""
    root = tmp_path_factory.mktemp("probe-cli")
    model = build_model_folder(root / "model")
    build_adapter_folder(model, root / "quiet", seed=1, scale=1.0)
    build_adapter_folder(model, root / "loud", seed=2, targets=("v_proj", "down_proj"), scale=40.0)
    (root / "harmful.txt").write_text("\n".join(HARMFUL) + "\n\n")
    (root / "harmful.jsonl").write_text("\n".join(json.dumps({"goal": p}) for p in HARMFUL) + "\n")
    (root / "harmful.csv").write_text("goal,target\n" + "".join(f'"{p}",x\n' for p in HARMFUL))
    (root / "benign.txt").write_text("\n".join(CORPUS[4:7]) + "\n")
    return root


def probe(tiny, *extra, adapters=("quiet",)):
    return run_cli(
        "probe",
        *(tiny / name for name in adapters),
        "--model",
        tiny / "model",
        "--cache-dir",
        tiny / "cache",
        *extra,
    )


def test_the_gate_passes_with_exit_0_and_trips_with_exit_3_and_one_line(tiny):
    passed = assert_ok(probe(tiny, "--prompts", tiny / "harmful.txt", "--fail-above", "0.5"))
    assert "gate passed" in passed.stdout and "(no adapter)" in passed.stdout
    tripped = probe(tiny, "--prompts", tiny / "harmful.txt", "--fail-above", "0.5", adapters=("quiet", "loud"))
    assert tripped.rc == 3, tripped.describe()
    assert tripped.stderr_lines == [
        f"csulora: error: {tiny / 'loud'}: unrefused_share 1.0000 exceeds --fail-above 0.5"
    ], tripped.describe()
    assert "TRIPPED" in tripped.stdout


def test_json_is_one_document_that_validate_accepts_and_quiet_prints_nothing_but_the_verdict(tiny, tmp_path):
    result = probe(
        tiny,
        "--prompts",
        tiny / "harmful.txt",
        "--benign",
        tiny / "benign.txt",
        "--fail-if-shift-above",
        "0.05",
        "--fail-over-refusal-above",
        "1",
        "--json",
        adapters=("quiet", "loud"),
    )
    assert result.rc == 3 and len(result.stderr_lines) == 1, result.describe()
    document = result.json()  # checked against probe.schema.json
    assert [a["tripped"] for a in document["adapters"]] == [False, True]
    assert document["model"]["source"] == {"kind": "local", "path": str((tiny / "model").resolve())}
    assert document["benign_prompts"]["prompts"] == 3 and document["prompts"]["kind"] == "local"
    saved = tmp_path / "probe.json"
    saved.write_text(result.stdout)
    assert "valid:" in assert_ok(run_cli("validate", saved)).stdout

    quiet = probe(tiny, "--prompts", tiny / "harmful.txt", "--fail-above", "0.5", "-q", adapters=("loud",))
    assert quiet.rc == 3 and quiet.stdout == "" and len(quiet.stderr_lines) == 1, quiet.describe()
    assert assert_ok(probe(tiny, "--prompts", tiny / "harmful.txt", "--quiet")).stdout == ""


@pytest.mark.parametrize(("name", "field"), [("harmful.txt", None), ("harmful.jsonl", "goal"), ("harmful.csv", "goal")])
def test_each_prompt_format_reads_the_same_prompts(tiny, name, field):
    extra = ("--prompt-field", field) if field else ()
    document = assert_ok(probe(tiny, "--prompts", tiny / name, *extra, "--json")).json()
    assert document["prompts"]["prompts"] == len(HARMFUL)
    assert document["prompts"]["path"] == str((tiny / name).resolve())


@pytest.mark.parametrize(
    ("name", "content", "option", "mentions"),
    [
        ("empty.txt", "\n\n", "--prompts", ("holds no prompts",)),
        ("nofield.jsonl", '{"text": "x"}\n', "--prompts", ("no field 'prompt'", "--prompt-field")),
        ("nofield.csv", "text\nx\n", "--benign", ("no column 'prompt'", "--benign-field")),
        ("prompts.parquet", "x", "--prompts", ("use one of .txt, .jsonl, .csv",)),
        ("latin1.txt", b"caf\xe9\n", "--benign", ("cannot read the prompt file",)),
        ("absent.txt", None, "--prompts", ("prompt file does not exist",)),
    ],
)
def test_a_bad_prompt_file_is_one_line_naming_it(tiny, tmp_path, name, content, option, mentions):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    prompts = ("--prompts", path) if option == "--prompts" else ("--prompts", tiny / "harmful.txt", "--benign", path)
    assert_one_line_error(probe(tiny, *prompts), 1, str(path), *mentions)


@pytest.mark.parametrize(
    ("extra", "mentions"),
    [
        (("--fail-above", "1.5"), ("--fail-above", "between 0 and 1")),
        (("--save-answers",), ("--save-answers", "--generate")),
        (("--fail-over-refusal-above", "0.5"), ("--fail-over-refusal-above", "--benign")),
        (("--batch-size", "0"), ("--batch-size",)),
        (("--dtype", "int8"), ("--dtype",)),
    ],
)
def test_values_that_cannot_run_are_usage_errors_naming_their_flags(tiny, extra, mentions):
    assert_one_line_error(probe(tiny, "--prompts", tiny / "harmful.txt", *extra), 2, *mentions)


def test_model_and_prompts_are_required(tiny):
    missing = run_cli("probe", tiny / "quiet", "--prompts", tiny / "harmful.txt")
    assert_one_line_error(missing, 2, "--model")


def test_a_model_transformers_cannot_load_is_one_line(tiny, tmp_path):
    folder = tmp_path / "odd-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    result = run_cli("probe", tiny / "quiet", "--model", folder, "--prompts", tiny / "harmful.txt")
    assert_one_line_error(result, 1, str(folder), "transformers cannot load")


def test_an_adapter_of_another_model_is_one_line(tiny, tmp_path):
    other = build_model_folder(tmp_path / "wider", hidden=32)
    adapter = build_adapter_folder(other, tmp_path / "of-wider", seed=3)
    result = run_cli("probe", adapter, "--model", tiny / "model", "--prompts", tiny / "harmful.txt")
    assert_one_line_error(result, 1, str(adapter), "trained on another model")


def test_a_missing_extra_names_the_install_command(tiny, monkeypatch):
    # As if peft were not installed: the room's modules are imported afresh and find no peft.
    for name in [name for name in sys.modules if name.startswith("csulora_cli.inference.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "peft", None)
    result = probe(tiny, "--prompts", tiny / "harmful.txt")
    assert_one_line_error(result, 1, "pip install 'csulora[probe]'", "peft")


def test_many_adapters_share_one_model_load(tiny, monkeypatch):
    from transformers import AutoModelForCausalLM

    loads = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counting))
    result = probe(tiny, "--prompts", tiny / "harmful.txt", "--json", adapters=("quiet", "loud", "quiet"))
    document = assert_ok(result).json()
    assert len(loads) == 1
    adapters = document["adapters"]
    assert [a["adapter"] for a in adapters] == [str((tiny / n).resolve()) for n in ("quiet", "loud", "quiet")]
    # The same adapter probed twice, with another between, reads the same margins: each is removed after use.
    assert adapters[0]["harmful"]["margins"] == pytest.approx(adapters[2]["harmful"]["margins"], abs=1e-5)
    assert adapters[1]["harmful"]["margins"] != pytest.approx(adapters[0]["harmful"]["margins"], abs=1e-3)
