"""Which adapters of a `correct` run are still in it: a check that fails for one adapter either stops the
run, naming the adapters that are therefore not written, or (`keep_going`) drops that adapter alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ...errors import BatchFailures, CsuloraError, first_few

T = TypeVar("T")
# How many adapters an error line names before it counts the rest.
_NAMED = 6


class Batch:
    """The adapters of one run by index, and the failures of those that dropped out (`keep_going`)."""

    def __init__(self, labels: list[str], keep_going: bool):
        self.labels = labels
        self.keep_going = keep_going
        self.failures: dict[int, CsuloraError] = {}

    def live(self) -> list[int]:
        """The indices of the adapters no check has refused yet."""
        return [index for index in range(len(self.labels)) if index not in self.failures]

    def attempt(self, index: int, step: Callable[[], T]) -> T | None:
        """`step()` for adapter `index`; a `CsuloraError` drops the adapter (`keep_going`, None returned) or
        stops the run, the error then saying which adapters are not written."""
        try:
            return step()
        except CsuloraError as error:
            if not self.keep_going:
                raise self._stopped(error) from None
            self.failures[index] = error
            return None

    def finish(self, reports: list) -> list:
        """The reports of the adapters written; with failures, `BatchFailures` carrying both."""
        if self.failures:
            failures = [(self.labels[index], error) for index, error in sorted(self.failures.items())]
            raise BatchFailures(reports, failures)
        return reports

    def _stopped(self, error: CsuloraError) -> CsuloraError:
        if len(self.labels) < 2:
            return error
        names = first_few(self.labels, _NAMED)
        note = f"none of the {len(self.labels)} adapters was written: {names}; {{keep_going}} corrects the others"
        error.hint = note if not error.hint else f"{error.hint}; {note}"
        return error
