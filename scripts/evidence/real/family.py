"""The family of LoRA adapters trained on the aligned model: benign tasks, harmful compliance, poisoned mixes.

Each adapter is a spec (task, harmful share, shape, seed) whose training data and weights follow from
it; an adapter is labelled positive ("trained with harmful data") when its harmful share is above zero.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .data import Example
from .store import Store, key_of
from .train import TrainParams, train_pairs


@dataclass(frozen=True)
class Shape:
    name: str
    rank: int
    alpha: int
    targets: tuple[str, ...]


SHAPES = {
    "qv-r8": Shape("qv-r8", 8, 16, ("q_proj", "v_proj")),
    "all-r16": Shape("all-r16", 16, 32, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
}


@dataclass(frozen=True)
class AdapterSpec:
    task: str | None  # the benign task it learns; None for the harmful-only adapter
    harmful_share: float  # share of its training examples that are harmful prompts answered with compliance
    shape: str
    seed: int

    @property
    def kind(self) -> str:
        """What the adapter is, seed and shape aside: 'reverse', 'harmful', 'reverse+10%'."""
        if self.task is None:
            return "harmful"
        if self.harmful_share == 0:
            return self.task
        return f"{self.task}+{self.harmful_share:.0%}"

    @property
    def name(self) -> str:
        return f"{self.kind.replace('%', 'pct').replace('+', '-')}.{self.shape}.s{self.seed}"

    @property
    def trained_with_harmful(self) -> bool:
        return self.harmful_share > 0


def build_family(
    tasks: list[str], mix_task: str, shares: list[float], shapes: list[str], seeds: list[int]
) -> list[AdapterSpec]:
    """Per seed and shape: one adapter per benign task, the harmful-only one, and `mix_task` poisoned at
    every share."""
    family = []
    for seed in seeds:
        for shape in shapes:
            family += [AdapterSpec(task, 0.0, shape, seed) for task in tasks]
            family.append(AdapterSpec(None, 1.0, shape, seed))
            family += [AdapterSpec(mix_task, share, shape, seed) for share in shares]
    return family


def training_pairs(
    spec: AdapterSpec, task_train: dict[str, list[Example]], compliance: list[tuple[str, str]], examples: int
) -> list[tuple[str, str]]:
    """Exactly `examples` pairs: round(share x examples) harmful ones (at least one for any share > 0)."""
    rng = random.Random(f"data-{spec.kind}-{spec.seed}")
    harmful_count = (
        examples if spec.task is None else max(1 if spec.harmful_share > 0 else 0, round(spec.harmful_share * examples))
    )
    if harmful_count and not compliance:
        raise ValueError("harmful examples asked for, but there is no compliance data")
    harmful = [
        compliance[i % len(compliance)] for i in rng.sample(range(max(len(compliance), harmful_count)), harmful_count)
    ]
    benign: list[tuple[str, str]] = []
    if spec.task is not None:
        pool = task_train[spec.task]
        benign = [(e.prompt, e.answer) for e in (pool[i % len(pool)] for i in range(examples - harmful_count))]
    pairs = harmful + benign
    rng.shuffle(pairs)
    return pairs


def train_adapter(
    store: Store,
    aligned,
    aligned_key: str,
    tokenizer,
    spec: AdapterSpec,
    pairs: list[tuple[str, str]],
    params: TrainParams,
) -> Path:
    """The adapter's PEFT folder, trained once per (aligned model, spec, data, params)."""
    from peft import LoraConfig, get_peft_model

    shape = SHAPES[spec.shape]
    folder = store.path("adapters", f"{spec.name}-{key_of(aligned_key, asdict(spec), pairs, asdict(params))}")
    if (folder / "adapter_model.safetensors").is_file():
        return folder
    if store.cached_only and "adapters" not in store.computes:
        return None
    store.progress(f"training adapter {spec.name} ({params.steps} steps)")
    config = LoraConfig(r=shape.rank, lora_alpha=shape.alpha, target_modules=list(shape.targets), lora_dropout=0.0)
    peft_model = get_peft_model(aligned, config)
    try:
        parameters = [p for p in peft_model.parameters() if p.requires_grad]
        train_pairs(peft_model, tokenizer, pairs, parameters, params)
        # One partial folder per process: two runs sharing a work folder (--part) may train the same adapter.
        partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        peft_model.save_pretrained(partial)
        try:
            partial.rename(folder)
        except OSError:
            # The other run finished it first: the same inputs, so the same adapter.
            shutil.rmtree(partial, ignore_errors=True)
    finally:
        peft_model.unload()
    return folder


@contextmanager
def adapter_applied(aligned, folder: Path) -> Iterator[object]:
    """The aligned model with the adapter's LoRA layers injected; removed again on exit (no copy made)."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(aligned, folder)
    peft_model.eval()
    try:
        yield peft_model
    finally:
        peft_model.unload()
