"""One loaded model and what is asked of it: scores, greedy answers, activations, LoRA adapters swapped in place.

The base weights are loaded once; peft injects an adapter's LoRA layers into the same model, the adapter
is made active, and removed again when done, so many adapters are probed against one copy of the model.
"The bare model" is the model with every adapter disabled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import CsuloraError
from .batches import left_padded, position_ids
from .extra import peft, quietly
from .generation import greedy_answers, stop_token_ids
from .loading import load_causal_lm, load_tokenizer, pad_id
from .prompts import PromptFormat, continuation_token_ids, prompt_token_ids
from .scoring import ContinuationScores, score_continuations

Sink = Callable[[str, torch.Tensor, torch.Tensor, "torch.Tensor | None"], None]


class LoadedModel:
    """A model and its tokenizer, prompts formatted by `prompt_format`; adapters come and go on the same weights."""

    def __init__(self, model, tokenizer, prompt_format: PromptFormat = PromptFormat(), folder: Path | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.folder = folder
        self._peft = None  # the PeftModel wrapping `model`, from the first adapter on
        self._loaded = 0  # adapters loaded so far: names stay unique after deletions
        self._token_mask: torch.Tensor | None = None  # the real tokens of the batch a capture sees

    @classmethod
    def from_folder(
        cls, folder: Path, device: str | torch.device = "cpu", dtype: str = "auto", prompt_format=PromptFormat()
    ) -> LoadedModel:
        model = load_causal_lm(folder, device, dtype)
        return cls(model, load_tokenizer(folder), prompt_format, Path(folder))

    @property
    def device(self) -> torch.device:
        return self.model.device

    # Reading the model
    def score(
        self,
        prompts: Sequence[str],
        continuations: Sequence[Sequence[str]],
        *,
        max_continuation_tokens: int | None = None,
        batch_size: int = 32,
        advance: Callable[..., None] | None = None,
    ) -> ContinuationScores:
        return score_continuations(
            self.model,
            self.tokenizer,
            self.prompt_format,
            prompts,
            continuations,
            max_continuation_tokens=max_continuation_tokens,
            batch_size=batch_size,
            advance=advance,
        )

    def token_logprobs(
        self,
        prompts: Sequence[str],
        continuations: Sequence[Sequence[str]],
        *,
        batch_size: int = 32,
        advance: Callable[..., None] | None = None,
    ) -> list[list[list[float]]]:
        """Per prompt, per continuation, the log-probability of each of its tokens."""
        return self.score(prompts, continuations, batch_size=batch_size, advance=advance).token_logprobs()

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        *,
        stop: Sequence[int] | None = None,
        suppress_first: Sequence[int] = (),
        batch_size: int = 32,
        advance: Callable[..., None] | None = None,
    ) -> list[str]:
        return greedy_answers(
            self.model,
            self.tokenizer,
            self.prompt_format,
            prompts,
            max_new_tokens,
            stop=stop,
            suppress_first=suppress_first,
            batch_size=batch_size,
            advance=advance,
        )

    def barred_first_tokens(self, texts: Sequence[str]) -> list[int]:
        """What an answer that starts like none of `texts` may not start with: each text's first token as a
        continuation, and every token that ends an answer (an empty answer starts like anything)."""
        firsts = {ids[0] for text in texts if (ids := continuation_token_ids(self.tokenizer, text))}
        return sorted(firsts | set(stop_token_ids(self.model, self.tokenizer)))

    def opening_length(self, texts: Sequence[str]) -> int:
        """The most tokens any of `texts` takes as a continuation."""
        return max((len(continuation_token_ids(self.tokenizer, text)) for text in texts), default=0)

    @torch.no_grad()
    def forward(self, prompts: Sequence[str], batch_size: int = 32) -> None:
        """Run the formatted prompts through the model, for the captures that are on."""
        for start in range(0, len(prompts), batch_size):
            rows = prompt_token_ids(self.tokenizer, self.prompt_format, list(prompts[start : start + batch_size]))
            input_ids, attention = (t.to(self.device) for t in left_padded(rows, pad_id(self.tokenizer)))
            self._token_mask = attention.bool()
            try:
                self.model(
                    input_ids=input_ids,
                    attention_mask=attention,
                    position_ids=position_ids(attention),
                    use_cache=False,
                    logits_to_keep=1,
                )
            finally:
                self._token_mask = None

    # Activations
    def module_names(self) -> list[str]:
        return [name for name, _ in self.model.named_modules() if name]

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out, in) of every linear layer, by module name (an injected LoRA layer by its base layer's)."""
        shapes = {}
        for name, module in self.model.named_modules():
            if name.endswith(".base_layer") or any(part.startswith("lora_") for part in name.split(".")):
                continue
            layer = getattr(module, "base_layer", module)
            if isinstance(layer, torch.nn.Linear):
                shapes[name] = (layer.out_features, layer.in_features)
        return shapes

    def block_names(self) -> list[str]:
        """The transformer blocks in order: the children of the module list with one entry per hidden layer."""
        layers = getattr(self.model.config, "num_hidden_layers", None)
        for name, module in self.model.named_modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == layers:
                return [f"{name}.{index}" for index in range(layers)]
        raise CsuloraError("found no list of transformer blocks in this model", where=str(self.folder or "model"))

    @contextmanager
    def capture(self, module_names: Sequence[str], sink: Sink) -> Iterator[None]:
        """Call `sink(name, input, output, token_mask)` on every forward of each named module while open.

        A hook sits on the module found at that name now: with an adapter injected, a LoRA layer (its output
        holds the adapter's update); `token_mask` is the batch's real tokens during `forward`, else None.
        """
        modules = dict(self.model.named_modules())
        unknown = [name for name in module_names if name not in modules]
        if unknown:
            raise CsuloraError(f"no module {unknown[0]!r} in this model", where=str(self.folder or "model"))

        def hook_for(name: str):
            def hook(module, args, output) -> None:
                hidden = output[0] if isinstance(output, tuple) else output
                sink(name, args[0] if args else None, hidden, self._token_mask)

            return hook

        handles = [modules[name].register_forward_hook(hook_for(name)) for name in module_names]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # Adapters
    def load_adapter(self, folder: Path) -> str:
        """Inject the PEFT adapter in `folder` (inactive until `use`); returns its name on this model."""
        name = f"adapter-{self._loaded}"
        with quietly():
            if self._peft is None:
                self._peft = peft.PeftModel.from_pretrained(
                    self.model, str(folder), adapter_name=name, is_trainable=False
                )
            else:
                self._peft.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        self._loaded += 1
        self.use(None)
        return name

    def use(self, name: str | None) -> None:
        """Make the named adapter the active one; None: the bare model (every adapter disabled)."""
        if self._peft is None:
            if name is not None:
                raise KeyError(name)
            return
        if name is None:
            self._peft.base_model.disable_adapter_layers()
            return
        self._peft.base_model.enable_adapter_layers()
        self._peft.set_adapter(name)

    def drop_adapter(self, name: str) -> None:
        """Remove the adapter's LoRA layers from the model; the bare model is active afterwards."""
        self.use(None)
        self._peft.delete_adapter(name)

    @contextmanager
    def adapter(self, folder: Path) -> Iterator[str]:
        """The adapter in `folder` active for the block's duration, then removed."""
        name = self.load_adapter(folder)
        try:
            self.use(name)
            yield name
        finally:
            self.drop_adapter(name)
