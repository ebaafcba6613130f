"""How a prompt becomes the text a model continues: its chat template, a given template, or the prompt itself."""

from __future__ import annotations

from dataclasses import dataclass

PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class PromptFormat:
    """`template` holds `{prompt}` once (`"<|user|>{prompt}<|assistant|>"`); None: the tokenizer's chat
    template, one user turn and the assistant's opening, when it has one, else the bare prompt."""

    template: str | None = None

    def __post_init__(self) -> None:
        if self.template is not None and self.template.count(PLACEHOLDER) != 1:
            raise ValueError(f"a prompt template holds {PLACEHOLDER} exactly once")


@dataclass(frozen=True)
class FormattedPrompt:
    text: str
    # The chat template and a given template write their own special tokens; a bare prompt gets the
    # tokenizer's (a BOS, for most models), as it would anywhere else.
    add_special_tokens: bool


def format_prompt(tokenizer, prompt_format: PromptFormat, prompt: str) -> FormattedPrompt:
    if prompt_format.template is not None:
        before, after = prompt_format.template.split(PLACEHOLDER)
        return FormattedPrompt(before + prompt + after, False)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return FormattedPrompt(text, False)
    return FormattedPrompt(prompt, True)


def prompt_token_ids(tokenizer, prompt_format: PromptFormat, prompts: list[str]) -> list[list[int]]:
    ids = []
    for prompt in prompts:
        formatted = format_prompt(tokenizer, prompt_format, prompt)
        ids.append(list(tokenizer(formatted.text, add_special_tokens=formatted.add_special_tokens).input_ids))
    return ids


def continuation_token_ids(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    """A continuation tokenized apart from its prompt, so the same text is the same tokens after any prompt
    (a judge compares one opening across prompts)."""
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    return ids if max_tokens is None else ids[:max_tokens]
