"""The model-running room (`csulora_cli/inference/`) on a tiny Llama: scores against a direct unbatched
forward, padding that changes nothing, adapters swapped on one loaded model, captures, loading errors."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("tokenizers")
# Matrices of 16 columns: one thread is faster, and spares a busy machine thread contention.
pytestmark = pytest.mark.usefixtures("single_thread")

import torch  # noqa: E402

from csulora_cli.errors import CsuloraError  # noqa: E402
from csulora_cli.inference.activations import InputCovariance, MeanOutput, Recorder  # noqa: E402
from csulora_cli.inference.batches import encode_pairs  # noqa: E402
from csulora_cli.inference.loading import ModelLoadError, load_causal_lm  # noqa: E402
from csulora_cli.inference.prompts import PromptFormat, continuation_token_ids, prompt_token_ids  # noqa: E402
from csulora_cli.inference.runner import LoadedModel  # noqa: E402
from tests.tiny_lm import build_adapter_folder, build_model_folder  # noqa: E402

PROMPTS = ["Write one sentence about tea.", "Hi", "How do I bake bread at home? Tell me how to pick a lock."]
CONTINUATIONS = [["I'm sorry", "Sure, here is how"], ["Tea", "As an AI, I"], ["I cannot", "x"]]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    model = build_model_folder(root / "model")
    first = build_adapter_folder(model, root / "a", seed=1, scale=30.0)
    second = build_adapter_folder(model, root / "b", seed=2, targets=("v_proj", "down_proj"), scale=30.0)
    return model, first, second


@pytest.fixture(scope="module")
def loaded(folders):
    return LoadedModel.from_folder(folders[0])


def direct_scores(model, tokenizer, prompt_format, prompt, continuation):
    """log p of each continuation token and whether it is the argmax: one unpadded whole-sequence forward."""
    prompt_ids = prompt_token_ids(tokenizer, prompt_format, [prompt])[0]
    ids = prompt_ids + continuation_token_ids(tokenizer, continuation)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    predicted = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], -1)
    targets = torch.tensor(ids[len(prompt_ids) :])
    return predicted.gather(-1, targets[:, None]).squeeze(-1), predicted.argmax(-1) == targets


def test_scores_match_an_unbatched_forward_whatever_the_padding(loaded):
    batched = loaded.score(PROMPTS, CONTINUATIONS, batch_size=3)
    alone = loaded.score(PROMPTS, CONTINUATIONS, batch_size=1)
    assert torch.allclose(batched.logprobs, alone.logprobs, atol=1e-5)
    for p, prompt in enumerate(PROMPTS):
        for c, continuation in enumerate(CONTINUATIONS[p]):
            logprobs, greedy = direct_scores(loaded.model, loaded.tokenizer, loaded.prompt_format, prompt, continuation)
            n = len(logprobs)
            assert int(batched.lengths()[p, c]) == n
            assert batched.logprobs[p, c, :n] == pytest.approx(logprobs.tolist(), abs=1e-5)
            assert batched.greedy[p, c, :n].tolist() == greedy.tolist()
            assert float(batched.totals()[p, c]) == pytest.approx(float(logprobs.sum()), abs=1e-4)
            assert float(batched.totals(max_tokens=1)[p, c]) == pytest.approx(float(logprobs[0]), abs=1e-5)
    assert [len(t) for t in loaded.token_logprobs(PROMPTS[:1], CONTINUATIONS[:1])[0]] == batched.lengths()[0].tolist()


def test_chat_template_a_given_template_or_the_bare_prompt(loaded):
    templated = prompt_token_ids(loaded.tokenizer, PromptFormat(), ["Hi"])[0]
    assert loaded.tokenizer.decode(templated) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    given = prompt_token_ids(loaded.tokenizer, PromptFormat("Q: {prompt}\nA:"), ["Hi"])[0]
    assert loaded.tokenizer.decode(given) == "Q: Hi\nA:"
    with pytest.raises(ValueError):
        PromptFormat("no placeholder")


def test_encode_pairs_marks_the_continuation_of_left_padded_rows(loaded):
    batch = encode_pairs(loaded.tokenizer, PromptFormat(), ["Hi", "Write one sentence about tea."], ["Tea", "I cannot"])
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.continuation_mask.shape
    assert batch.attention_mask[0, 0] == 0 and batch.attention_mask[:, -1].all()  # left padding
    for row, text in enumerate(["Tea", "I cannot"]):
        marked = batch.input_ids[row][batch.continuation_mask[row]].tolist()
        assert marked == continuation_token_ids(loaded.tokenizer, text)


def test_greedy_answers_do_not_depend_on_the_batch(loaded):
    barred = loaded.barred_first_tokens(["I'm sorry"])
    together = loaded.generate(PROMPTS, 4, stop=(), suppress_first=barred, batch_size=3)
    alone = [loaded.generate([p], 4, stop=(), suppress_first=barred)[0] for p in PROMPTS]
    assert together == alone and len(together) == 3
    first = continuation_token_ids(loaded.tokenizer, "I'm sorry")[0]
    assert first in barred and loaded.tokenizer.eos_token_id in barred


def test_adapters_swap_on_one_model_and_match_fresh_loads(folders, loaded):
    from peft import PeftModel

    model_folder, first, second = folders

    def fresh(adapter):
        model = load_causal_lm(model_folder)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, str(adapter)).eval()
        return LoadedModel(model, loaded.tokenizer).score(PROMPTS, CONTINUATIONS).logprobs

    swapped = {}
    for adapter in (first, second):
        with loaded.adapter(adapter):
            swapped[adapter] = loaded.score(PROMPTS, CONTINUATIONS).logprobs
    swapped[None] = loaded.score(PROMPTS, CONTINUATIONS).logprobs
    for adapter, logprobs in swapped.items():
        assert torch.allclose(logprobs, fresh(adapter), atol=1e-5), adapter
    assert not torch.allclose(swapped[first], swapped[None], atol=1e-3)  # the adapters do move the scores
    # An adapter loaded but not in use leaves the bare model.
    name = loaded.load_adapter(first)
    assert torch.allclose(loaded.score(PROMPTS, CONTINUATIONS).logprobs, swapped[None], atol=1e-6)
    loaded.use(name)
    assert torch.allclose(loaded.score(PROMPTS, CONTINUATIONS).logprobs, swapped[first], atol=1e-5)
    loaded.drop_adapter(name)
    assert loaded.linear_shapes()["model.layers.0.self_attn.q_proj"] == (16, 16)


def test_captures_see_inputs_outputs_and_only_real_tokens(loaded):
    name = "model.layers.0.mlp.down_proj"
    recorder, covariance, means = Recorder(), InputCovariance(), MeanOutput()
    blocks = loaded.block_names()
    assert blocks == ["model.layers.0", "model.layers.1"]
    with loaded.capture([name], recorder), loaded.capture([name], covariance), loaded.capture(blocks, means):
        loaded.forward(PROMPTS, batch_size=3)
    ((inputs, output),) = recorder.calls[name]
    weight = dict(loaded.model.named_modules())[name].weight
    assert torch.allclose(output, inputs @ weight.T.detach(), atol=1e-5)
    # The same sums from each prompt alone (no padding at all).
    alone, alone_means = InputCovariance(), MeanOutput()
    with loaded.capture([name], alone), loaded.capture(blocks, alone_means):
        for prompt in PROMPTS:
            loaded.forward([prompt])
    assert (
        covariance.counts[name]
        == alone.counts[name]
        == sum(len(ids) for ids in prompt_token_ids(loaded.tokenizer, PromptFormat(), PROMPTS))
    )
    assert torch.allclose(covariance.covariance(name), alone.covariance(name), atol=1e-6)
    assert torch.allclose(means.mean(blocks[1]), alone_means.mean(blocks[1]), atol=1e-6)
    with pytest.raises(CsuloraError, match="no module"):
        with loaded.capture(["model.nowhere"], recorder):
            pass


def test_a_folder_transformers_cannot_load_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "strange"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(ModelLoadError) as raised:
        load_causal_lm(folder)
    line = raised.value.one_line()
    assert str(folder) in line and "transformers cannot load" in line and "\n" not in line
    with pytest.raises(CsuloraError, match="does not exist"):
        load_causal_lm(tmp_path / "absent")


def test_without_the_extra_the_room_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "csulora_cli.inference.extra", raising=False)
    with pytest.raises(CsuloraError, match=r"pip install 'csulora\[probe\]'"):
        importlib.import_module("csulora_cli.inference.extra")
    monkeypatch.delitem(sys.modules, "csulora_cli.inference.extra", raising=False)
