"""What flows into and out of the pipeline: frozen requests and results, each value checked when made.

Plain data: the functions that take these are `estimate.py`, `correct.py` and `inspect.py`. A request
that cannot be run (an unknown method, an energy outside (0, 1], two sources of bases) is refused as it
is built, naming the parameter, before any file is opened.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoints.hub.options import HubOptions
from ..correction.detection import STATISTICS
from ..correction.methods import METHODS, get_method
from ..correction.params import CorrectionParams
from ..errors import UsageError
from ..report.records import AdapterReport, PushRecord
from ..subspace.keys import Target, parse_layers
from ..subspace.params import DEFAULT_ENERGY, EstimationParams, check_energy, check_storage
from .devices import check_device


def _check_method(method: str, correction: CorrectionParams) -> None:
    chosen = get_method(method)
    if correction.two_sided and not chosen.supports_two_sided:
        two_sided = ", ".join(name for name, known in METHODS.items() if known.supports_two_sided)
        raise UsageError(
            f"{{method}} {chosen.name} has no two-sided form (it has for {two_sided})", parameter="two_sided"
        )


# `{name}` in a push template: the output folder's name (`org/{name}-safe`).
NAME_PLACEHOLDER = "{name}"
_COMMIT = re.compile(r"[0-9a-f]{40}")


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
class SubspaceSpec:
    """Where bases come from: a subspace folder, or a base/aligned pair estimated through the cache."""

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

    def __post_init__(self) -> None:
        self.estimation.check()
        check_energy(self.energy)
        check_device(self.device)
        if self.subspace is not None and (self.base is not None or self.aligned is not None):
            raise UsageError("give either {subspace} or {base}/{aligned}, not both", parameter="subspace")
        if self.rank_cap is not None:
            if self.subspace is None:
                raise UsageError("caps a subspace folder's bases; give it with {subspace}", parameter="max_rank")
            if self.rank_cap < 1:
                raise UsageError(f"must be at least 1, got {self.rank_cap}", parameter="max_rank")

    @property
    def columns_kept(self) -> int | None:
        """The most basis columns a module keeps (before the energy rule); None for no limit."""
        return self.rank_cap if self.subspace is not None else self.estimation.max_rank

    @property
    def given(self) -> bool:
        return self.subspace is not None or self.base is not None


@dataclass(frozen=True)
class EstimateRequest:
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

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class ModuleSubspace:
    target: Target
    stored_rank: int
    rank: int  # k at the requested energy
    captured_energy: float
    displacement_energy: float
    has_signal: bool
    from_cache: bool

    @property
    def module(self) -> str:
        """The module's name, as `correct` and `inspect` name it (its weight key without `.weight`)."""
        return self.target.base_key.removesuffix(".weight")

    def to_dict(self) -> dict:
        return {
            "module": self.module,
            "base_key": self.target.base_key,
            "transposed": self.target.transposed,
            "subspace": {
                "k": self.rank,
                "stored_rank": self.stored_rank,
                "captured_energy": self.captured_energy,
                "displacement_energy": self.displacement_energy,
            },
            "has_signal": self.has_signal,
            "from_cache": self.from_cache,
        }


@dataclass(frozen=True)
class EstimateResult:
    location: str
    modules: list[ModuleSubspace]
    sources: dict = field(default_factory=dict)  # {"base": ..., "aligned": ...}
    estimation: dict = field(default_factory=dict)
    energy: float = DEFAULT_ENERGY
    pushed: PushRecord | None = None

    def to_dict(self) -> dict:
        return {
            "location": self.location,
            "sources": self.sources,
            "estimation": self.estimation,
            "energy": self.energy,
            "modules": [module.to_dict() for module in self.modules],
        } | ({} if self.pushed is None else {"pushed": self.pushed.to_dict()})


@dataclass(frozen=True)
class CorrectRequest:
    """Adapters to correct and where each goes: `out` is the one adapter's output folder; `out_dir` takes
    any number, each written to `out_dir / <its path below the adapters' common parent>`."""

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

    def __post_init__(self) -> None:
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
        _check_method(self.method, self.correction)


@dataclass(frozen=True)
class InspectRequest:
    adapter: str | Path
    subspace: SubspaceSpec = SubspaceSpec()
    method: str = "csulora"
    correction: CorrectionParams = CorrectionParams()
    # A CI gate: trips (exit 3) when the adapter's total `gate` statistic is above `fail_above` or below
    # `fail_below`. Without `gate`, the off-subspace share (what `--fail-above` has always meant).
    fail_above: float | None = None
    fail_below: float | None = None
    gate: str | None = None
    plot: Path | None = None  # a PNG heatmap of the gate's statistic (or the off-subspace share)
    command_line: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_method(self.method, self.correction)
        if self.gate is not None and self.gate not in STATISTICS:
            raise UsageError(
                f"unknown statistic {self.gate!r}; choose one of {', '.join(STATISTICS)}", parameter="gate"
            )
        if self.fail_above is not None and self.fail_below is not None:
            raise UsageError("give {fail_above} or {fail_below}, not both", parameter="fail_below")
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
        if needs_subspace and not self.subspace.given:
            raise UsageError("needs a subspace: pass {subspace} DIR or {base} BASE", parameter=needs_subspace[0])

    @property
    def statistic(self) -> str:
        return self.gate or "off_share"


@dataclass(frozen=True)
class ModuleSummary:
    """What `inspect` shows without a subspace."""

    module: str
    kind: str
    shape: tuple[int, int]
    rank: int
    alpha: float
    scale: float
    update_energy: float
    top_singular_value: float

    def to_dict(self) -> dict:
        return {
            "module": self.module,
            "kind": self.kind,
            "shape": list(self.shape),
            "rank": self.rank,
            "alpha": self.alpha,
            "scale": self.scale,
            "update_energy": self.update_energy,
            "top_singular_value": self.top_singular_value,
        }


# How a gate's message reads, by (direction, tripped).
_GATE_RELATIONS = {
    ("above", True): "exceeds",
    ("above", False): "does not exceed",
    ("below", True): "is below",
    ("below", False): "is not below",
}


@dataclass(frozen=True)
class GateCheck:
    """A CI gate on one statistic of the adapter's totals: tripped when the value passes the threshold."""

    statistic: str
    direction: str  # "above": trips when value > threshold
    threshold: float
    value: float

    @property
    def tripped(self) -> bool:
        return self.value > self.threshold if self.direction == "above" else self.value < self.threshold

    @property
    def message(self) -> str:
        relation = _GATE_RELATIONS[self.direction, self.tripped]
        return f"{self.statistic} {self.value:.4f} {relation} --fail-{self.direction} {self.threshold}"

    def to_dict(self) -> dict:
        return {
            "statistic": self.statistic,
            "direction": self.direction,
            "threshold": self.threshold,
            "value": self.value,
            "tripped": self.tripped,
        }


@dataclass(frozen=True)
class InspectResult:
    adapter: str = ""
    summaries: list[ModuleSummary] = field(default_factory=list)
    report: AdapterReport | None = None
    gate: GateCheck | None = None

    def adapter_record(self) -> dict:
        """The adapter's entry in `inspect --json`: its report with a subspace, else its modules."""
        if self.report is not None:
            return self.report.to_dict()
        return {"adapter": self.adapter, "modules": [summary.to_dict() for summary in self.summaries]}


@dataclass(frozen=True)
class VerifyResult:
    """One output folder checked against its report: `problem` names the first file that does not match."""

    folder: str
    report_file: str
    files: dict[str, str]  # what the report records: relative path -> sha256
    problem: str | None = None

    def to_dict(self) -> dict:
        return {"folder": self.folder, "files": len(self.files), "ok": self.problem is None, "problem": self.problem}
