"""Per-prompt refusal margins of a model, read through whatever scores continuations (a `Scorer`).

The compliance openings are fixed once, from the bare model, and the same openings are then scored under
every adapter: the margin's shift compares like with like (docs/method.md, "The behavioural probe").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .margins import refusal_margin
from .openings import NEUTRAL_OPENING, REFUSAL_OPENINGS


class Scorer(Protocol):
    """The part of a loaded model the probe reads (`inference.runner.LoadedModel` is one)."""

    def token_logprobs(
        self,
        prompts: Sequence[str],
        continuations: Sequence[Sequence[str]],
        *,
        batch_size: int = 32,
        advance: Callable[..., None] | None = None,
    ) -> list[list[list[float]]]: ...

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        *,
        stop: Sequence[int] | None = None,
        suppress_first: Sequence[int] = (),
        batch_size: int = 32,
        advance: Callable[..., None] | None = None,
    ) -> list[str]: ...

    def barred_first_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def opening_length(self, texts: Sequence[str]) -> int: ...


def compliance_openings(
    model: Scorer,
    prompts: Sequence[str],
    refusal_openings: Sequence[str] = REFUSAL_OPENINGS,
    *,
    batch_size: int = 32,
    advance: Callable[..., None] | None = None,
) -> list[str]:
    """The bare model's own greedy opening per prompt, its first token barred from starting a refusal opening
    or ending the answer: its most likely answer that does not begin as a refusal, as many tokens long as the
    longest refusal opening. An opening that decodes to nothing is `NEUTRAL_OPENING`."""
    openings = model.generate(
        prompts,
        model.opening_length(refusal_openings),
        suppress_first=model.barred_first_tokens(refusal_openings),
        batch_size=batch_size,
        advance=advance,
    )
    return [opening or NEUTRAL_OPENING for opening in openings]


def margins_of(
    model: Scorer,
    prompts: Sequence[str],
    compliance: Sequence[str],
    refusal_openings: Sequence[str] = REFUSAL_OPENINGS,
    *,
    batch_size: int = 32,
    advance: Callable[..., None] | None = None,
) -> list[float]:
    """One margin per prompt: every refusal opening and the prompt's compliance opening scored after it."""
    continuations = [[*refusal_openings, opening] for opening, _ in zip(compliance, prompts, strict=True)]
    scores = model.token_logprobs(prompts, continuations, batch_size=batch_size, advance=advance)
    return [refusal_margin(tokens[:-1], tokens[-1]) for tokens in scores]
