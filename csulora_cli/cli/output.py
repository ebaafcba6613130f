"""All console output: results to stdout (rich tables or JSON), progress and warnings to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..errors import spell_parameters
from ..events import Advance
from ..report.envelope import envelope

if TYPE_CHECKING:  # printing needs only the values of these
    from ..pipeline.types.probe import AdapterProbe, ProbeResult
    from ..pipeline.types.results import EstimateResult, InspectResult, PushedOutput, VerifyResult
    from ..report.records import AdapterReport, PushRecord


class _CountColumn(ProgressColumn):
    """'3/7' for counted tasks, '1.2/4.0 GB' for downloads: one display for both kinds."""

    def __init__(self):
        super().__init__()
        self._count = MofNCompleteColumn()
        self._bytes = DownloadColumn()

    def render(self, task):
        return (self._bytes if task.fields.get("in_bytes") else self._count).render(task)


class Output:
    """Human, JSON or quiet output; implements the API's `Events` for progress and warnings.

    Quiet means errors only: no tables, no warnings, no progress (a JSON document asked for with `--json`
    is still printed, alone on stdout, as it always is).
    """

    def __init__(
        self, json_mode: bool = False, quiet: bool = False, flag_of: Callable[[str], str | None] | None = None
    ):
        self.json_mode = json_mode
        self.quiet = quiet
        # Piped output (CI logs, `| less`) gets a wide table rather than rich's 80-column default.
        piped_width = None if sys.stdout.isatty() else 150
        self.stdout = Console(file=sys.stdout, width=piped_width)
        self.stderr = Console(file=sys.stderr, soft_wrap=True)
        self._progress: Progress | None = None
        # Library warnings name parameters as `{name}`; `flag_of` (the app's) spells them as its flags.
        self._flag_of = flag_of

    @contextmanager
    def progress(self) -> Iterator[None]:
        """Progress bars live while the command runs, only on a terminal and never with --quiet."""
        if self.quiet or not self.stderr.is_terminal:
            yield
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            _CountColumn(),
            TimeElapsedColumn(),
            console=self.stderr,
            transient=True,
        )
        with self._progress:
            yield
        self._progress = None

    # Events
    def warn(self, message: str) -> None:
        if not self.quiet:
            if self._flag_of is not None:
                message = spell_parameters(message, self._flag_of)
            self.stderr.print(f"csulora: warning: {message}", highlight=False, markup=False)

    def start(self, description: str, total: int | None, *, in_bytes: bool = False) -> Advance:
        if self._progress is None:
            return lambda steps=1: None
        task = self._progress.add_task(description, total=total, in_bytes=in_bytes)
        return lambda steps=1: self._progress.advance(task, steps)

    # Results: with --json one document per command (`envelope`), whatever the number of adapters; the
    # tables' columns carry the names of the JSON fields whose values they show.
    def emit_json(self, payload: object) -> None:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")

    def estimate(self, result: EstimateResult) -> None:
        if self.json_mode:
            self.emit_json(envelope("estimate-subspace", subspace=result.to_dict()))
            return
        columns = ("module", "k", "stored_rank", "captured_energy", "displacement_energy", "from_cache")
        table = _table(f"subspace: {result.location}", columns)
        for m in result.modules:
            name = m.module + (" (T)" if m.target.transposed else "")
            table.add_row(
                name,
                str(m.rank),
                str(m.stored_rank),
                f"{m.captured_energy:.3f}",
                f"{m.displacement_energy:.3g}" if m.has_signal else "no signal",
                "yes" if m.from_cache else "no",
            )
        self._result(table)
        self.pushed(result.location, result.pushed)

    def reports(self, reports: list[AdapterReport], dry_run: bool) -> None:
        if self.json_mode:
            adapters = [report.document_entry() for report in reports]
            self.emit_json(envelope("correct", dry_run=dry_run, adapters=adapters))
            return
        for report in reports:
            self.report_table(report, dry_run)
            self.pushed(report.output, report.pushed)

    def pushed_output(self, result: PushedOutput) -> None:
        if self.json_mode:
            self.emit_json(envelope("push", output=result.to_dict()))
            return
        self.pushed(result.folder, result.pushed)

    def pushed(self, folder: str | None, record: PushRecord | None) -> None:
        if record is not None and record.unchanged:
            line = (
                f"nothing to push: {record.repo_id}@{record.revision} already holds exactly {folder} "
                f"(commit {record.commit[:12]}) {record.url}"
            )
            self._result(line, highlight=False, markup=False, soft_wrap=True)
        elif record is not None:
            line = f"pushed: {folder} -> {record.repo_id}@{record.revision} (commit {record.commit[:12]}) {record.url}"
            self._result(line, highlight=False, markup=False, soft_wrap=True)

    def report_table(self, report: AdapterReport, dry_run: bool = False, inspecting: bool = False) -> None:
        where = f"-> {report.output}" if report.output is not None else "dry run, nothing written"
        if inspecting:
            where = "what correct would remove (nothing written)"
        columns = (
            "module",
            "k",
            "aligned",
            "partial",
            "off",
            "off_subspace_energy",
            "attenuation_energy",
            "cosine",
            "status",
        )
        table = _table(f"{report.adapter} [{report.method['name']}] {where}", columns, left=("module", "status"))
        for module in report.modules:
            row = module.to_dict()
            directions = row["directions"]
            table.add_row(
                module.module,
                str(row["subspace"]["k"]),
                str(directions["aligned"]),
                str(directions["partial"]),
                str(directions["off"]),
                f"{row['off_subspace_energy']:.3f}",
                f"{row['attenuation_energy']:.3f}",
                f"{row['cosine']:.3f}",
                module.status if module.similarity is None else f"{module.status} (similarity {module.similarity:.3f})",
            )
        totals = report.totals.to_dict()
        table.add_section()
        table.add_row(
            "total",
            "",
            str(totals["directions"]["aligned"]),
            str(totals["directions"]["partial"]),
            str(totals["directions"]["off"]),
            f"{totals['off_subspace_energy']:.3f}",
            f"{totals['attenuation_energy']:.3f}",
            f"{totals['cosine']:.3f}",
            "",
        )
        self._result(table)

    def inspect(self, results: list[InspectResult]) -> None:
        """Each adapter's table (or its record with --json), and each gate that passed; `gate` in the JSON
        is the verdict over all of them (`worst_gate`), `gates` each adapter's check."""
        from ..pipeline.types.results import worst_gate

        gates = [result.gate for result in results if result.gate is not None]
        if self.json_mode:
            verdict = worst_gate(gates)
            self.emit_json(
                envelope(
                    "inspect",
                    adapters=[result.adapter_record() for result in results],
                    gate=None if verdict is None else verdict.to_dict(),
                    gates=[gate.to_dict() for gate in gates],
                )
            )
            return
        for result in results:
            if result.report is not None:
                self.report_table(result.report, dry_run=True, inspecting=True)
            else:
                self.summary_table(result)
        for gate in gates:
            if not gate.tripped:
                named = f"{gate.adapter}: " if len(results) > 1 else ""
                self._result(f"gate passed: {named}{gate_line(gate)}", highlight=False, markup=False)

    def probe(self, result: ProbeResult) -> None:
        if self.json_mode:
            self.emit_json(envelope("probe", **result.to_dict()))
            return
        confidence = f"{result.confidence:.0%}"
        columns = ["adapter", "unrefused_share", "mean_margin", "shift", f"shift {confidence} interval"]
        benign = result.benign_prompts is not None
        generating = result.bare.harmful.keyword_unrefused_share is not None
        columns += ["benign refused_share"] if benign else []
        columns += ["keyword_unrefused_share"] if generating else []
        columns += ["gate"]
        compliance = "the model's own openings" if result.compliance == "own" else repr(result.compliance)
        title = (
            f"probe of {result.model['name'] or result.model['path']}: {result.prompts.to_dict()['prompts']} prompts, "
            f"refusal against {compliance}"
        )
        table = _table(title, tuple(columns), left=("adapter", "gate"))
        for probe in (result.bare, *result.adapters):
            table.add_row(*_probe_row(probe, benign, generating))
        self._result(table)
        if result.adapters and any(adapter.gates for adapter in result.adapters) and not result.tripped:
            self._result(f"gate passed: {len(result.adapters)} adapter(s)", highlight=False, markup=False)

    def summary_table(self, result: InspectResult) -> None:
        table = _table(
            f"{result.adapter}: adapter modules",
            ("module", "kind", "shape", "rank", "alpha", "scale", "update_energy", "top_singular_value"),
            left=("module", "kind"),
        )
        for s in result.summaries:
            table.add_row(
                s.module,
                s.kind,
                f"{s.shape[0]}x{s.shape[1]}",
                str(s.rank),
                f"{s.alpha:g}",
                f"{s.scale:.4g}",
                f"{s.update_energy:.4g}",
                f"{s.top_singular_value:.4g}",
            )
        self._result(table)

    def verify(self, results: list[VerifyResult]) -> None:
        if self.json_mode:
            self.emit_json(envelope("verify", outputs=[result.to_dict() for result in results]))
            return
        for result in results:
            if result.problem is None:
                self._result(
                    f"verified: {result.folder} ({len(result.files)} files match {result.report_file})",
                    highlight=False,
                    markup=False,
                )

    def _result(self, *renderables, **options) -> None:
        if not self.quiet:
            self.stdout.print(*renderables, **options)

    def error(self, line: str) -> None:
        self.stderr.print(line, highlight=False, markup=False)


