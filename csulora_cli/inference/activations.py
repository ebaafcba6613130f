"""What a forward hook does with a module's input and output: keep them, or fold them into running sums.

A sink is called as `sink(module_name, inputs, output, token_mask)` with `inputs` the module's first
positional input (B, T, n) and `output` its output (B, T, m) (a block's hidden states when it returns a
tuple); `token_mask` (B, T) marks the real tokens of the batch, None when the caller gave none (every
position counts). Padded positions never enter a sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _real_tokens(values: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """(N, d): the rows of `values` (B, T, d) at real tokens."""
    flat = values.reshape(-1, values.shape[-1])
    if token_mask is None:
        return flat
    return flat[token_mask.reshape(-1).to(flat.device).bool()]


@dataclass
class Recorder:
    """Every call's input and output, detached on the CPU: for tests and small inspections."""

    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)

    def __call__(self, name: str, inputs: torch.Tensor, output: torch.Tensor, token_mask) -> None:
        self.calls.setdefault(name, []).append((inputs.detach().cpu(), output.detach().cpu()))


@dataclass
class InputCovariance:
    """Per module, sum over real tokens of x xᵀ (float64) and the token count: E[x xᵀ] of its inputs."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # (n, n)
    counts: dict[str, int] = field(default_factory=dict)

    def __call__(self, name: str, inputs: torch.Tensor, output: torch.Tensor, token_mask) -> None:
        x = _real_tokens(inputs.detach(), token_mask).double()
        total = self.sums.get(name)
        self.sums[name] = x.T @ x if total is None else total + x.T @ x
        self.counts[name] = self.counts.get(name, 0) + x.shape[0]

    def covariance(self, name: str) -> torch.Tensor:
        """(n, n) uncentred second moment of the inputs over every real token seen."""
        return self.sums[name] / max(self.counts[name], 1)


@dataclass
class MeanOutput:
    """Per module, the mean output over real tokens (float64): a block's mean residual-stream activation."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # (m,)
    counts: dict[str, int] = field(default_factory=dict)

    def __call__(self, name: str, inputs: torch.Tensor, output: torch.Tensor, token_mask) -> None:
        y = _real_tokens(output.detach(), token_mask).double()
        total = self.sums.get(name)
        self.sums[name] = y.sum(0) if total is None else total + y.sum(0)
        self.counts[name] = self.counts.get(name, 0) + y.shape[0]

    def mean(self, name: str) -> torch.Tensor:
        return self.sums[name] / max(self.counts[name], 1)


def last_real_tokens(token_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: only each row's last real token (the position the answer is generated from)."""
    mask = token_mask.bool()
    width = mask.shape[-1]
    last = width - 1 - torch.argmax(mask.flip(-1).to(torch.int8), dim=-1)
    only_last = torch.zeros_like(mask)
    only_last[torch.arange(mask.shape[0], device=mask.device), last] = True
    return only_last & mask


@dataclass
class LastTokenMeanOutput(MeanOutput):
    """Per module, the mean output at each prompt's last token: the refusal-direction literature's position
    (the residual stream where the model decides how to answer), one sample per prompt."""

    def __call__(self, name: str, inputs: torch.Tensor, output: torch.Tensor, token_mask) -> None:
        if token_mask is None:
            token_mask = torch.ones(output.shape[:2], dtype=torch.bool, device=output.device)
        super().__call__(name, inputs, output, last_real_tokens(token_mask))
