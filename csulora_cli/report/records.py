"""The correction report (docs/method.md section 6): typed per-module records, totals and their JSON form.

Figures arrive already computed (`correction.figures.CorrectionFigures`); this module only arranges them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..correction.figures import CorrectionFigures
from ..correction.statistics import STATISTICS, DetectionEnergies, total_energies
from .envelope import SCHEMA_VERSION, tool_record

REPORT_FILE = "csulora_report.json"


@dataclass(frozen=True)
class ModuleReport:
    module: str
    base_key: str
    kind: str
    shape: tuple[int, int]  # (m, n), output-space form
    rank: int
    alpha: float
    scale: float
    status: str  # "corrected", "unchanged" (method none / nothing to remove), "no_signal" or "added" (readd)
    subspace_rank: int
    captured_energy: float
    displacement_energy: float
    figures: CorrectionFigures
    note: str = ""
    # Methods that select modules (safelora): whether this one was rewritten, and the score that decided.
    selected: bool | None = None
    similarity: float | None = None
    # The sums the detection statistics divide (docs/method.md section 9); None where they cannot be had.
    detection: DetectionEnergies | None = None
    # The corrected module's rank where the method changed it (readd, merge-safety); None: `rank`.
    output_rank: int | None = None

    def to_dict(self) -> dict:
        figures = self.figures
        record = {
            "module": self.module,
            "base_key": self.base_key,
            "kind": self.kind,
            "shape": list(self.shape),
            "rank": self.rank,
            "alpha": self.alpha,
            "scale": self.scale,
            "status": self.status,
            "note": self.note,
            "subspace": {
                "k": self.subspace_rank,
                "captured_energy": self.captured_energy,
                "displacement_energy": self.displacement_energy,
            },
            "update_energy": figures.update_energy,
            "corrected_energy": figures.corrected_energy,
            "removed_energy": figures.removed_energy,
            "attenuation_energy": figures.attenuation_fraction,
            "aligned_energy": figures.aligned_fraction,
            "off_subspace_energy": figures.off_subspace_fraction,
            "cosine": figures.cosine,
            "directions": {
                "aligned": figures.directions.aligned,
                "partial": figures.directions.partial,
                "off": figures.directions.off,
            },
        }
        record["detection"] = detection_scores(self.detection)
        if self.selected is not None:
            record["selected"] = self.selected
            record["similarity"] = self.similarity
        if self.output_rank is not None:
            record["output_rank"] = self.output_rank
        return record


@dataclass(frozen=True)
class Totals:
    update_energy: float
    corrected_energy: float
    removed_energy: float
    aligned_energy: float
    cosine: float
    directions: dict[str, int]
    detection: DetectionEnergies | None = None

    @property
    def attenuation_fraction(self) -> float:
        return 0.0 if self.update_energy == 0 else self.removed_energy / self.update_energy

    @property
    def off_subspace_fraction(self) -> float:
        return 0.0 if self.update_energy == 0 else max(0.0, 1.0 - self.aligned_energy / self.update_energy)

    def to_dict(self) -> dict:
        return {
            "update_energy": self.update_energy,
            "corrected_energy": self.corrected_energy,
            "removed_energy": self.removed_energy,
            "attenuation_energy": self.attenuation_fraction,
            "aligned_energy": 0.0 if self.update_energy == 0 else self.aligned_energy / self.update_energy,
            "off_subspace_energy": self.off_subspace_fraction,
            "cosine": self.cosine,
            "directions": self.directions,
            "detection": detection_scores(self.detection),
        }


def detection_scores(energies: DetectionEnergies | None) -> dict[str, float | None] | None:
    """Every detection statistic's value (None where it needs right vectors the basis lacks)."""
    if energies is None:
        return None
    return {name: statistic.value(energies) for name, statistic in STATISTICS.items()}


