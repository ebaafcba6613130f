"""Detection statistics as plain numbers (docs/method.md section 9): the sums one module's update and basis
give (`DetectionEnergies`), which add across modules, and the ratios a gate reads from them (`STATISTICS`).

No torch here: the sums are computed from factors in `detection.py`; reports, requests and the heatmap
read them without the numerical core.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class DetectionEnergies:
    """Sums of squares and inner products of one module (or, summed, of an adapter) that the statistics divide.

    update_energy: ||dW||^2.  inside_energy: ||P dW||^2 (two-sided ||P_out dW P_in||^2).
    chance_inside_energy: its expectation for a random update with dW's singular values, (k/m) ||dW||^2
    (two-sided (k/m)(k/n) ||dW||^2).  weighted_inside_energy: sum_j S_j^2 ||u_j^T dW||^2 / sum_j S_j^2
    (two-sided: u_j^T dW P_in), and chance_weighted_energy its expectation, ||dW||^2 / m (times k/n).
    displacement_energy: ||V||^2, exact.  captured_displacement_energy: sum_j S_j^2 over the triplets used.
    displacement_inner: <dW, V_K> = sum_j S_j c_j with c_j = u_j^T dW w_j.  reversing_energy:
    sum_j min(c_j, 0)^2.  The last two are None when the basis holds no right singular vectors.
    """

    update_energy: float
    inside_energy: float
    chance_inside_energy: float
    weighted_inside_energy: float
    chance_weighted_energy: float
    displacement_energy: float
    captured_displacement_energy: float
    displacement_inner: float | None
    reversing_energy: float | None

    def __add__(self, other: DetectionEnergies) -> DetectionEnergies:
        def added(left: float | None, right: float | None) -> float | None:
            return None if left is None or right is None else left + right

        return DetectionEnergies(
            **{f.name: added(getattr(self, f.name), getattr(other, f.name)) for f in fields(DetectionEnergies)}
        )


NO_ENERGIES = DetectionEnergies(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def total_energies(energies: Iterable[DetectionEnergies]) -> DetectionEnergies:
    """The adapter as one concatenated vector (and V as one): every sum added over modules."""
    total = NO_ENERGIES
    for module in energies:
        total = total + module
    return total


# ---------------------------------------------------------------------------------------------------
# The statistics a gate can read, each a ratio of the sums above (docs/method.md section 9).


def _ratio(part: float, whole: float) -> float:
    return 0.0 if whole <= 0.0 else part / whole


def off_share(energies: DetectionEnergies) -> float:
    """1 - ||P dW||^2 / ||dW||^2: the report's off_subspace_energy (0 for a zero update)."""
    if energies.update_energy <= 0.0:
        return 0.0
    return max(0.0, 1.0 - energies.inside_energy / energies.update_energy)


def enrichment(energies: DetectionEnergies) -> float:
    """The in-subspace share over the share a random update would have: 1 is chance, 0 without a subspace."""
    return _ratio(energies.inside_energy, energies.chance_inside_energy)


def weighted_enrichment(energies: DetectionEnergies) -> float:
    """As `enrichment`, each subspace direction weighted by the energy alignment wrote along it (S_j^2)."""
    return _ratio(energies.weighted_inside_energy, energies.chance_weighted_energy)


def reversal(energies: DetectionEnergies) -> float | None:
    """<dW, V> / (||dW|| ||V||): negative when the update moves the weights back toward the base model."""
    if energies.displacement_inner is None:
        return None
    norms = math.sqrt(energies.update_energy) * math.sqrt(energies.displacement_energy)
    return 0.0 if norms <= 0.0 else max(-1.0, min(1.0, energies.displacement_inner / norms))


def reversing_share(energies: DetectionEnergies) -> float | None:
    """Share of ||dW||^2 that undoes alignment along V's own rank-one directions u_j w_j^T (c_j < 0)."""
    if energies.reversing_energy is None:
        return None
    return _ratio(energies.reversing_energy, energies.update_energy)


@dataclass(frozen=True)
class Statistic:
    """One gate statistic: `suspicious` is "high" when large values flag an adapter, "low" when small ones do."""

    name: str
    suspicious: str
    summary: str
    value: Callable[[DetectionEnergies], float | None]
    needs_right_vectors: bool = False


STATISTICS: dict[str, Statistic] = {
    statistic.name: statistic
    for statistic in (
        Statistic("off_share", "high", "share of the update's energy outside the safety subspace", off_share),
        Statistic("enrichment", "high", "in-subspace share over a random update's (1 = chance)", enrichment),
        Statistic(
            "weighted_enrichment",
            "high",
            "enrichment with each subspace direction weighted by its share of ||V||^2",
            weighted_enrichment,
        ),
        Statistic(
            "reversal",
            "low",
            "cosine of the update with V = W_aligned - W_base (negative: back toward base)",
            reversal,
            needs_right_vectors=True,
        ),
        Statistic(
            "reversing_share",
            "high",
            "share of the update's energy undoing V along V's own directions",
            reversing_share,
            needs_right_vectors=True,
        ),
    )
}


@dataclass(frozen=True)
class ModuleDetection:
    """One module's sums; `score(name)` reads a statistic from them."""

    module: str
    energies: DetectionEnergies

    def score(self, name: str) -> float | None:
        return STATISTICS[name].value(self.energies)


@dataclass(frozen=True)
class AdapterDetection:
    """Every module's sums, in adapter order; the totals treat the adapter (and V) as one vector."""

    modules: tuple[ModuleDetection, ...]

    @property
    def totals(self) -> DetectionEnergies:
        return total_energies(module.energies for module in self.modules)

    def score(self, name: str) -> float | None:
        return STATISTICS[name].value(self.totals)
