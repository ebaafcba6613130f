"""What a correction did to one module, as plain numbers (docs/method.md section 6): the figures a report
arranges. `measures.py` computes them from the factors."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DirectionCounts:
    aligned: int
    partial: int
    off: int


@dataclass(frozen=True)
class CorrectionFigures:
    """docs/method.md section 6, for one module; energies are absolute, fractions relative to ||dW||^2."""

    update_energy: float
    corrected_energy: float
    removed_energy: float
    aligned_energy: float
    cosine: float
    directions: DirectionCounts

    @property
    def attenuation_fraction(self) -> float:
        return _fraction(self.removed_energy, self.update_energy)

    @property
    def aligned_fraction(self) -> float:
        return _fraction(self.aligned_energy, self.update_energy)

    @property
    def off_subspace_fraction(self) -> float:
        return 0.0 if self.update_energy == 0.0 else max(0.0, 1.0 - self.aligned_fraction)


def _fraction(part: float, whole: float) -> float:
    return 0.0 if whole == 0.0 else part / whole
