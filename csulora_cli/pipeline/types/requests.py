"""What a command is asked to do: frozen requests, each value checked when the request is made.

Plain data: the functions that take these are `estimate.py`, `correct.py` and `inspect.py`, and what they
return is in `results.py`. A request that cannot be run (an unknown method, an energy outside (0, 1], two
sources of bases) is refused as it is built, naming the parameter, before any file is opened. Nothing
heavy is imported here (no torch, no Hub client): `tests/unit/test_architecture.py` checks it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ...checkpoints.hub.options import HubOptions
from ...correction.methods import check_method
from ...correction.params import CorrectionParams
from ...correction.statistics import STATISTICS
from ...errors import UsageError
from ...inference.params import check_dtype
from ...probe.prompts import DEFAULT_FIELD
from ...subspace.keys import parse_layers
from ...subspace.params import DEFAULT_ENERGY, DEFAULT_RIDGE, EstimationParams, check_energy, check_storage
from .devices import check_device

# `{name}` in a push template: the output folder's name (`org/{name}-safe`).
NAME_PLACEHOLDER = "{name}"
_COMMIT = re.compile(r"[0-9a-f]{40}")
# How `correct` treats a base/aligned order the sources contradict (`sides.py`): a warning, a refusal (a
# gate's verdict depends on the sign of V), or nothing (the user confirmed the order).
ORDER_CHECKS = ("warn", "refuse", "accept")


def adapter_tuple(adapters) -> tuple[str | Path, ...]:
    """One adapter (a folder or repo id, `str` or `Path`) or any iterable of them, as a tuple: a lone string
    is one adapter, never its characters."""
    if isinstance(adapters, (str, Path)):
        return (adapters,)
    try:
        items = tuple(adapters)
    except TypeError:
        raise UsageError(
            f"a folder, a Hub repo id, or a list of them; got {type(adapters).__name__}", parameter="adapters"
        ) from None
    for item in items:
        if not isinstance(item, (str, Path)):
            raise UsageError(f"each adapter is a folder or a Hub repo id, got {item!r}", parameter="adapters")
    return items


@dataclass(frozen=True)
class PushSpec:
    """Where finished outputs are pushed, one Hub repo (one commit) each.

    `repo` is a repo id, or a template in which `{name}` stands for each output folder's name
    (`org/{name}-safe`); the repo ids themselves are checked once the folders are known (`publish.py`).
    `revision` is the branch (None: main); `private` applies to a repo the push creates.
    """

    repo: str
    private: bool = False
    revision: str | None = None

    def __post_init__(self) -> None:
        if re.search(r"[{}]", self.repo.replace(NAME_PLACEHOLDER, "")):
            raise UsageError(
                f"{self.repo!r}: the only placeholder a repo may hold is {NAME_PLACEHOLDER} (the output folder's name)",
                parameter="push_to_hub",
            )
        if self.revision is not None and (not self.revision.strip() or _COMMIT.fullmatch(self.revision)):
            raise UsageError(f"{self.revision!r} is not a branch name; a push needs one", parameter="revision")

    @property
    def templated(self) -> bool:
        return NAME_PLACEHOLDER in self.repo

    def repo_for(self, name: str) -> str:
        return self.repo.replace(NAME_PLACEHOLDER, name)


@dataclass(frozen=True)
class PushRequest:
    """A finished output (a corrected adapter folder, or a subspace folder) pushed to a Hub repo, as the
    run's own push would have: after a failed push, without running the job again."""

    folder: Path
    repo: str
    private: bool = False
    revision: str | None = None
    hub: HubOptions = HubOptions()

    def __post_init__(self) -> None:
        if not isinstance(self.folder, Path):
            object.__setattr__(self, "folder", Path(self.folder))
        PushSpec(self.repo, self.private, self.revision)  # the same checks as a run's push

    @property
    def spec(self) -> PushSpec:
        return PushSpec(self.repo, self.private, self.revision)


