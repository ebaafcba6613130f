"""What a command returns: frozen results, each with the `to_dict` its JSON output is made of.

Plain data, like the requests (`requests.py`); the report of a corrected adapter is `report/records.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...report.records import AdapterReport, PushRecord
from ...subspace.keys import Target
from ...subspace.params import DEFAULT_ENERGY


@dataclass(frozen=True)
class ModuleSubspace:
    target: Target
    stored_rank: int
    rank: int  # k at the requested energy
    captured_energy: float
    displacement_energy: float
    has_signal: bool
    from_cache: bool

    @classmethod
    def of_basis(cls, target: Target, basis, energy: float, from_cache: bool) -> ModuleSubspace:
        """What a run reports of one stored basis (a `SubspaceBasis`) at the requested energy."""
        selected = basis.select(energy)
        return cls(
            target=target,
            stored_rank=basis.basis.shape[1],
            rank=selected.rank,
            captured_energy=selected.captured_energy,
            displacement_energy=basis.total_energy,
            has_signal=basis.has_signal,
            from_cache=from_cache,
        )

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


# How a gate's value stands to its threshold, by (direction, tripped).
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
    adapter: str | None = None  # the adapter it checked, as its report names it

    @property
    def tripped(self) -> bool:
        return self.value > self.threshold if self.direction == "above" else self.value < self.threshold

    @property
    def relation(self) -> str:
        """How the value stands to the threshold, in words ("exceeds", "is not below", ...)."""
        return _GATE_RELATIONS[self.direction, self.tripped]

    def to_dict(self) -> dict:
        return {
            "statistic": self.statistic,
            "direction": self.direction,
            "threshold": self.threshold,
            "value": self.value,
            "tripped": self.tripped,
        } | ({} if self.adapter is None else {"adapter": self.adapter})


def worst_gate(gates: list[GateCheck]) -> GateCheck | None:
    """The verdict of one gate over several adapters: the check whose value lies furthest past (or nearest
    to) the threshold, so it trips exactly when any adapter's check does; None without a gate."""
    if not gates:
        return None
    if gates[0].direction == "above":
        return max(gates, key=lambda gate: gate.value)
    return min(gates, key=lambda gate: gate.value)


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


@dataclass(frozen=True)
class PushedOutput:
    """A finished output pushed again (`push`): the folder, what it holds, and where it went."""

    folder: str
    kind: str  # "adapter" (a corrected adapter folder) or "subspace" (a subspace folder)
    pushed: PushRecord

    def to_dict(self) -> dict:
        return {"folder": self.folder, "kind": self.kind, "pushed": self.pushed.to_dict()}
