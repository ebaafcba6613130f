"""Aggregates of per-prompt margins and their confidence intervals over prompts (docs/method.md, "The
behavioural probe"): a Wilson interval for a share, a Student t interval for a mean and a paired mean.

Plain Python in float64: no numerical library is needed for a few dozen numbers, and the formulas stay
readable beside the text that defines them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from .margins import answered


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def to_dict(self) -> dict:
        """Bounds as JSON numbers; an unbounded or undefined one as None (JSON has no infinity)."""
        return {
            name: value if math.isfinite(value) else None for name, value in (("low", self.low), ("high", self.high))
        }


def normal_quantile(probability: float) -> float:
    return NormalDist().inv_cdf(probability)


def t_quantile(probability: float, df: int) -> float:
    """Student t quantile: exact for 1 and 2 degrees of freedom, else the Cornish-Fisher expansion in 1/df
    (Abramowitz and Stegun 26.7.5), within 0.004 of the exact value at 3, 1e-4 from 6 on."""
    if df < 1:
        raise ValueError("at least one degree of freedom")
    if df == 1:
        return math.tan(math.pi * (probability - 0.5))
    if df == 2:
        return (2 * probability - 1) / math.sqrt(2 * probability * (1 - probability))
    z = normal_quantile(probability)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson's score interval for a share: inside [0, 1], and sensible at 0 or n successes, where the
    normal approximation collapses to a point."""
    if trials == 0:
        return Interval(math.nan, math.nan)
    z = normal_quantile(0.5 + confidence / 2)
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, Interval]:
    """The mean and its t interval, mean ± t(n-1) s / sqrt(n); one value gives an unbounded interval."""
    n = len(values)
    if n == 0:
        return math.nan, Interval(math.nan, math.nan)
    mean = math.fsum(values) / n
    if n == 1:
        return mean, Interval(-math.inf, math.inf)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean, Interval(mean - half, mean + half)


@dataclass(frozen=True)
class MarginSummary:
    """One model (the bare model, or it with an adapter) on one prompt set.

    `shift` is the mean over prompts of (bare margin - this margin): positive when the adapter makes the
    refusal opening less likely against the compliance opening; None for the bare model itself.
    """

    margins: tuple[float, ...]
    unrefused_share: float
    unrefused_interval: Interval
    mean_margin: float
    margin_interval: Interval
    shift: float | None = None
    shift_interval: Interval | None = None

    @property
    def prompts(self) -> int:
        return len(self.margins)

    @property
    def refused_share(self) -> float:
        return 1.0 - self.unrefused_share

    def to_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "unrefused_share": self.unrefused_share,
            "unrefused_interval": self.unrefused_interval.to_dict(),
            "mean_margin": self.mean_margin,
            "margin_interval": self.margin_interval.to_dict(),
            "shift": self.shift,
            "shift_interval": None if self.shift_interval is None else self.shift_interval.to_dict(),
            "margins": list(self.margins),
        }


def summarize(margins: Sequence[float], bare: Sequence[float] | None = None, confidence: float = 0.95) -> MarginSummary:
    """The share answered without refusal (Wilson), the mean margin (t) and, given the bare model's margins
    on the same prompts in the same order, the paired shift (t over the per-prompt differences)."""
    unrefused = sum(answered(m) for m in margins)
    mean, interval = mean_interval(margins, confidence)
    shift, shift_interval = None, None
    if bare is not None:
        if len(bare) != len(margins):
            raise ValueError("the bare model's margins are for other prompts")
        shift, shift_interval = mean_interval([b - m for b, m in zip(bare, margins, strict=True)], confidence)
    return MarginSummary(
        margins=tuple(margins),
        unrefused_share=unrefused / len(margins) if margins else math.nan,
        unrefused_interval=wilson_interval(unrefused, len(margins), confidence),
        mean_margin=mean,
        margin_interval=interval,
        shift=shift,
        shift_interval=shift_interval,
    )