@dataclass(frozen=True)
class SubspaceSpec:
    """Where bases come from: a subspace folder, or a base/aligned pair estimated through the cache.

        SubspaceSpec(subspace="subspace")                    # a folder from estimate_subspace(out=...)
        SubspaceSpec(subspace="org/llama-subspace@v1")       # or one published on the Hub
        SubspaceSpec(base="base", aligned="aligned")         # estimated (and cached) on the way
        SubspaceSpec(base="meta-llama/Llama-3.2-3B")         # aligned: the adapters' base_model_name_or_path

    It names a source or is refused as it is built (`SubspaceSpec()` names none); an `InspectRequest`
    without a subspace takes `subspace=None`.
    """

    subspace: str | Path | None = None  # a folder, or a Hub repo id `org/name[@revision]`
    base: str | None = None
    aligned: str | None = None
    estimation: EstimationParams = EstimationParams()
    energy: float = DEFAULT_ENERGY
    cache_dir: Path | None = None
    device: str = "auto"
    hub: HubOptions = HubOptions()
    # With a subspace folder: keep at most this many of each basis's stored columns (None: all of them,
    # up to `energy`). A pair's bases are cut at `estimation.max_rank` instead.
    rank_cap: int | None = None
    # A cap above what the folder stores is refused (it would mean nothing), unless it came from a preset,
    # which serves folders of any rank: then every stored column is kept.
    rank_cap_may_exceed: bool = False
    # The bases' models and the adapters' base_model_name_or_path disagree, and the user says that is right
    # (`plumbing/pairs.py`).
    confirm_models: bool = False

    def __post_init__(self) -> None:
        for name in ("base", "aligned"):  # a Path is as good as the string a user types
            if isinstance(getattr(self, name), Path):
                object.__setattr__(self, name, str(getattr(self, name)))
        if self.cache_dir is not None and not isinstance(self.cache_dir, Path):
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        self.estimation.check()
        check_energy(self.energy)
        check_device(self.device)
        if self.aligned is not None and self.base is None and self.subspace is None:
            raise UsageError("needs the base model too: give {base}", parameter="aligned")
        if self.subspace is not None and (self.base is not None or self.aligned is not None):
            raise UsageError("give either {subspace} or {base}/{aligned}, not both", parameter="subspace")
        if self.subspace is None and self.base is None:
            raise UsageError(
                "names no bases: give {subspace} (a subspace folder) or {base} (and {aligned}) to estimate one",
                parameter="subspace",
            )
        if self.rank_cap is not None:
            if self.subspace is None:
                raise UsageError("caps a subspace folder's bases; give it with {subspace}", parameter="max_rank")
            if self.rank_cap < 1:
                raise UsageError(f"must be at least 1, got {self.rank_cap}", parameter="max_rank")

    @property
    def columns_kept(self) -> int | None:
        """The most basis columns a module keeps (before the energy rule); None for no limit."""
        return self.rank_cap if self.subspace is not None else self.estimation.max_rank


@dataclass(frozen=True)
class EstimateRequest:
    """The safety subspace of a base/aligned pair, into the cache or a portable folder (`out`).

    EstimateRequest(base="base", aligned="aligned", adapter="adapter", out=Path("subspace"))
    EstimateRequest(base="org/base", aligned="org/base-instruct", modules="mlp", layers="0-15")
    EstimateRequest(base="base", aligned="aligned", adapter="adapter", out=Path("acts"),
                    activations="harmful.txt", contrast="benign.txt")    # input directions, from activations

    With `activations` the aligned model is run on those prompts (and on `contrast`'s) and the folder holds,
    per module the adapter targets, the input directions the harmful prompts excite and the contrast ones do
    not; with `refusal_direction` too, the refusal direction on the modules that write to the residual
    stream (docs/method.md section 12). `base` is then recorded, not read.
    """

    base: str
    aligned: str
    modules: str | None = None  # regex over base keys
    adapter: str | Path | None = None
    layers: str | None = None  # "0-15", "3", "0-3,8-11": split one model across jobs
    estimation: EstimationParams = EstimationParams()
    energy: float = DEFAULT_ENERGY
    cache_dir: Path | None = None
    device: str = "auto"
    hub: HubOptions = HubOptions()
    out: Path | None = None
    overwrite: bool = False
    storage: str = "float32"  # of the --out folder's bases (the cache keeps float32)
    push: PushSpec | None = None  # push the finished subspace folder to a Hub repo
    # The user confirms a base/aligned order the sources contradict (no warning then).
    confirm_order: bool = False
    confirm_models: bool = False  # the adapter names another aligned model, and that is right (`plumbing/pairs.py`)
    # The activation subspace: prompt sources as the probe reads them (a file, or a Hub dataset's file).
    activations: str | None = None  # prompts the aligned model refuses
    contrast: str | None = None  # prompts it answers (the task's, or benign ones); None: Sigma_contrast = I
    prompt_field: str = DEFAULT_FIELD
    refusal_direction: bool = False  # the output-side refusal direction instead of input directions
    ridge: float = DEFAULT_RIDGE  # relative to the contrast's mean eigenvalue
    batch_size: int = 8
    dtype: str = "auto"

    def __post_init__(self) -> None:
        for name in ("activations", "contrast"):
            if isinstance(getattr(self, name), Path):
                object.__setattr__(self, name, str(getattr(self, name)))
        self._check_activation_options()
        for name in ("base", "aligned"):
            if isinstance(getattr(self, name), Path):
                object.__setattr__(self, name, str(getattr(self, name)))
        for name in ("out", "cache_dir"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Path):
                object.__setattr__(self, name, Path(getattr(self, name)))
        self.estimation.check()
        check_energy(self.energy)
        check_device(self.device)
        check_storage(self.storage)
        if self.storage != "float32" and self.out is None:
            raise UsageError("is for a subspace folder: give {out} DIR", parameter="storage")
        if self.push is not None and self.out is None:
            raise UsageError("pushes a subspace folder: give it with {out} DIR", parameter="push_to_hub")
        if self.modules and self.adapter is not None:
            raise UsageError("give {modules} or {adapter}, not both", parameter="modules")
        if self.modules:
            try:
                re.compile(self.modules)
            except re.error as error:
                raise UsageError(f"not a valid regular expression ({error})", parameter="modules") from None
        if self.layers is not None:
            parse_layers(self.layers)

    def _check_activation_options(self) -> None:
        """What only an activation subspace reads needs `activations`; what it cannot use is refused beside it."""
        if self.activations is None:
            for name in ("contrast", "refusal_direction"):
                if getattr(self, name):
                    raise UsageError("is part of an activation subspace: give {activations} SOURCE", parameter=name)
            if self.prompt_field != DEFAULT_FIELD:
                raise UsageError("names a field of {activations}' prompts: give them", parameter="prompt_field")
            return
        if self.adapter is None:
            raise UsageError("reads the modules an adapter targets: give {adapter} ADAPTER", parameter="activations")
        for name in ("modules", "layers", "push"):
            if getattr(self, name) is not None:
                raise UsageError(
                    "is for bases from weights; an activation subspace covers the modules {adapter} targets "
                    "and is written to {out}",
                    parameter=name,
                )
        if self.out is None:
            raise UsageError("an activation subspace is written to a folder: give {out} DIR", parameter="activations")
        if self.refusal_direction and self.contrast is None:
            raise UsageError(
                "is the difference of mean activations on harmful and harmless prompts: give {contrast} SOURCE",
                parameter="refusal_direction",
            )
        if not (math.isfinite(self.ridge) and self.ridge > 0.0):
            raise UsageError(f"must be a positive number, got {self.ridge}", parameter="ridge")
        if self.batch_size < 1:
            raise UsageError(f"must be at least 1, got {self.batch_size}", parameter="batch_size")
        check_dtype(self.dtype)


