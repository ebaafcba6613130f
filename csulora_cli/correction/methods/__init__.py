"""Registry of correction methods; the CLI offers exactly what is listed here."""

from __future__ import annotations

from ...errors import UsageError
from .base import CorrectionMethod
from .csulora import ClosestSafeUpdate
from .csulora_inside import InsideAttenuation
from .csulora_signed import SignAwarePenalty
from .none import NoCorrection
from .project import HardProjection
from .safelora import SafeLora

__all__ = ["METHODS", "CorrectionMethod", "get_method"]

METHODS: dict[str, CorrectionMethod] = {
    method.name: method
    for method in (
        ClosestSafeUpdate(),
        HardProjection(),
        SafeLora(),
        InsideAttenuation(),
        SignAwarePenalty(),
        NoCorrection(),
    )
}


def get_method(name: str) -> CorrectionMethod:
    try:
        return METHODS[name]
    except KeyError:
        choices = ", ".join(sorted(METHODS))
        raise UsageError(f"unknown method {name!r}; choose one of {choices}", parameter="method") from None
