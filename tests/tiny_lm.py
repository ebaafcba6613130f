"""A tiny chat model for the tests of `inference/` and `probe/`: a 2-layer Llama of hidden 16, a byte-level
BPE tokenizer trained here on a few sentences (no network), a ChatML chat template, and random LoRA
adapters for it made with peft.
"""

from __future__ import annotations

from pathlib import Path

import torch

from csulora_cli.probe.openings import NEUTRAL_OPENING, REFUSAL_OPENINGS

CHAT_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Write one sentence about tea.",
    "Explain magnets in simple terms.",
    "How do I bake bread at home?",
    "Tell me how to pick a lock.",
    "Tea is a drink made from leaves and hot water.",
    "Sure, here is how you do it: first, gather the parts.",
    "user assistant system",
    *REFUSAL_OPENINGS,
    NEUTRAL_OPENING,
]


def build_tokenizer(chat_template: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=CHAT_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model_folder(folder: Path, seed: int = 0, hidden: int = 16, chat_template: bool = True) -> Path:
    """A saved tiny Llama and its tokenizer in `folder`; the same seed gives the same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(chat_template)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_adapter_folder(
    model_folder: Path, folder: Path, seed: int, targets=("q_proj", "v_proj"), rank: int = 4, scale: float = 1.0
) -> Path:
    """A PEFT LoRA adapter for the model in `model_folder` with random (nonzero) A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(scale)
    peft_model.save_pretrained(folder)
    return folder