@dataclass(frozen=True)
class CorrectRequest:
    """Adapters to correct and where each goes: `out` is the one adapter's output folder; `out_dir` takes
    any number, each written to `out_dir / <its path below the adapters' common parent>`.

        CorrectRequest(adapters="adapter", out="adapter-safe", subspace=SubspaceSpec(subspace="subspace"))
        CorrectRequest(adapters=["runs/a/adapter", "runs/b/adapter"], out_dir="corrected",
                       subspace=SubspaceSpec(base="base", aligned="aligned"), correction=CorrectionParams(lambda_=1.0))

    `adapters` is one folder or Hub repo id, or a list of them; folders may be `str` or `Path`.
    """

    adapters: tuple[str | Path, ...]  # folders, or Hub repo ids `org/name[@revision]`
    subspace: SubspaceSpec
    out: Path | None = None
    out_dir: Path | None = None
    method: str = "csulora"
    correction: CorrectionParams = CorrectionParams()
    dry_run: bool = False
    overwrite: bool = False
    # An adapter that already carries a csulora report is refused unless asked for.
    recorrect: bool = False
    # Recorded in each report (provenance); the CLI passes its own command line, tokens removed.
    command_line: tuple[str, ...] | None = None
    # Push each finished output to a Hub repo (the token is the subspace's `hub.token`).
    push: PushSpec | None = None
    # A base/aligned order the sources contradict (`sides.py`): "warn", "refuse" or "accept" (confirmed).
    order_check: str = "warn"
    # An adapter refused by a check of its own (unreadable, already corrected, its output taken, keys the
    # subspace lacks) is left out and the others are written; `correct` then raises `BatchFailures` at
    # the end. Without it, such an adapter stops the run before anything is written.
    keep_going: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapters", adapter_tuple(self.adapters))
        for name in ("out", "out_dir"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Path):
                object.__setattr__(self, name, Path(getattr(self, name)))
        if not isinstance(self.subspace, SubspaceSpec):
            raise UsageError(
                "names no bases: give {subspace} (a subspace folder) or {base} (and {aligned}) to estimate one",
                parameter="subspace",
            )
        if self.order_check not in ORDER_CHECKS:
            raise UsageError(
                f"must be one of {', '.join(ORDER_CHECKS)}, got {self.order_check!r}", parameter="order_check"
            )
        if not self.adapters:
            raise UsageError("give at least one adapter folder", parameter="adapters")
        if self.push is not None:
            if self.dry_run:
                raise UsageError("pushes what is written, and {dry_run} writes nothing", parameter="push_to_hub")
            if len(self.adapters) > 1 and not self.push.templated:
                raise UsageError(
                    f"each of the {len(self.adapters)} adapters needs a repo of its own: put {NAME_PLACEHOLDER} "
                    f"(each output folder's name) in it, e.g. org/{NAME_PLACEHOLDER}-safe",
                    parameter="push_to_hub",
                )
        if self.out is not None and self.out_dir is not None:
            raise UsageError("give {out} (one adapter) or {out_dir} (any number), not both", parameter="out")
        if self.out is not None and len(self.adapters) > 1:
            raise UsageError(
                f"takes exactly one adapter, got {len(self.adapters)}; use {{out_dir}} DIR for several",
                parameter="out",
            )
        if self.out is None and self.out_dir is None and not self.dry_run:
            raise UsageError(
                "an output is needed: {out} for one adapter or {out_dir} for several (or {dry_run})",
                parameter="out",
            )
        check_method(self.method, self.correction.two_sided, self.correction.safety_adapter)
        if self.correction.readd_everywhere and self.method != "readd":
            raise UsageError(f"is a readd option, not one of {{method}} {self.method}", parameter="readd_everywhere")
        if self.correction.readd_everywhere and self.subspace.subspace is None:
            raise UsageError(
                "needs {subspace} DIR: the folder's modules are what 'every module' means", parameter="readd_everywhere"
            )


