"""What flows into and out of the API: frozen requests and results (the events sink is in `events.py`).

Plain data; the functions that take these live in `api.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .bases import Target
from .correction import CorrectionParams
from .hub_client import HubOptions
from .report import AdapterReport
from .subspace import EstimationParams


@dataclass(frozen=True)
class SubspaceSpec:
    """Where bases come from: a subspace folder, or a base/aligned pair estimated through the cache."""

    subspace: Path | None = None
    base: str | None = None
    aligned: str | None = None
    estimation: EstimationParams = EstimationParams()
    energy: float = 0.99
    cache_dir: Path | None = None
    device: str = "auto"
    hub: HubOptions = HubOptions()

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
    energy: float = 0.99
    cache_dir: Path | None = None
    device: str = "auto"
    hub: HubOptions = HubOptions()
    out: Path | None = None
    overwrite: bool = False


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


@dataclass(frozen=True)
class InspectRequest:
    adapter: Path
    subspace: SubspaceSpec = SubspaceSpec()
    method: str = "csulora"
    correction: CorrectionParams = CorrectionParams()
    fail_above: float | None = None


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
