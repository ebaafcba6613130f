"""Teacher-forced log-probabilities of continuations after prompts, each prompt run through the model once.

A batch of prompts is run once and its key/value cache kept; each continuation (several per prompt: a
judge's openings) is then run on that cache and the cache cut back to the prompts, so C openings cost
one prompt pass and C short passes instead of C whole sequences. Only the log-softmax at the positions
that predict a continuation token is formed: the LM head over a large vocabulary at every prompt
position would cost more than the rest of the forward.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .batches import left_padded, position_ids
from .loading import pad_id
from .prompts import PromptFormat, continuation_token_ids, prompt_token_ids


@dataclass(frozen=True)
class ContinuationScores:
    """(P, C, L): prompt, continuation, token. A continuation's tokens sit at the start of its row, `mask`
    marks them; `logprobs` is 0 elsewhere."""

    logprobs: torch.Tensor  # (P, C, L) float32: log p(token | prompt, the continuation's tokens before it)
    greedy: torch.Tensor  # (P, C, L) bool: the token is the model's argmax there
    mask: torch.Tensor  # (P, C, L) bool

    def totals(self, max_tokens: int | None = None) -> torch.Tensor:
        """(P, C) summed log-probability of each continuation, or of its first `max_tokens` tokens."""
        keep = self.mask if max_tokens is None else self.mask & (self.mask.cumsum(-1) <= max_tokens)
        return (self.logprobs * keep).sum(-1)

    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)

    def all_greedy(self) -> torch.Tensor:
        """(P, C): greedy decoding would produce the continuation (every token is the argmax)."""
        return (self.greedy | ~self.mask).all(-1)

    def token_logprobs(self) -> list[list[list[float]]]:
        """Per prompt, per continuation, its tokens' log-probabilities (as many as it has tokens)."""
        lengths = self.lengths().tolist()
        values = self.logprobs.tolist()
        return [
            [row[:length] for row, length in zip(rows, row_lengths, strict=True)]
            for rows, row_lengths in zip(values, lengths, strict=True)
        ]


@torch.no_grad()
def score_continuations(
    model,
    tokenizer,
    prompt_format: PromptFormat,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[str]],
    *,
    max_continuation_tokens: int | None = None,
    batch_size: int = 32,
    advance: Callable[..., None] | None = None,
) -> ContinuationScores:
    """`continuations[p]` holds the same number C of texts for every prompt p; `advance()` after each batch."""
    if len(continuations) != len(prompts):
        raise ValueError("one list of continuations per prompt")
    count = len(continuations[0]) if continuations else 0
    if any(len(texts) != count for texts in continuations):
        raise ValueError("every prompt needs the same number of continuations")
    rows = [
        [continuation_token_ids(tokenizer, text, max_continuation_tokens) for text in texts] for texts in continuations
    ]
    size = max((len(ids) for texts in rows for ids in texts), default=0)
    parts = []
    for start in range(0, len(prompts), batch_size):
        prompt_rows = prompt_token_ids(tokenizer, prompt_format, list(prompts[start : start + batch_size]))
        parts.append(_score_batch(model, tokenizer, prompt_rows, rows[start : start + batch_size], size))
        if advance is not None:
            advance()
    if not parts:
        empty = torch.zeros(0, count, size)
        return ContinuationScores(empty, empty.bool(), empty.bool())
    logprobs, greedy, mask = (torch.cat([part[i] for part in parts]) for i in range(3))
    return ContinuationScores(logprobs, greedy, mask)


def _score_batch(
    model, tokenizer, prompt_rows: list[list[int]], continuation_rows: list[list[list[int]]], size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    device = model.device
    pad = pad_id(tokenizer)
    input_ids, attention = (t.to(device) for t in left_padded(prompt_rows, pad))
    out = model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=position_ids(attention),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = getattr(out, "cache", None) or out.past_key_values
    first = torch.log_softmax(out.logits[:, -1].float(), -1)  # (B, V): predicts each continuation's first token
    lengths = attention.sum(-1, keepdim=True)  # (B, 1): where each row's continuation starts
    count = len(continuation_rows[0])
    logprobs = torch.zeros(len(prompt_rows), count, size)
    greedy = torch.zeros(len(prompt_rows), count, size, dtype=torch.bool)
    mask = torch.zeros(len(prompt_rows), count, size, dtype=torch.bool)
    croppable = getattr(cache, "is_croppable", False) and hasattr(cache, "crop")
    for c in range(count):
        rows = [texts[c] for texts in continuation_rows]
        longest = max(len(row) for row in rows)
        if longest == 0:
            continue
        # Right-padded: a pad after a row's last token is seen by no real token (the attention is causal).
        ids = torch.tensor([row + [pad] * (longest - len(row)) for row in rows], device=device)
        real = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in rows], device=device)
        step_cache = cache if croppable else copy.deepcopy(cache)
        logits = model(
            input_ids=ids,
            attention_mask=torch.cat([attention, real], dim=1),
            position_ids=lengths + torch.arange(longest, device=device),
            use_cache=True,
            **{_cache_argument(model): step_cache},
        ).logits
        if croppable:
            cache.crop(-longest)  # back to the prompts alone
        predicted = torch.cat([first[:, None], torch.log_softmax(logits[:, :-1].float(), -1)], dim=1)  # (B, n, V)
        chosen = predicted.gather(-1, ids[..., None]).squeeze(-1)
        logprobs[:, c, :longest] = (chosen * real).cpu()
        greedy[:, c, :longest] = (predicted.argmax(-1) == ids).cpu()
        mask[:, c, :longest] = real.bool().cpu()
    return logprobs, greedy, mask


def _cache_argument(model) -> str:
    """transformers renamed `past_key_values` to `cache` (5.x); the name this model's forward takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
