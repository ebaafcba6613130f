"""Left-padded batches of token rows: prompts alone, or prompt + continuation with the continuation marked.

Left padding keeps every row's last token at the same column (a continuation's log-probabilities and a
generation both start there); `position_ids` counts from each row's first real token, so a padded row
sees the positions it would see alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .loading import pad_id
from .prompts import PromptFormat, continuation_token_ids, prompt_token_ids


@dataclass(frozen=True)
class Batch:
    """`continuation_mask` marks the tokens whose log-probability is scored (or trained on)."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    continuation_mask: torch.Tensor  # (B, T), bool

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.continuation_mask.to(device))


def left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, T), attention mask (B, T)) with each row right-aligned."""
    width = max((len(row) for row in rows), default=0)
    ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows], dtype=torch.long).reshape(len(rows), width)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], dtype=torch.long)
    return ids, mask.reshape(len(rows), width)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def encode_pairs(
    tokenizer,
    prompt_format: PromptFormat,
    prompts: list[str],
    continuations: list[str],
    max_continuation_tokens: int | None = None,
) -> Batch:
    """Formatted prompt + continuation per row, left-padded, the continuation marked: what training reads
    (the loss on the continuation only) and what a whole-sequence forward scores."""
    prompt_rows = prompt_token_ids(tokenizer, prompt_format, prompts)
    rows, marks = [], []
    for prompt_ids, text in zip(prompt_rows, continuations, strict=True):
        answer_ids = continuation_token_ids(tokenizer, text, max_continuation_tokens)
        rows.append(prompt_ids + answer_ids)
        marks.append([0] * len(prompt_ids) + [1] * len(answer_ids))
    input_ids, attention = left_padded(rows, pad_id(tokenizer))
    marked, _ = left_padded(marks, 0)
    return Batch(input_ids, attention, marked.bool())
