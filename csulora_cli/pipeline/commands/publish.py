"""`--push-to-hub`: finished outputs (corrected adapters, a subspace folder) to Hub repos, one commit each.

The repos are worked out and checked before any work (`plan_*`), and pushed to only once the outputs
are complete on disk (`push_*`). A failed push keeps the local output and says so. What a push made is
recorded in the `--json` documents, never in the pushed folder: its report's digests cover it as written.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ...atomic import write_atomically
from ...checkpoints.hub.client import HubClient
from ...checkpoints.hub.upload import PushTarget, push_target
from ...errors import CsuloraError, UsageError
from ...events import Events, SilentEvents
from ...report.records import REPORT_FILE, AdapterReport, PushRecord
from ...report.subspace_card import CARD_FILE, render_subspace_card
from ...subspace.folder import SUBSPACE_MANIFEST, SubspaceFolder
from ...subspace.params import DEFAULT_ENERGY
from ...subspace.store import read_basis_file
from ..plumbing.basis_source import hub_client
from ..types.requests import CorrectRequest, EstimateRequest, PushRequest, PushSpec
from ..types.results import EstimateResult, PushedOutput
from .verify import verify_outputs

# Hub repo ids are unique regardless of case: `org/A` and `org/a` are one repo.
_SAME_REPO = str.lower


def plan_correct_pushes(
    request: CorrectRequest, destinations: list[Path], labels: list[str] | None = None
) -> list[PushTarget] | None:
    """The repo of each adapter's output, in order; two adapters bound for one repo are refused, naming both
    (`labels`: the adapters' names, default the request's)."""
    if request.push is None:
        return None
    targets = [_target(request.push, output_name(destination, request.out_dir)) for destination in destinations]
    labels = [str(adapter) for adapter in request.adapters] if labels is None else labels
    first_for: dict[str, int] = {}
    for index, target in enumerate(targets):
        earlier = first_for.setdefault(_SAME_REPO(target.repo_id), index)
        if earlier != index:
            raise UsageError(
                f"adapters {labels[earlier]} and {labels[index]} would both be pushed to "
                f"{target.repo_id}; each needs a repo of its own",
                parameter="push_to_hub",
            )
    return targets


def output_name(destination: Path, out_dir: Path | None) -> str:
    """What `{name}` stands for: the output's path below `--out-dir` joined by dashes (`a/adapter` ->
    `a-adapter`, so `runs/*/adapter` layouts get a repo each), or the `--out` folder's name."""
    if out_dir is None:
        return destination.resolve().name
    return "-".join(destination.relative_to(out_dir).parts)


def plan_subspace_push(request: EstimateRequest) -> PushTarget | None:
    return None if request.push is None else _target(request.push, request.out.resolve().name)


def _target(spec: PushSpec, name: str) -> PushTarget:
    try:
        return push_target(spec.repo_for(name), "model", spec.revision)
    except UsageError as error:
        if error.parameter != "repo_id":
            raise
        raise UsageError(error.message, parameter="push_to_hub") from None


def push_corrected(
    targets: list[PushTarget] | None,
    reports: list[AdapterReport],
    request: CorrectRequest,
    hub: HubClient,
    events: Events,
) -> list[AdapterReport]:
    """Push each finished output folder to its repo through the run's Hub client; the reports come back with
    where each went."""
    if targets is None:
        return reports
    advance = events.start("pushing to the Hub", len(targets))
    pushed, done = [], []
    for report, target in zip(reports, targets, strict=True):
        name = Path(report.output).name
        message = f"csulora correct: {name} corrected with {report.method['name']}"
        record = _push(Path(report.output), target, request.push, hub, message, done)
        pushed.append(replace(report, pushed=record))
        done.append(target.repo_id)
        advance()
    return pushed


def push_subspace(
    target: PushTarget | None, result: EstimateResult, request: EstimateRequest, hub: HubClient, events: Events
) -> EstimateResult:
    """Write the folder's model card, then push the folder (all of it, bases other jobs added included) through
    the run's Hub client."""
    if target is None:
        return result
    _warn_if_incomplete(request.out, events)
    count = _write_subspace_card(request.out, target, request.energy)
    advance = events.start("pushing to the Hub", 1)
    message = f"csulora estimate-subspace: safety subspace of {count} modules"
    record = _push(request.out, target, request.push, hub, message, [])
    advance()
    return replace(result, pushed=record)


