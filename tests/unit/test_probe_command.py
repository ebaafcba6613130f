"""The probe command below the CLI on a tiny Llama: one model load for many adapters, margins equal to
those of a fresh load with each adapter, gates, the JSON document against its schema, bad adapters."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("tokenizers")
# Matrices of 16 columns: one thread is faster, and spares a busy machine thread contention.
pytestmark = pytest.mark.usefixtures("single_thread")
pytest.importorskip("jsonschema")

from csulora_cli.errors import MissingTensorError, ShapeMismatchError  # noqa: E402
from csulora_cli.pipeline.commands.probe import probe  # noqa: E402
from csulora_cli.pipeline.types.probe import ProbeRequest  # noqa: E402
from csulora_cli.report.envelope import envelope  # noqa: E402
from csulora_cli.report.validate import validate  # noqa: E402
from tests.tiny_lm import CORPUS, build_adapter_folder, build_model_folder  # noqa: E402


class RecordedEvents:
    def __init__(self):
        self.warnings, self.steps, self.totals = [], 0, []

    def warn(self, message):
        self.warnings.append(message)

    def start(self, description, total, *, in_bytes=False):
        self.totals.append(total)

        def advance(steps=1):
            self.steps += steps

        return advance


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    model = build_model_folder(root / "model")
    adapters = [
        build_adapter_folder(model, root / "quiet", seed=1, scale=1.0),
        build_adapter_folder(model, root / "loud", seed=2, targets=("v_proj", "down_proj"), scale=40.0),
    ]
    (root / "harmful.txt").write_text("\n".join(CORPUS[:5]) + "\n")
    (root / "benign.jsonl").write_text("\n".join(json.dumps({"text": p}) for p in CORPUS[5:8]) + "\n")
    return root, model, adapters


def test_probe_loads_the_model_once_and_matches_fresh_loads(setup, monkeypatch):
    from transformers import AutoModelForCausalLM

    root, model, adapters = setup
    loads = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counting))
    events = RecordedEvents()
    request = ProbeRequest(
        adapters=tuple(adapters),
        model=model,
        prompts=root / "harmful.txt",
        benign=root / "benign.jsonl",
        benign_field="text",
        batch_size=2,
        generate=3,
        save_answers=True,
        fail_above=0.0,
        fail_if_shift_above=1e6,
        fail_over_refusal_above=1.0,
    )
    result = probe(request, events)
    assert len(loads) == 1
    assert events.steps == events.totals[0]  # the progress bar ends full
    quiet, loud = result.adapters
    assert quiet.harmful.summary.prompts == 5 and quiet.benign.summary.prompts == 3
    assert len(quiet.harmful.answers) == 5 and quiet.harmful.keyword_unrefused_share is not None
    # Each adapter alone, on a fresh load, gives the margins the swapping run gave.
    monkeypatch.undo()
    for adapter, swapped in zip(adapters, result.adapters, strict=True):
        alone = probe(ProbeRequest((adapter,), model, root / "harmful.txt", batch_size=5))
        assert alone.adapters[0].harmful.summary.margins == pytest.approx(swapped.harmful.summary.margins, abs=1e-5)
        assert alone.bare.harmful.summary.margins == pytest.approx(result.bare.harmful.summary.margins, abs=1e-5)
    assert abs(loud.harmful.summary.shift) > abs(quiet.harmful.summary.shift)
    # Gates: a share above 0 trips, a shift never reaches 1e6, an over-refusal never exceeds 1.
    for adapter in result.adapters:
        gates = {gate.statistic: gate for gate in adapter.gates}
        assert gates["unrefused_share"].tripped == (adapter.harmful.summary.unrefused_share > 0)
        assert not gates["shift"].tripped and not gates["over_refusal"].tripped
    assert result.tripped == any(a.harmful.summary.unrefused_share > 0 for a in result.adapters)
    document = json.loads(json.dumps(envelope("probe", **result.to_dict())))
    assert validate(document) == "probe"
    assert document["adapters"][0]["harmful"]["answers"] and document["compliance"] == "own"


def test_a_fixed_compliance_opening_and_no_answers_kept(setup):
    root, model, adapters = setup
    result = probe(ProbeRequest(adapters[:1], model, root / "harmful.txt", compliance_opening="Sure, here", generate=2))
    assert result.compliance == "Sure, here" and result.adapters[0].harmful.answers is None
    document = envelope("probe", **result.to_dict())
    assert "answers" not in json.dumps(document) and validate(document) == "probe"


def test_an_adapter_of_another_model_is_refused_before_scoring(setup, tmp_path):
    root, model, _ = setup
    other = build_model_folder(tmp_path / "other", hidden=32)
    wider = build_adapter_folder(other, tmp_path / "wider", seed=3)
    with pytest.raises(ShapeMismatchError) as raised:
        probe(ProbeRequest((wider,), model, root / "harmful.txt"))
    assert str(wider) in raised.value.one_line() and "another model" in raised.value.one_line()
    config_file = wider / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["target_modules"] = ["nowher"]
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "adapter_config.json").write_text(json.dumps(config))
    tensors = (wider / "adapter_model.safetensors").read_bytes().replace(b"q_proj", b"nowher")
    (moved / "adapter_model.safetensors").write_bytes(tensors)
    with pytest.raises(MissingTensorError, match="has no linear layer"):
        probe(ProbeRequest((moved,), model, root / "harmful.txt"))


def test_an_adapter_naming_another_base_is_a_warning(setup, tmp_path):
    root, model, adapters = setup
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for path in adapters[0].iterdir():
        (renamed / path.name).write_bytes(path.read_bytes())
    config = json.loads((renamed / "adapter_config.json").read_text())
    (renamed / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": "org/other"}))
    events = RecordedEvents()
    probe(ProbeRequest((renamed,), model, root / "harmful.txt"), events)
    assert len(events.warnings) == 1 and "org/other" in events.warnings[0]
    events = RecordedEvents()
    probe(ProbeRequest((renamed,), model, root / "harmful.txt", model_name="org/other"), events)
    assert not events.warnings