def _table(title: str, columns: tuple[str, ...], left: tuple[str, ...] = ("module",)) -> Table:
    """A results table: numbers right-aligned, long module names folded rather than cut."""
    table = Table(title=title)
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in left else "right",
            overflow="fold" if column == "module" else "ellipsis",
        )
    return table


def gate_line(gate) -> str:
    """A gate's verdict as the user typed it: `off_share 0.4100 exceeds --fail-above 0.3`."""
    return f"{gate.statistic} {gate.value:.4f} {gate.relation} --fail-{gate.direction} {gate.threshold}"


# The flag of each probe gate's statistic, for the verdict line.
_PROBE_GATE_FLAGS = {
    "unrefused_share": "--fail-above",
    "shift": "--fail-if-shift-above",
    "over_refusal": "--fail-over-refusal-above",
}


def probe_gate_line(result: ProbeResult) -> str:
    """The first tripped adapter's verdict as the user typed it, and how many adapters tripped:
    `adapter: unrefused_share 0.8000 exceeds --fail-above 0.5 (2 of 3 adapters tripped a gate)`."""
    tripped = [adapter for adapter in result.adapters if adapter.tripped]
    first = tripped[0]
    gate = next(gate for gate in first.gates if gate.tripped)
    line = f"{first.adapter}: {gate.statistic} {gate.value:.4f} {gate.relation} {_PROBE_GATE_FLAGS[gate.statistic]} "
    line += f"{gate.threshold}"
    if len(tripped) > 1:
        line += f" ({len(tripped)} of {len(result.adapters)} adapters tripped a gate)"
    return line


def _probe_row(probe: AdapterProbe, benign: bool, generating: bool) -> list[str]:
    harmful = probe.harmful.summary
    shift = "" if harmful.shift is None else f"{harmful.shift:+.3f}"
    interval = harmful.shift_interval
    span = "" if interval is None else f"[{interval.low:+.3f}, {interval.high:+.3f}]"
    row = [
        probe.adapter or "(no adapter)",
        f"{harmful.unrefused_share:.3f}",
        f"{harmful.mean_margin:+.3f}",
        shift,
        span,
    ]
    if benign:
        row.append("" if probe.benign is None else f"{probe.benign.summary.refused_share:.3f}")
    if generating:
        share = probe.harmful.keyword_unrefused_share
        row.append("" if share is None else f"{share:.3f}")
    verdicts = [f"{gate.statistic} {gate.relation} {gate.threshold}" for gate in probe.gates]
    row.append(("TRIPPED: " if probe.tripped else "") + "; ".join(verdicts))
    return row
