"""The restore part: correction families swept on a validation split, one setting per family chosen there,
the chosen ones scored on the held-out split on every seed (docs/results/real_model_restore.md).

Its inputs are the main run's (aligned model, adapters, safety subspace, all cached in the work folder);
what it adds: the validation and look-alike scores, the activation folders of `estimate-subspace
--activations`, a safety adapter for merge-safety, and the corrected adapters of every setting.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from . import corrections as fix
from . import restore_rules as rules
from .align import cached_answers
from .data import validation_examples
from .family import AdapterSpec, adapter_applied, build_family, train_adapter
from .measure import EvalSets, refusal_rate, score
from .probe_family import adapter_probe, probe_in_process, probe_model
from .restore_settings import CHOSEN, CONTROL, Family, heldout_settings, uses
from .store import folder_digest, key_of
from .train import TrainParams

RESTORE_VERSION = 1
VALIDATION, HELDOUT = "validation", "heldout"
# The safety adapter merge-safety merges in: the widest shape, trained once on the alignment split.
SAFETY_SPEC = AdapterSpec("safety", 0.0, "all-r16", 0)


@dataclass(frozen=True)
class RestoreConfig:
    """What the restore part runs; the split sizes live in RunConfig.splits (validation_*)."""

    groups: tuple[tuple[str, str], ...]  # (kind, shape); the first has the widest shape
    families: tuple[Family, ...]
    sweep_seeds: tuple[int, ...] = (0,)  # every setting, on validation
    heldout_seeds: tuple[int, ...] = (0, 1, 2)  # the chosen settings (and every one of EVERY families)
    activation_rank: int = 64  # input directions per module of the activation folder
    safety_steps: int = 16  # steps of the safety adapter's training (batch and learning rate: the family's)
    probe: bool = True  # probe the chosen held-out rows of the first held-out seed
    probe_harmful: int = 32  # on the first n harmful probe prompts and n/2 benign ones (~20 s per adapter at 64)

    def as_dict(self) -> dict:
        return {
            "groups": [f"{kind} {shape}" for kind, shape in self.groups],
            "families": [family.as_dict() for family in self.families],
            "sweep_seeds": list(self.sweep_seeds),
            "heldout_seeds": list(self.heldout_seeds),
            "activation_rank": self.activation_rank,
            "safety_steps": self.safety_steps,
            "probe": self.probe,
            "probe_harmful": self.probe_harmful,
            "choice_rule": rules.CHOICE_RULE,
        }


@dataclass
class Scoring:
    """Scores of models on the validation and held-out splits (look-alike over-refusal included), each
    computed once per model content and timed when computed."""

    bench: object  # run.Bench
    validation_tasks: dict
    validation_openings: list[str]
    timings: dict[str, list[float]] = field(default_factory=lambda: {VALIDATION: [], HELDOUT: [], "correct": []})

    def _keys(self, split: str, model_key: str, tasks: list[str]) -> list[tuple[str, str]]:
        bench, splits = self.bench, self.bench.splits
        lookalike = splits.lookalike_validation if split == VALIDATION else splits.lookalike_heldout
        judged = key_of(model_key, lookalike, bench.config.eval_tokens, bench.judge.prefixes, RESTORE_VERSION)
        if split == HELDOUT:
            return [("scores", bench.scores_key(model_key, tasks)), ("lookalike", judged)]
        sets = (splits.validation_harmful, splits.validation_benign, self._tasks(tasks), bench.config.eval_tokens)
        return [("scores", key_of(model_key, "validation", sets, bench.judge.prefixes, RESTORE_VERSION))]

    def _tasks(self, tasks: list[str]) -> dict:
        return {t: [(e.prompt, e.answer) for e in self.validation_tasks[t]] for t in tasks}

    def scores(self, split: str, model_key: str, opener, tasks: list[str], what: str) -> dict | None:
        """The merged scores of one model on `split`; `opener()` gives the model when something is missing."""
        store = self.bench.store
        keys = self._keys(split, model_key, tasks)
        cached = [store.cached(kind, key) for kind, key in keys]
        if all(value is not None for value in cached):
            return _merged(cached)
        if store.cached_only:
            return None
        started = time.perf_counter()
        with opener() as model:
            values = [
                store.json_step(kind, key, lambda kind=kind: self._compute(split, kind, model, model_key, tasks, what))
                for kind, key in keys
            ]
        self.timings[split].append(time.perf_counter() - started)
        return _merged(values)

    def _compute(self, split: str, kind: str, model, model_key: str, tasks: list[str], what: str) -> dict:
        bench = self.bench
        if split == HELDOUT and kind == "scores":
            return bench.measured(model, model_key, tasks, what)
        if split == HELDOUT:
            bench.store.progress(f"look-alike over-refusal of {what}")
            rate, _ = refusal_rate(
                model, bench.tokenizer, bench.splits.lookalike_heldout, bench.judge, bench.config.eval_tokens
            )
            return {"over_refusal_lookalike": rate}
        bench.store.progress(f"validating {what}")
        sets = EvalSets(
            bench.splits.validation_harmful,
            self.validation_openings,
            bench.splits.validation_benign,
            {t: self.validation_tasks[t] for t in tasks},
            bench.config.eval_tokens,
        )
        scores, _ = score(model, bench.base, bench.tokenizer, sets, bench.judge)
        rate, _ = refusal_rate(
            model, bench.tokenizer, bench.splits.lookalike_validation, bench.judge, bench.config.eval_tokens
        )
        return scores.as_dict() | {"over_refusal_lookalike": rate}


def _merged(values: list[dict]) -> dict:
    merged: dict = {}
    for value in values:
        merged |= value
    return merged


def run_restore(bench, restore: RestoreConfig, subspace_folders) -> dict:
    """The restore part's raw results: validation and held-out rows, the choices, the stages, the timings.
    `subspace_folders(bench, folders)` is run.subspace_folders (the safety subspace and its random control)."""
    store, config, splits = bench.store, bench.config, bench.splits
    started = time.perf_counter()
    tasks = sorted({t for t in config.tasks if any(kind.startswith(t) for kind, _ in restore.groups)})
    validation_tasks = {
        t: validation_examples(t, splits.tasks[t][0] + splits.tasks[t][1], config.splits.validation_task) for t in tasks
    }
    openings = cached_answers(
        store,
        bench.base,
        bench.tokenizer,
        bench.base_key,
        splits.validation_harmful,
        12,
        "base validation harmful (openings)",
    )
    scoring = Scoring(bench, validation_tasks, openings)

    seeds = sorted(set(restore.sweep_seeds) | set(restore.heldout_seeds))
    family = build_family(config.tasks, config.mix_task, config.shares, config.shapes, seeds)
    adapters: dict[tuple[str, str, int], tuple[AdapterSpec, Path]] = {}
    from .run import train_specs  # run imports this module's config type

    for kind, shape in restore.groups:
        specs = [s for s in family if (s.kind, s.shape) == (kind, shape)]
        for spec, folder in train_specs(bench, specs).items():
            adapters[(kind, shape, spec.seed)] = (spec, folder)
    first_kind, first_shape = restore.groups[0]
    widest = {spec: folder for (k, s, _), (spec, folder) in adapters.items() if (k, s) == (first_kind, first_shape)}
    folders = subspace_folders(bench, widest)
    folders |= activation_folders(bench, restore, next(iter(widest.values())))
    extra = {}
    if uses(restore.families, method="merge-safety"):
        extra["merge-safety"] = ("--safety-adapter", str(safety_adapter(bench, restore)))

    stages = {
        split: scoring.scores(split, bench.aligned_key, lambda: nullcontext(bench.aligned), tasks, "aligned")
        for split in (VALIDATION, HELDOUT)
    }
    rows: list[dict] = []
    choices: dict[str, dict] = {}
    for kind, shape in restore.groups:
        group = f"{kind} {shape}"
        for seed in restore.sweep_seeds:
            if (kind, shape, seed) not in adapters:
                continue
            spec, folder = adapters[(kind, shape, seed)]
            for fam in [f for f in restore.families if f.runs_on(shape) and f.validate]:
                for setting in fam.settings:
                    row = corrected_row(scoring, folders, extra, group, spec, folder, fam, setting, VALIDATION)
                    rows += [row] if row else []
        store.progress(f"{group}: validation sweep done")
        choices[group] = choose_settings(rows, group, restore.families, stages[VALIDATION])
        chosen = {name: _setting_of(restore.families, name, entry["setting"]) for name, entry in choices[group].items()}
        for seed in restore.heldout_seeds:
            if (kind, shape, seed) not in adapters:
                continue
            spec, folder = adapters[(kind, shape, seed)]
            for fam, setting in heldout_settings(restore.families, chosen):
                if (fam.heldout_seeds is not None and seed not in fam.heldout_seeds) or not fam.runs_on(shape):
                    continue
                row = corrected_row(scoring, folders, extra, group, spec, folder, fam, setting, HELDOUT)
                rows += [row] if row else []
        store.progress(f"{group}: held-out rows done")
    probe = probe_heldout(bench, restore, rows) if restore.probe else None
    return {
        "config": restore.as_dict(),
        "splits": {
            "validation_harmful": len(splits.validation_harmful),
            "validation_benign": len(splits.validation_benign),
            "validation_task": {t: len(v) for t, v in validation_tasks.items()},
            "lookalike_validation": len(splits.lookalike_validation),
            "lookalike_heldout": len(splits.lookalike_heldout),
            "heldout_harmful": len(splits.heldout_harmful),
            "heldout_benign": len(splits.heldout_benign),
            "heldout_task": {t: len(splits.tasks[t][1]) for t in tasks},
        },
        "stages": {"aligned": stages},
        "rows": rows,
        "choices": choices,
        "probe": probe,
        "timings": scoring.timings | {"restore_wall_s": time.perf_counter() - started},
    }


def _setting_of(families: tuple[Family, ...], name: str, label: str) -> fix.Setting:
    family = next(f for f in families if f.name == name)
    return next(s for s in family.settings if s.label == label)


def corrected_row(
    scoring: Scoring,
    folders: dict[str, Path],
    extra: dict[str, tuple[str, ...]],
    group: str,
    spec: AdapterSpec,
    folder: Path,
    family: Family,
    setting: fix.Setting,
    split: str,
) -> dict | None:
    """One setting on one adapter and split: corrected once (cached by content), scored, the report's
    energies kept; None when a store that computes nothing has not got it."""
    bench = scoring.bench
    tasks = [spec.task] if spec.task else []
    totals: dict = {}
    corrected = folder
    if setting.method != "none":
        args = extra.get(setting.method, ())
        name = f"{spec.name}-{key_of(folder_digest(folder), setting.label, folders[setting.subspace].name, args)}"
        corrected = bench.store.path("corrected", name)
        if not (corrected / "csulora_report.json").is_file():
            if bench.store.cached_only:
                return None
            bench.store.progress(f"correcting {spec.name}: {setting.label}")
        started = time.perf_counter()
        totals = fix.correct(folder, folders[setting.subspace], setting, corrected, args)
        scoring.timings["correct"].append(time.perf_counter() - started)
    what = f"{spec.name} after {setting.label}"
    scores = scoring.scores(
        split, folder_digest(corrected), lambda: adapter_applied(bench.aligned, corrected), tasks, what
    )
    if scores is None:
        return None
    return {
        "group": group,
        "kind": spec.kind,
        "shape": spec.shape,
        "seed": spec.seed,
        "task": spec.task,
        "split": split,
        "family": family.name,
        "setting": setting.label,
        "method": setting.method,
        "params": setting.params,
        "subspace": setting.subspace,
        "scores": scores,
        "energy": energy_of(totals),
        "folder": str(corrected),
    }


def energy_of(totals: dict) -> dict | None:
    """The correct report's totals as shares of the update's energy ||dW||^2: what the correction changed
    (||dW' - dW||^2) and what the corrected update holds (||dW'||^2, above 1 when it adds)."""
    update = totals.get("update_energy")
    if not update:
        return None
    return {
        "changed_share": totals["removed_energy"] / update,
        "corrected_over_update": totals["corrected_energy"] / update,
    }


def choose_settings(rows: list[dict], group: str, families: tuple[Family, ...], aligned: dict) -> dict[str, dict]:
    """Per CHOSEN family, the setting CHOICE_RULE picks on the group's validation rows (mean over sweep seeds)."""
    validation = [r for r in rows if r["group"] == group and r["split"] == VALIDATION]
    if not validation:
        return {}
    task = validation[0]["task"]

    def point(label: str) -> rules.Point | None:
        points = [rules.point_of(r["scores"], task) for r in validation if r["setting"] == label]
        return rules.mean_point(points) if points else None

    uncorrected = point("none")
    if uncorrected is None:
        return {}
    aligned_point = rules.point_of(aligned, task)
    chosen = {}
    for family in families:
        if family.heldout != CHOSEN:
            continue
        candidates = {s.label: point(s.label) for s in family.settings if point(s.label) is not None}
        if candidates:
            choice = rules.choose(candidates, uncorrected, aligned_point)
            chosen[family.name] = {"setting": choice.label, "tier": choice.tier}
    return chosen


