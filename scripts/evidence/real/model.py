"""The model: GGUF -> safetensors conversion (cached), loading, the chat format and batched inference.

What the benchmark measures lives in judges.py and measure.py; this module only turns prompts into
token ids, generations and log-probabilities.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .store import Store, file_digest

# SmolLM2's ChatML turns, without the template's default system prompt: ~20 fewer tokens per example,
# which on 2 CPU cores is most of a short example's cost. Alignment, attacks and measures all use it.
USER_TURN = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"


def chat_prompt(prompt: str) -> str:
    return USER_TURN.format(prompt)


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
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    return model


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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


@dataclass(frozen=True)
class Batch:
    """Left-padded token ids; `answer_mask` marks the tokens whose log-probability is scored or trained."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    answer_mask: torch.Tensor  # (B, T), bool


def encode_pairs(tokenizer, prompts: list[str], answers: list[str], max_answer_tokens: int | None = None) -> Batch:
    """Chat prompt + answer per row, left-padded; the answer part is marked in `answer_mask`.

    Prompt and answer are tokenized apart and concatenated, so the answer's tokens are the same whatever
    the prompt (a likelihood judge compares the same opening across prompts).
    """
    rows, masks = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        prompt_ids = tokenizer(chat_prompt(prompt), add_special_tokens=False).input_ids
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        if max_answer_tokens is not None:
            answer_ids = answer_ids[:max_answer_tokens]
        rows.append(prompt_ids + answer_ids)
        masks.append([False] * len(prompt_ids) + [True] * len(answer_ids))
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
    attention = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    answer_mask = torch.tensor([[False] * (width - len(mask)) + mask for mask in masks])
    return Batch(input_ids, attention, answer_mask)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # Left padding: positions count from each row's first real token, as in an unpadded forward.
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def answer_token_stats(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: summed answer log-probability, answer length, and whether every answer token is the argmax.

    Left padding puts every answer at the end of its row, so only the last positions need logits: the
    LM head over a 49k vocabulary at every prompt position would cost more than the rest of the forward.
    """
    keep = int(batch.answer_mask.sum(-1).max()) + 1
    logits = (
        model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=position_ids(batch.attention_mask),
            logits_to_keep=keep,
        )
        .logits[:, :-1]
        .float()
    )  # (B, keep - 1, vocab): predictions of the last keep - 1 tokens
    targets = batch.input_ids[:, -(keep - 1) :]
    mask = batch.answer_mask[:, -(keep - 1) :]
    logprobs = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    greedy = logits.argmax(-1) == targets
    return (logprobs * mask).sum(-1), mask.sum(-1), (greedy | ~mask).all(-1)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy answers, decoded without special tokens and cut at the end of the turn."""
    answers: list[str] = []
    tokenizer.padding_side = "left"
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    for start in range(0, len(prompts), batch_size):
        chunk = [chat_prompt(p) for p in prompts[start : start + batch_size]]
        encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=end,
            pad_token_id=tokenizer.pad_token_id,
        )
        for row in output[:, encoded.input_ids.shape[1] :]:
            answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers
