"""What flows into and out of the pipeline: frozen requests and results, each value checked when made.

Plain data: the functions that take these are `estimate.py`, `correct.py` and `inspect.py`. A request
that cannot be run (an unknown method, an energy outside (0, 1], two sources of bases) is refused as it
is built, naming the parameter, before any file is opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoints.hub.options import HubOptions
from ..correction.methods import METHODS, get_method
from ..correction.params import CorrectionParams
from ..errors import UsageError
from ..report.records import AdapterReport
from ..subspace.estimate import DEFAULT_ENERGY, EstimationParams, check_energy
from ..subspace.keys import Target, parse_layers

DEVICES = ("auto", "cpu", "cuda")


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose cpu, cuda or auto", parameter="device")


def _check_method(method: str, correction: CorrectionParams) -> None:
    chosen = get_method(method)
    if correction.two_sided and not chosen.supports_two_sided:
        two_sided = ", ".join(name for name, known in METHODS.items() if known.supports_two_sided)
        raise UsageError(
            f"{{method}} {chosen.name} has no two-sided form (it has for {two_sided})", parameter="two_sided"
        )


@dataclass(frozen=True)
class SubspaceSpec:
    """Where bases come from: a subspace folder, or a base/aligned pair estimated through the cache."""

    subspace: Path | None = None
    base: str | None = None
    aligned: str | None = None
    estimation: EstimationParams = EstimationParams()
    energy: float = DEFAULT_ENERGY
    cache_dir: Path | None = None
    device: str = "auto"
    hub: HubOptions = HubOptions()

    def __post_init__(self) -> None:
        self.estimation.check()
        check_energy(self.energy)
        _check_device(self.device)
        if self.subspace is not None and (self.base is not None or self.aligned is not None):
            raise UsageError("give either {subspace} or {base}/{aligned}, not both", parameter="subspace")

    @property
    def given(self) -> bool:
        return self.subspace is not None or self.base is not None


@dataclass(frozen=True)
class EstimateRequest:
    base: str
    aligned: str
    modules: str | None = None  # regex over base keys
    adapter: Path | None = None
    layers: str | None = None  # "0-15", "3", "0-3,8-11": split one model across jobs
    estimation: EstimationParams = EstimationParams()
    energy: float = DEFAULT_ENERGY
    cache_dir: Path | None = None
    device: str = "auto"
    hub: HubOptions = HubOptions()
    out: Path | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.estimation.check()
        check_energy(self.energy)
        _check_device(self.device)
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


@dataclass(frozen=True)
class EstimateResult:
    location: str
    modules: list[ModuleSubspace]


@dataclass(frozen=True)
class CorrectRequest:
    adapters: tuple[Path, ...]
    out: Path | None
    subspace: SubspaceSpec
    method: str = "csulora"
    correction: CorrectionParams = CorrectionParams()
    dry_run: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.adapters:
            raise UsageError("give at least one adapter folder", parameter="adapters")
        if self.out is None and not self.dry_run:
            raise UsageError("an output folder is needed (or {dry_run})", parameter="out")
        _check_method(self.method, self.correction)


@dataclass(frozen=True)
class InspectRequest:
    adapter: Path
    subspace: SubspaceSpec = SubspaceSpec()
    method: str = "csulora"
    correction: CorrectionParams = CorrectionParams()
    fail_above: float | None = None

    def __post_init__(self) -> None:
        _check_method(self.method, self.correction)
        if self.fail_above is not None:
            if not 0.0 <= self.fail_above <= 1.0:
                raise UsageError(f"must be in [0, 1], got {self.fail_above}", parameter="fail_above")
            if not self.subspace.given:
                raise UsageError("needs a subspace: pass {subspace} DIR or {base} BASE", parameter="fail_above")


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


@dataclass(frozen=True)
class InspectResult:
    summaries: list[ModuleSummary] = field(default_factory=list)
    report: AdapterReport | None = None
