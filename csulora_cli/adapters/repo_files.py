"""Which files of a Hub repo make up a PEFT adapter: fetch those, and nothing else a repo may hold.

An adapter repo often carries training leftovers (optimizer states, checkpoints in subfolders) that
neither csulora nor PEFT reads; downloading them would cost gigabytes for nothing.
"""

from __future__ import annotations

from .peft import CONFIG_FILE, PICKLE_FILE, SAFETENSORS_FILE

# Small text files beside the adapter (its card, tokenizer files, chat templates): copied into the
# output, as they are from a local folder.
TEXT_SUFFIXES = (".json", ".md", ".txt", ".model", ".jinja", ".yaml", ".yml")
TEXT_FILE_LIMIT = 32 * 1024 * 1024


def adapter_repo_files(sizes: dict[str, int | None]) -> tuple[str, ...]:
    """The adapter's own files among a repo's {name: size}: its config, its weights (safetensors when
    both are there), and top-level text files below TEXT_FILE_LIMIT (size unknown counts as small)."""
    weights = SAFETENSORS_FILE if SAFETENSORS_FILE in sizes else PICKLE_FILE
    chosen = {name for name in (CONFIG_FILE, weights) if name in sizes}
    for name, size in sizes.items():
        small = size is None or size <= TEXT_FILE_LIMIT
        if "/" not in name and name.endswith(TEXT_SUFFIXES) and small:
            chosen.add(name)
    return tuple(sorted(chosen))