def totals_of(modules: list[ModuleReport]) -> Totals:
    """Totals over the whole adapter, as if its updates were one concatenated vector."""
    update = sum(m.figures.update_energy for m in modules)
    corrected = sum(m.figures.corrected_energy for m in modules)
    inner = sum(
        m.figures.cosine * math.sqrt(m.figures.update_energy) * math.sqrt(m.figures.corrected_energy) for m in modules
    )
    norms = math.sqrt(update) * math.sqrt(corrected)
    cosine = inner / norms if norms > 0 else (1.0 if update == corrected else 0.0)
    return Totals(
        update_energy=update,
        corrected_energy=corrected,
        removed_energy=sum(m.figures.removed_energy for m in modules),
        aligned_energy=sum(m.figures.aligned_energy for m in modules),
        cosine=max(-1.0, min(1.0, cosine)),
        directions={
            "aligned": sum(m.figures.directions.aligned for m in modules),
            "partial": sum(m.figures.directions.partial for m in modules),
            "off": sum(m.figures.directions.off for m in modules),
        },
        # The adapter as one vector (and V as one); only when every module has its sums.
        # Modules readd added have no update of the adapter's to measure: they are left out of the sums.
        detection=(
            total_energies(m.detection for m in modules if m.status != "added")
            if all(m.detection is not None for m in modules if m.status != "added")
            else None
        ),
    )


@dataclass(frozen=True)
class Provenance:
    """What a deploy gate checks: which bytes went in, which came out, when and by which command.

    Digests are sha256 of whole files, keyed by path relative to their folder. `outputs` lists every file
    written except the report itself (`csulora verify` re-hashes them); None for a dry run. `left_out`
    names what the adapter's folder holds besides the adapter (training state, other weights, subfolders,
    folders ending in "/"): neither read nor copied.
    """

    created: str  # UTC, ISO 8601
    command_line: list[str] | None
    adapter_files: dict[str, str]
    outputs: dict[str, str] | None = None
    left_out: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "created": self.created,
            "command_line": self.command_line,
            "adapter_files": self.adapter_files,
            "left_out": self.left_out,
            "output_files": self.outputs,
        }


@dataclass(frozen=True)
class PushRecord:
    """Where a finished output was pushed (`--push-to-hub`): the repo, the branch, and the commit holding it.

    Only in the `--json` documents: an output's own report is pushed with it, so it cannot name the commit.
    """

    repo_id: str
    revision: str  # the branch pushed to
    commit: str
    url: str  # the commit's page on the Hub
    # The branch held exactly this output already: no commit was made (`commit` is the branch's head).
    unchanged: bool = False

    def to_dict(self) -> dict:
        record = {"repo_id": self.repo_id, "revision": self.revision, "commit": self.commit, "url": self.url}
        return record | ({"unchanged": True} if self.unchanged else {})


@dataclass(frozen=True)
class AdapterReport:
    adapter: str
    output: str | None
    method: dict  # {"name", "params", "reference"}
    subspace: dict  # sources, estimation parameters, and each basis used with its digest
    modules: list[ModuleReport] = field(default_factory=list)
    # Tensors that are not LoRA factors (modules_to_save, PEFT's saved embedding layers): full weights
    # that replace the model's own on load, copied unchanged and never corrected.
    passthrough: list[str] = field(default_factory=list)
    provenance: Provenance | None = None
    # {"kind": "local", "path"} or {"kind": "hub", "repo", "revision", "commit", "endpoint"}
    adapter_source: dict | None = None
    pushed: PushRecord | None = None  # not part of the report file (`document_entry`)

    @property
    def totals(self) -> Totals:
        return totals_of(self.modules)

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": tool_record(),
            "adapter": self.adapter,
            "adapter_source": self.adapter_source,
            "output": self.output,
            "method": self.method,
            "subspace": self.subspace,
            "provenance": None if self.provenance is None else self.provenance.to_dict(),
            "totals": self.totals.to_dict(),
            "modules": [module.to_dict() for module in self.modules],
            "passthrough_tensors": self.passthrough,
        }

    def document_entry(self) -> dict:
        """The adapter's entry in `correct --json`: its report (`csulora_report.json`), and after a push
        where it went. The file cannot hold the push: it is pushed with the folder, its digests stay valid."""
        return self.to_dict() | ({} if self.pushed is None else {"pushed": self.pushed.to_dict()})