def activation_folders(bench, restore: RestoreConfig, adapter: Path) -> dict[str, Path]:
    """The activation folders the families read: input directions (`--rank`) and the refusal direction,
    from the alignment split's harmful prompts against its benign and task prompts."""
    wanted = {
        "activations": ("--rank", str(restore.activation_rank)),
        "refusal": ("--refusal-direction",),
    }
    wanted = {name: options for name, options in wanted.items() if uses(restore.families, subspace=name)}
    if not wanted:
        return {}
    harmful, contrast = bench.alignment_prompts()
    key = key_of(bench.aligned_key, harmful, contrast)
    files = {}
    for name, prompts in (("harmful", harmful), ("contrast", contrast)):
        path = bench.store.path("prompts", f"{name}-{key}.txt")
        if not path.is_file():
            # One prompt a line: a prompt's own line breaks would split it.
            path.write_text("\n".join(" ".join(p.split()) for p in prompts) + "\n")
        files[name] = path
    folders = {}
    for name, options in wanted.items():
        out = bench.store.path("subspaces", f"{name}-{key_of(key, options, folder_digest(adapter))}")
        if not (out / "subspace.json").is_file():
            bench.store.progress(f"estimating the {name} folder from activations ({' '.join(options)})")
        folders[name] = fix.estimate_activation_subspace(
            bench.base_folder, bench.aligned_folder, adapter, files["harmful"], files["contrast"], out, options
        )
        # The random control: the same number of directions per module, drawn at random.
        if uses(restore.families, subspace=f"random-{name}"):
            random_out = bench.store.path("subspaces", f"random-{out.name}")
            folders[f"random-{name}"] = fix.random_subspace(folders[name], random_out)
    return folders


