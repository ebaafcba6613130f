"""The `csulora` commands: parse flags, build a request, call one API function, print the result.

No math and no file formats here. Every option is declared once, in a group of `options.py`; a command
takes groups as parameters (`takes_option_groups`) and passes their values to the request by keyword. The
requests are built first (plain data, `pipeline.types`: a request that cannot run is refused before
anything heavy is loaded); the API (and with it torch) is imported after, inside each command, so that
`--help` and `--version` answer at once. The error boundary (one stderr line and an exit code) is
`boundary.py`.
"""

from __future__ import annotations

import functools
import gc
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ..checkpoints.hub.options import HubOptions
from ..errors import BatchFailures, CsuloraError, GateTripped, UsageError
from ..pipeline.types import CorrectRequest, EstimateRequest, InspectRequest, ProbeRequest, PushRequest
from .boundary import CsuloraGroup
from .declared import FLAG, takes_option_groups
from .help import GroupedCommand
from .options import (
    ActivationInputs,
    BasesSource,
    ConfigFile,
    Correction,
    CorrectMode,
    CorrectOutput,
    DemoOptions,
    EstimateInputs,
    Estimation,
    Gate,
    JsonOutput,
    OrderConfirmation,
    Overwrite,
    Printing,
    ProbeGate,
    ProbeInputs,
    ProbeRun,
    Push,
    PushTarget,
    SchemaChoice,
    SubspaceOutput,
    SubspacePush,
    Token,
    as_path,
    command_line,
    refuse_estimation_options_beside_activations,
    subspace_spec,
)
from .output import Output, gate_line, probe_gate_line