@dataclass(frozen=True)
class InspectRequest:
    """One adapter to look at: its modules, or with a subspace what `correct` would remove, and a CI gate.

    InspectRequest(adapter="adapter")                                        # modules, ranks, scales
    InspectRequest(adapter="adapter", subspace=SubspaceSpec(subspace="subspace"),
                   gate="reversal", fail_below=-0.05)                        # result.gate.tripped

    Without a subspace, `hub` and `cache_dir` say how the adapter is read; a subspace carries its own.
    """

    adapter: str | Path
    subspace: SubspaceSpec | None = None
    method: str = "csulora"
    correction: CorrectionParams = CorrectionParams()
    # A CI gate: trips (exit 3) when the adapter's total `gate` statistic is above `fail_above` or below
    # `fail_below`. Without `gate`, the off-subspace share (what `--fail-above` has always meant). A `gate`
    # needs one of the two thresholds, unless it only chooses what `plot` draws.
    fail_above: float | None = None
    fail_below: float | None = None
    gate: str | None = None
    plot: Path | None = None  # a PNG heatmap of the gate's statistic (or the off-subspace share)
    command_line: tuple[str, ...] | None = None
    # The user confirms a base/aligned order the sources contradict; without it a gate run refuses it.
    confirm_order: bool = False
    hub: HubOptions = HubOptions()
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.cache_dir is not None and not isinstance(self.cache_dir, Path):
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if not isinstance(self.adapter, (str, Path)):
            raise UsageError(
                f"one adapter folder or Hub repo id, got {type(self.adapter).__name__}", parameter="adapter"
            )
        check_method(self.method, self.correction.two_sided, self.correction.safety_adapter)
        if self.gate is not None and self.gate not in STATISTICS:
            raise UsageError(
                f"unknown statistic {self.gate!r}; choose one of {', '.join(STATISTICS)}", parameter="gate"
            )
        if self.fail_above is not None and self.fail_below is not None:
            raise UsageError("give {fail_above} or {fail_below}, not both", parameter="fail_below")
        if self.gate is not None and self.fail_above is None and self.fail_below is None and self.plot is None:
            # A gate without a threshold would pass everything: a CI job that forgot it must not go green.
            raise UsageError(
                f"{self.gate} is the statistic a gate checks, but no threshold was given: add {{fail_above}} F "
                "or {fail_below} F (or {plot} FILE.png to draw the statistic without a gate)",
                parameter="gate",
            )
        for name in ("fail_above", "fail_below"):
            threshold = getattr(self, name)
            if threshold is None:
                continue
            if self.statistic.endswith("_share") and not 0.0 <= threshold <= 1.0:
                raise UsageError(f"must be in [0, 1] for {self.statistic}, got {threshold}", parameter=name)
            if not math.isfinite(threshold):
                raise UsageError(f"must be a finite number, got {threshold}", parameter=name)
        needs_subspace = [
            name for name in ("fail_above", "fail_below", "gate", "plot") if getattr(self, name) is not None
        ]
        if needs_subspace and self.subspace is None:
            raise UsageError("needs a subspace: pass {subspace} DIR or {base} BASE", parameter=needs_subspace[0])

    @property
    def statistic(self) -> str:
        return self.gate or "off_share"

    @property
    def order_check(self) -> str:
        """A gate's verdict depends on the sign of V: a contradicted order is refused there, else a warning."""
        if self.confirm_order:
            return "accept"
        gated = self.fail_above is not None or self.fail_below is not None
        return "refuse" if gated else "warn"