def safety_adapter(bench, restore: RestoreConfig) -> Path:
    """A LoRA trained once on the aligned model on the alignment pairs (harmful -> refusal, benign -> the
    base's answers): what merge-safety merges in."""
    config = bench.config
    params = TrainParams(
        restore.safety_steps, config.adapter_batch, config.adapter_learning_rate, config.answer_tokens, 0
    )
    return train_adapter(
        bench.store, bench.aligned, bench.aligned_key, bench.tokenizer, SAFETY_SPEC, bench.alignment, params
    )


def probe_heldout(bench, restore: RestoreConfig, rows: list[dict]) -> dict | None:
    """The probe on the first held-out seed's chosen rows (and their uncorrected adapters), in one call."""
    seed = restore.heldout_seeds[0] if restore.heldout_seeds else None
    chosen = {f.name for f in restore.families if f.heldout in (CHOSEN, CONTROL)} | {"none"}
    probed = [r for r in rows if r["split"] == HELDOUT and r["seed"] == seed and r["family"] in chosen]
    if not probed or not bench.splits.probe_harmful:
        return None
    folders = sorted({r["folder"] for r in probed})
    digests = [folder_digest(Path(f)) for f in folders]
    harmful = bench.splits.probe_harmful[: restore.probe_harmful]
    benign = bench.splits.probe_benign[: restore.probe_harmful // 2]
    key = key_of("restore", bench.aligned_key, digests, harmful, benign, RESTORE_VERSION)

    def compute() -> dict:
        bench.store.progress(f"probing {len(folders)} held-out adapters (one process)")
        model = probe_model(bench.store, bench.aligned_folder, bench.aligned_key)
        return probe_in_process(model, [Path(f) for f in folders], harmful, benign)

    result = bench.store.json_step("probe", key, compute)
    if result is None:
        return None
    by_folder = {
        folder: adapter_probe(margins, result["bare"], [])
        for folder, margins in zip(folders, result["adapters"], strict=True)
    }
    for row in probed:
        statistics = dict(by_folder[row["folder"]])
        statistics.pop("by_prompts", None)
        row["probe"] = statistics
    return {
        "seed": seed,
        "adapters": len(folders),
        "wall_s": result["wall_s"],
        "harmful": len(harmful),
        "benign": len(benign),
    }