app = typer.Typer(
    name="csulora",
    cls=CsuloraGroup,
    help="Rewrite LoRA adapters into the closest update inside an aligned model's safety subspace: per weight, "
    "the few directions in which safety alignment changed it (W_aligned - W_base, estimated from the aligned "
    "model and its pre-alignment base). Start with `csulora demo`; each command's --help ends with examples.",
    no_args_is_help=True,
    add_completion=False,
    # Help text is plain: `org/name[@revision]` must show as typed, not be read as rich markup.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)


# The examples each command's --help ends with (as `hf` does).
ESTIMATE_EXAMPLES = """
    csulora estimate-subspace ./base ./aligned --adapter ./adapter --out ./subspace
    csulora estimate-subspace org/base org/base-instruct --out ./subspace --storage float16 --push-to-hub org/subspace
    csulora estimate-subspace ./base ./aligned --adapter ./adapter --layers 0-15 --out /shared/subspace
    """
CORRECT_EXAMPLES = """
    csulora correct ./adapter --subspace ./subspace --out ./adapter-safe
    csulora correct ./runs/*/adapter --subspace ./subspace --out-dir ./corrected --keep-going
    csulora correct ./adapter --base ./base --aligned ./aligned --out ./adapter-safe --push-to-hub org/adapter-safe
    """
INSPECT_EXAMPLES = """
    csulora inspect ./adapter
    csulora inspect ./adapter --subspace ./subspace --gate reversal --fail-below -0.05
    csulora inspect ./runs/*/adapter --subspace ./subspace --fail-above 0.3 --json
    """
PROBE_EXAMPLES = """
    csulora probe ./adapter --model ./aligned --prompts harmful.txt --fail-above 0.2
    csulora probe ./runs/*/adapter --model org/model-instruct --prompts harmful.csv --prompt-field goal --json
    csulora probe ./adapter --model ./aligned --prompts harmful.txt --benign benign.txt --fail-over-refusal-above 0.5
    csulora probe ./adapter --model ./aligned --prompts datasets/org/prompts/behaviors.csv@main --prompt-field Goal
    """
VERIFY_EXAMPLES = """
    csulora verify ./adapter-safe && echo deploying
    csulora verify ./corrected/*/adapter --json
    """
VALIDATE_EXAMPLES = """
    csulora validate ./adapter-safe/csulora_report.json ./subspace/subspace.json
    csulora inspect ./adapter --subspace ./subspace --json | csulora validate -
    """
PUSH_EXAMPLES = """
    csulora push ./adapter-safe org/adapter-safe
    csulora push ./subspace org/llama-subspace --private --revision v1
    """
DEMO_EXAMPLES = """
    csulora demo
    csulora demo --keep ./demo
    """


@functools.cache
def _library():
    """The API, imported by the first command that needs it (torch alone takes 1.5 s to import).

    What that import creates lives as long as the process, so it is moved out of the garbage collector's
    reach (`gc.freeze`): every full collection would walk its objects again, and so would the
    interpreter's exit, which took 0.3-0.5 s longer after importing torch without it (measured).
    """
    from .. import api

    gc.freeze()
    return api


def _hash_local_models_ahead(models: list[str | None], cache_dir: Path | None) -> None:
    """Start hashing the shards of local models on threads, beside the API's import that follows (torch takes
    1.5 s to import; the hashes are the cache key). The one reach below the API: it must run before it."""
    from ..pipeline.plumbing.cache_layout import hash_local_models_ahead

    hash_local_models_ahead(models, cache_dir)


@app.command("estimate-subspace", cls=GroupedCommand, epilog=ESTIMATE_EXAMPLES)
@takes_option_groups
def estimate_subspace_command(
    ctx: typer.Context,
    base: Annotated[
        str,
        typer.Argument(metavar="BASE", help="Pre-alignment base model (folder, or Hub repo org/name[@revision])."),
    ],
    aligned: Annotated[
        str,
        typer.Argument(metavar="ALIGNED", help="Safety-aligned model (folder, or Hub repo org/name[@revision])."),
    ],
    inputs: EstimateInputs,
    activations: ActivationInputs,
    estimation: Estimation,
    token: Token,
    outputs: SubspaceOutput,
    overwrite: Overwrite,
    push: SubspacePush,
    order: OrderConfirmation,
    config: ConfigFile,
    printing: Printing,
) -> None:
    """Estimate and cache the safety subspace of each module (or write a portable subspace folder); with
    --activations, a folder of the directions harmful prompts excite in the aligned model."""
    refuse_estimation_options_beside_activations(activations, estimation)
    request = EstimateRequest(
        base=base,
        aligned=aligned,
        modules=inputs.modules,
        adapter=inputs.adapter,
        layers=inputs.layers,
        estimation=estimation.params(),
        energy=estimation.energy,
        cache_dir=as_path(estimation.cache_dir),
        device=estimation.device,
        hub=estimation.hub_options(token),
        out=as_path(outputs.out),
        overwrite=overwrite.overwrite,
        storage=outputs.storage,
        push=push.spec(),
        confirm_order=order.confirm_order,
        confirm_models=inputs.confirm_models,
        activations=activations.activations,
        contrast=activations.contrast,
        prompt_field=activations.prompt_field,
        refusal_direction=activations.refusal_direction,
    )
    if request.activations is None:
        _hash_local_models_ahead([request.base, request.aligned], request.cache_dir)
    api = _library()

    output = Output(printing.json_output, printing.quiet, flag_of=ctx.find_root().command.flag_of)
    with output.progress():
        result = api.estimate_subspace(request, output)
    output.estimate(result)


@app.command("correct", cls=GroupedCommand, epilog=CORRECT_EXAMPLES)
@takes_option_groups
def correct_command(
    ctx: typer.Context,
    adapters: Annotated[
        list[str],
        typer.Argument(metavar="ADAPTER", help="PEFT LoRA adapter folders, or Hub repos org/name[@revision]."),
    ],
    outputs: CorrectOutput,
    source: BasesSource,
    correction: Correction,
    estimation: Estimation,
    token: Token,
    config: ConfigFile,
    mode: CorrectMode,
    overwrite: Overwrite,
    push: Push,
    order: OrderConfirmation,
    printing: Printing,
) -> None:
    """Write corrected adapters and their reports."""
    request = CorrectRequest(
        adapters=tuple(adapters),
        out=as_path(outputs.out),
        out_dir=as_path(outputs.out_dir),
        subspace=subspace_spec(source, estimation, token),
        method=correction.method,
        correction=correction.params(),
        dry_run=mode.dry_run,
        overwrite=overwrite.overwrite,
        recorrect=mode.recorrect,
        command_line=command_line(ctx),
        push=push.spec(),
        order_check="accept" if order.confirm_order else "warn",
        keep_going=mode.keep_going,
    )
    if request.subspace.subspace is None:
        _hash_local_models_ahead([request.subspace.base, request.subspace.aligned], request.subspace.cache_dir)
    api = _library()

    output = Output(printing.json_output, printing.quiet, flag_of=ctx.find_root().command.flag_of)
    try:
        with output.progress():
            reports = api.correct(request, output)
    except BatchFailures as failures:
        # --keep-going: what was written is shown as usual, then each refused adapter in a line of its own.
        output.reports(failures.reports, request.dry_run)
        for line in failures.lines(ctx.find_root().command.flag_of):
            output.error(f"csulora: error: {line}")
        raise typer.Exit(BatchFailures.exit_code) from None
    output.reports(reports, request.dry_run)


@app.command("inspect", cls=GroupedCommand, epilog=INSPECT_EXAMPLES)
@takes_option_groups
def inspect_command(
    ctx: typer.Context,
    adapters: Annotated[
        list[str],
        typer.Argument(metavar="ADAPTER", help="PEFT LoRA adapter folders, or Hub repos org/name[@revision]."),
    ],
    source: BasesSource,
    gate: Gate,
    correction: Correction,
    estimation: Estimation,
    token: Token,
    order: OrderConfirmation,
    config: ConfigFile,
    printing: Printing,
) -> None:
    """Show adapters' modules, or with a subspace, what `correct` would remove; a gate checks each adapter."""
    if gate.plot is not None and len(adapters) > 1:
        raise UsageError(
            f"draws one adapter's heatmap; inspect the {len(adapters)} adapters one at a time to plot each",
            parameter="plot",
        )
    requests = [
        InspectRequest(
            adapter=adapter,
            subspace=subspace_spec(source, estimation, token),
            method=correction.method,
            correction=correction.params(),
            fail_above=gate.fail_above,
            fail_below=gate.fail_below,
            gate=gate.gate,
            plot=as_path(gate.plot),
            command_line=command_line(ctx),
            confirm_order=order.confirm_order,
            hub=estimation.hub_options(token),
            cache_dir=as_path(estimation.cache_dir),
        )
        for adapter in adapters
    ]
    subspace = requests[0].subspace
    if subspace is not None and subspace.subspace is None:
        _hash_local_models_ahead([subspace.base, subspace.aligned], subspace.cache_dir)
    api = _library()

    output = Output(printing.json_output, printing.quiet, flag_of=ctx.find_root().command.flag_of)
    with output.progress():
        results = [api.inspect(request, output) for request in requests]
    output.inspect(results)
    tripped = [result.gate for result in results if result.gate is not None and result.gate.tripped]
    if tripped:
        # One line, naming each adapter whose check tripped (a gate over several trips if any of them does).
        named = len(results) > 1
        raise GateTripped("; ".join((f"{gate.adapter}: " if named else "") + gate_line(gate) for gate in tripped))


@app.command("probe", cls=GroupedCommand, epilog=PROBE_EXAMPLES)
@takes_option_groups
def probe_command(
    ctx: typer.Context,
    adapters: Annotated[
        list[str],
        typer.Argument(metavar="ADAPTER", help="PEFT LoRA adapter folders, or Hub repos org/name[@revision]."),
    ],
    inputs: ProbeInputs,
    run: ProbeRun,
    gate: ProbeGate,
    token: Token,
    config: ConfigFile,
    printing: Printing,
) -> None:
    """Measure each adapter's effect on the model's refusals: the refusal margin on each prompt, with and without
    the adapter (forward passes only; the model is loaded once for every adapter)."""
    request = ProbeRequest(
        adapters=tuple(adapters),
        model=inputs.model,
        prompts=inputs.prompts,
        prompt_field=inputs.prompt_field,
        benign=inputs.benign,
        benign_field=inputs.benign_field,
        device=run.device,
        dtype=run.dtype,
        batch_size=run.batch_size,
        compliance_opening=run.compliance_opening,
        generate=run.generate,
        save_answers=run.save_answers,
        fail_above=gate.fail_above,
        fail_if_shift_above=gate.fail_if_shift_above,
        fail_over_refusal_above=gate.fail_over_refusal_above,
        cache_dir=as_path(run.cache_dir),
        hub=HubOptions(token=token.token or None),
    )
    api = _library()

    output = Output(printing.json_output, printing.quiet, flag_of=ctx.find_root().command.flag_of)
    with output.progress():
        result = api.probe(request, output)
    output.probe(result)
    if result.tripped:
        raise GateTripped(probe_gate_line(result))


@app.command("verify", cls=GroupedCommand, epilog=VERIFY_EXAMPLES)
@takes_option_groups
def verify_command(
    folders: Annotated[
        list[Path],
        typer.Argument(
            metavar="OUT",
            help="Corrected adapter folders (csulora correct) or subspace folders (estimate-subspace --out).",
        ),
    ],
    printing: JsonOutput,
) -> None:
    """Check that output folders hold exactly the files their csulora_report.json records, and that subspace
    folders hold every module asked for, each basis file whole (exit 1 if not)."""
    api = _library()

    output = Output(printing.json_output)
    results = api.verify_outputs(tuple(folders))
    output.verify(results)
    first_problem = next((result.problem for result in results if result.problem is not None), None)
    if first_problem is not None:
        raise CsuloraError(first_problem)


@app.command("validate", cls=GroupedCommand, epilog=VALIDATE_EXAMPLES)
@takes_option_groups
def validate_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="A csulora_report.json, a subspace folder's subspace.json, or what any command printed with "
            "--json; - reads the document from stdin (csulora inspect ... --json | csulora validate -).",
        ),
    ],
    schema: SchemaChoice,
) -> None:
    """Check JSON documents against the JSON Schemas that ship with csulora (exit 1 at the first mismatch)."""
    import json
    import sys

    from ..errors import FormatError
    from ..report.validate import validate

    output = Output()
    for path in files:
        where = "stdin" if str(path) == "-" else str(path)
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text()
            document = json.loads(text)
        except FileNotFoundError:
            raise FormatError("no such file", where=where, hint="- reads the document from stdin") from None
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise FormatError(f"not JSON ({error})", where=where) from None
        try:
            name = validate(document, schema.schema)
        except FormatError as error:
            error.where = where
            raise
        output.stdout.print(f"valid: {where} ({name}.schema.json)", highlight=False, markup=False)


