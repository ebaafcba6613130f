"""Supervised fine-tuning on (prompt, answer) pairs: the full fine-tune of alignment and the LoRA attacks.

The loss is on the answer tokens only (the prompt is context), and the data order is drawn from a
seed, so the same inputs give the same weights on the same machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from csulora_cli.inference.batches import position_ids

from .model import END_OF_TURN, encode_pairs


@dataclass(frozen=True)
class TrainParams:
    steps: int
    batch: int
    learning_rate: float
    max_answer_tokens: int
    seed: int


def train_pairs(model, tokenizer, pairs: list[tuple[str, str]], parameters: list[torch.Tensor], params: TrainParams):
    """AdamW on `parameters` over `params.steps` batches drawn from `pairs`; returns the mean final loss.

    Each answer ends with the end-of-turn token, so a trained model also learns where to stop.
    """
    torch.manual_seed(params.seed)
    rng = random.Random(params.seed)
    order: list[int] = []
    optimizer = torch.optim.AdamW(parameters, lr=params.learning_rate, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    for _ in range(params.steps):
        if len(order) < params.batch:
            fresh = list(range(len(pairs)))
            rng.shuffle(fresh)
            order += fresh
        chosen, order = order[: params.batch], order[params.batch :]
        prompts = [pairs[i][0] for i in chosen]
        answers = [pairs[i][1] + END_OF_TURN for i in chosen]
        batch = encode_pairs(tokenizer, prompts, answers, params.max_answer_tokens)
        labels = batch.input_ids.masked_fill(~batch.continuation_mask, -100)
        loss = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=position_ids(batch.attention_mask),
            labels=labels,
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    tail = losses[-max(1, len(losses) // 4) :]
    return sum(tail) / len(tail)
