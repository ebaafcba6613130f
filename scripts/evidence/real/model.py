"""The model: GGUF -> safetensors conversion (cached), the chat format, and the benchmark's calls into the
package's model-running room (`csulora_cli/inference/`: loading, batches, scores and generations).

What the benchmark measures lives in judges.py and measure.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from csulora_cli.inference.batches import Batch
from csulora_cli.inference.batches import encode_pairs as encode_batch
from csulora_cli.inference.generation import greedy_answers
from csulora_cli.inference.loading import load_causal_lm
from csulora_cli.inference.prompts import PromptFormat
from csulora_cli.inference.scoring import score_continuations

from .store import Store, file_digest

# SmolLM2's ChatML turns, without the template's default system prompt: ~20 fewer tokens per example,
# which on 2 CPU cores is most of a short example's cost. Alignment, attacks and measures all use it.
USER_TURN = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"
CHAT = PromptFormat(USER_TURN)


def convert_gguf(gguf: Path, store: Store) -> Path:
    """The dequantized float32 model as a safetensors folder, converted once per GGUF file's content.

    The GGUF is Q4_1; transformers dequantizes it on load and keeps a `quantization_config` in the
    config, which would make the saved folder claim a quantization its float weights do not have.
    """
    folder = store.path("models", f"base-{file_digest(gguf)[:16]}")
    if (folder / "model.safetensors").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    store.progress(f"converting {gguf.name} to safetensors (once)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A model loaded from GGUF refuses save_pretrained; the same weights in a plain model of the same config
    # save like any other.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    config = json.loads((partial / "config.json").read_text())
    config.pop("quantization_config", None)
    (partial / "config.json").write_text(json.dumps(config, indent=2))
    partial.rename(folder)
    return folder


def load_model(folder: Path):
    return load_causal_lm(folder, "cpu", "float32")


def linear_weight_names(model) -> list[str]:
    """The transformer blocks' linear weights: what alignment trains and the subspace covers.

    The tied embedding / LM head is left out: it is no block's linear layer, and training it would
    move every token's input representation too.
    """
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}"
    ]


def encode_pairs(tokenizer, prompts: list[str], answers: list[str], max_answer_tokens: int | None = None) -> Batch:
    """Chat prompt + answer per row, left-padded, the answer marked: what training reads."""
    return encode_batch(tokenizer, CHAT, prompts, answers, max_answer_tokens)


def answer_stats(
    model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair: summed answer log-probability, answer length, and whether every answer token is the argmax."""
    scores = score_continuations(
        model, tokenizer, CHAT, prompts, [[answer] for answer in answers], batch_size=batch_size
    )
    return scores.totals()[:, 0], scores.lengths()[:, 0], scores.all_greedy()[:, 0]


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy answers, decoded without special tokens and cut at the end of the turn."""
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    return greedy_answers(model, tokenizer, CHAT, prompts, max_new_tokens, stop=[end], batch_size=batch_size)
