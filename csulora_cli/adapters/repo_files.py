"""Which files of a Hub repo or a local folder make up a PEFT adapter: read and copy those, nothing else.

An adapter repo often carries training leftovers (optimizer states, checkpoints in subfolders) that
neither csulora nor PEFT reads; downloading them would cost gigabytes for nothing.
"""

from __future__ import annotations

# PEFT's file names (`peft.py` reads them from here).
CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"

# Small text files beside the adapter (its card, tokenizer files, chat templates): copied into the
# output, as they are from a local folder.
TEXT_SUFFIXES = (".json", ".md", ".txt", ".model", ".jinja", ".yaml", ".yml")
TEXT_FILE_LIMIT = 32 * 1024 * 1024
# What a training run saves beside an adapter (transformers' Trainer checkpoints): state to resume
# training, which neither PEFT nor an inference server reads, and which must not ship in a corrected adapter.
TRAINING_STATE = ("trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt")
TRAINING_STATE_PREFIXES = ("rng_state",)


def is_training_state(name: str) -> bool:
    return name in TRAINING_STATE or name.startswith(TRAINING_STATE_PREFIXES)


def adapter_repo_files(sizes: dict[str, int | None]) -> tuple[str, ...]:
    """The adapter's own files among a repo's or a folder's {name: size}: its config, its weights
    (safetensors when both are there), and top-level text files below TEXT_FILE_LIMIT (size unknown counts
    as small) that are not training state."""
    weights = SAFETENSORS_FILE if SAFETENSORS_FILE in sizes else PICKLE_FILE
    chosen = {name for name in (CONFIG_FILE, weights) if name in sizes}
    for name, size in sizes.items():
        small = size is None or size <= TEXT_FILE_LIMIT
        if "/" not in name and name.endswith(TEXT_SUFFIXES) and small and not is_training_state(name):
            chosen.add(name)
    return tuple(sorted(chosen))