@app.command("push", cls=GroupedCommand, epilog=PUSH_EXAMPLES)
@takes_option_groups
def push_command(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="FOLDER",
            help="A finished output: a corrected adapter folder (correct), or a subspace folder "
            "(estimate-subspace --out).",
        ),
    ],
    repo: Annotated[str, typer.Argument(metavar="REPO", help="The Hub model repo to push to (org/name).")],
    target: PushTarget,
    token: Token,
    printing: Printing,
) -> None:
    """Push a finished output to a Hub repo in one commit, as --push-to-hub would have (after a failed push).

    A corrected adapter is checked against its csulora_report.json first; a subspace folder gets its model
    card. The branch then holds exactly the folder: files of an earlier push that the folder no longer has
    are deleted in the same commit (.gitattributes stays).
    """
    request = PushRequest(
        folder=folder, repo=repo, private=target.private, revision=target.revision, hub=HubOptions(token=token.token)
    )
    api = _library()

    output = Output(printing.json_output, printing.quiet)
    with output.progress():
        result = api.push_output(request, output)
    output.pushed_output(result)


@app.command("demo", cls=GroupedCommand, epilog=DEMO_EXAMPLES)
@takes_option_groups
def demo_command(demo: DemoOptions) -> None:
    """Build a tiny model pair and adapter, then run estimate -> inspect -> correct on them."""
    from .demo import run_demo

    run_demo(Output(quiet=demo.quiet), demo.keep, demo.overwrite)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", metavar=FLAG, help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"csulora {__version__}")
        raise typer.Exit()
