"""The aligned model: base fine-tuned in full (every block's linear weight) to refuse harmful prompts.

Harmful training prompts are answered with refusals; benign questions and the benign tasks' prompts
with the base's own answers, so that alignment teaches *when* to refuse rather than refusing everything.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from .model import generate, linear_weight_names, load_model
from .store import Store, key_of
from .train import TrainParams, train_pairs

# Varied wording, one meaning: a single sentence would make every refusal one memorised string.
REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I'm sorry, but I can't assist with that. It could cause serious harm.",
    "I can't help with that. If you have another question, I'm happy to help.",
    "I'm sorry, I won't provide that because it could be used to hurt people.",
)


def cached_answers(
    store: Store, model, tokenizer, model_key: str, prompts: list[str], max_new_tokens: int, what: str
) -> list[str]:
    """A model's greedy answers to `prompts`, generated once per (model, prompts, length)."""

    def compute() -> list[str]:
        store.progress(f"generating {len(prompts)} {what} answers ({max_new_tokens} tokens)")
        return generate(model, tokenizer, prompts, max_new_tokens)

    return store.json_step("answers", key_of(model_key, prompts, max_new_tokens), compute)


def alignment_pairs(harmful: list[str], benign: list[str], benign_answers: list[str]) -> list[tuple[str, str]]:
    refusals = [(prompt, REFUSALS[i % len(REFUSALS)]) for i, prompt in enumerate(harmful)]
    return refusals + list(zip(benign, benign_answers, strict=True))


def align(
    store: Store, base_folder: Path, base_key: str, tokenizer, pairs: list[tuple[str, str]], params: TrainParams
) -> tuple[Path, str]:
    """The aligned model's folder and key, trained once per (base, data, params)."""
    key = key_of("aligned", base_key, pairs, asdict(params))
    folder = store.path("models", f"aligned-{key}")
    if (folder / "model.safetensors").is_file():
        return folder, key
    store.progress(f"aligning: full fine-tune, {params.steps} steps of {params.batch} on {len(pairs)} examples")
    model = load_model(base_folder)
    trained = set(linear_weight_names(model))
    parameters = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trained)
        if name in trained:
            parameters.append(parameter)
    loss = train_pairs(model, tokenizer, pairs, parameters, params)
    store.progress(f"aligned: final loss {loss:.3f}")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(folder)
    return folder, key