def push_output(request: PushRequest, events: Events = SilentEvents()) -> PushedOutput:
    """Push a finished output again, as its run would have: a corrected adapter folder (checked against its
    report's digests first) or a subspace folder (its model card written first, at the default energy).

        from pathlib import Path
        from csulora_cli.api import PushRequest, push_output
        pushed = push_output(PushRequest(folder=Path("adapter-safe"), repo="org/adapter-safe"))
        print(pushed.pushed.url)
    """
    folder = request.folder
    target = _target(request.spec, folder.resolve().name)
    if (folder / REPORT_FILE).is_file():
        problem = verify_outputs((folder,))[0].problem
        if problem is not None:
            raise CsuloraError(f"not pushed: the folder is not as csulora wrote it ({problem})", where=str(folder))
        kind, message = "adapter", f"csulora push: {folder.resolve().name}, a corrected adapter"
    elif (folder / SUBSPACE_MANIFEST).is_file():
        _warn_if_incomplete(folder, events)
        count = _write_subspace_card(folder, target, DEFAULT_ENERGY)
        kind, message = "subspace", f"csulora push: safety subspace of {count} modules"
    else:
        raise CsuloraError(
            f"not a finished csulora output: it holds neither {REPORT_FILE} (a corrected adapter) nor "
            f"{SUBSPACE_MANIFEST} (a subspace folder)",
            where=str(folder),
        )
    advance = events.start("pushing to the Hub", 1)
    record = _push(folder, target, request.spec, hub_client(None, request.hub, events), message, None)
    advance()
    return PushedOutput(str(folder), kind, record)


def _warn_if_incomplete(folder: Path, events: Events) -> None:
    """A folder some jobs are still filling may be pushed on purpose: say what it lacks rather than refuse."""
    lacking = SubspaceFolder(folder).what_is_missing()
    if lacking is not None:
        events.warn(
            f"{folder}: pushing an incomplete subspace folder: {lacking}; push again once every job has finished"
        )


def _write_subspace_card(folder: Path, target: PushTarget, energy: float) -> int:
    """The subspace folder's model card, written into it before a push; returns how many modules it holds."""
    contents = SubspaceFolder(folder)
    modules, checkpoints = _folder_bases(contents, energy)
    card = render_subspace_card(
        repo_id=target.repo_id,
        revision=target.revision,
        sources=contents.sources,
        estimation=contents.estimation,
        energy=energy,
        modules=modules,
        checkpoints=checkpoints,
    )
    write_atomically(folder / CARD_FILE, card)
    return len(modules)


def _folder_bases(contents: SubspaceFolder, energy: float) -> tuple[list[dict], dict[str, list[str]]]:
    """Each basis in the folder at `energy` (read whole: its checksum is checked before it is published),
    and the checkpoint content ids behind them, per side."""
    modules = []
    checkpoints: dict[str, set[str]] = {"base": set(), "aligned": set()}
    for entry in sorted(contents.modules.values(), key=lambda entry: (_natural(entry["key"]), entry["transposed"])):
        basis, record = read_basis_file(entry["path"])
        selected = basis.select(energy)
        modules.append(
            {
                "module": entry["key"].removesuffix(".weight"),
                "transposed": entry["transposed"],
                "k": selected.rank,
                "stored_rank": basis.basis.shape[1],
                "captured_energy": selected.captured_energy,
                "displacement_energy": basis.total_energy,
                "has_signal": basis.has_signal,
            }
        )
        for side in ("base", "aligned"):
            content = record.get(f"{side}_content")
            if isinstance(content, str) and content:
                checkpoints[side].add(content.removesuffix(f":{entry['key']}"))
    return modules, {side: sorted(ids) for side, ids in checkpoints.items()}


def _natural(key: str) -> list:
    """`layers.2` before `layers.10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _push(
    folder: Path, target: PushTarget, spec: PushSpec, hub: HubClient, message: str, done: list[str] | None
) -> PushRecord:
    """One folder to its repo; `done` lists what this run pushed before it (None: the `push` command)."""
    try:
        result = hub.push(folder, target, private=True if spec.private else None, commit_message=message)
    except CsuloraError as error:
        raise _kept(error, folder, target, done) from None
    return PushRecord(result.repo_id, target.revision, result.commit, result.url, unchanged=result.unchanged)


def _kept(error: CsuloraError, folder: Path, target: PushTarget, done: list[str] | None) -> CsuloraError:
    """The push's failure, saying that the local output is whole and stays (and what was pushed before it);
    after a run, how to push it again without the run; after `push` itself, what to check before retrying."""
    message = error.message + (f" ({error.hint})" if error.hint else "")
    if done is None:
        message += (
            f"; {folder} is unchanged. Check the repo name ({target.repo_id}), that the token may write to it "
            "({token}, HF_TOKEN or the stored login) and the connection to the Hub, then push again"
        )
        return type(error)(message, where=error.where, parameter=error.parameter)
    message += f"; the local output {folder} is complete and kept"
    if done:
        message += f" ({', '.join(done)} pushed before it)"
    branch = "" if target.revision == "main" else f" {{revision}} {target.revision}"
    message += f"; push it again, without rerunning the job, with: csulora push {folder} {target.repo_id}{branch}"
    return type(error)(message, where=error.where, parameter=error.parameter)
