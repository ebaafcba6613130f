"""Greedy answers: N new tokens per prompt, stopped at the end of the turn, decoded without special tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .batches import left_padded
from .loading import pad_id
from .prompts import PromptFormat, prompt_token_ids


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokenizer's end of sequence and every end the model's generation config names (a chat model's
    end of turn is often only there)."""
    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for token in configured if isinstance(configured, list) else [configured]:
        if token is not None and int(token) not in ids:
            ids.append(int(token))
    return ids


@torch.no_grad()
def greedy_answers(
    model,
    tokenizer,
    prompt_format: PromptFormat,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    stop: Sequence[int] | None = None,
    suppress_first: Sequence[int] = (),
    batch_size: int = 32,
    advance: Callable[..., None] | None = None,
) -> list[str]:
    """`stop`: the token ids that end an answer (default `stop_token_ids`); `suppress_first`: token ids the
    first new token may not be (the rest of the answer is free)."""
    stop = list(stop) if stop is not None else stop_token_ids(model, tokenizer)
    pad = pad_id(tokenizer)
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = prompt_token_ids(tokenizer, prompt_format, list(prompts[start : start + batch_size]))
        input_ids, attention = left_padded(rows, pad)
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop or None,
            pad_token_id=pad,
            begin_suppress_tokens=list(suppress_first) or None,
        )
        for row in output[:, input_ids.shape[1] :]:
            answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
        if advance is not None:
            advance()
    return answers
