"""The `csulora` commands: parse flags, build a request, call one API function, print the result.

No math and no file formats here; the options shared by several commands are in `options.py`, and the
error boundary (one stderr line and an exit code) in `boundary.py`. The API (and with it torch) is
imported inside each command, so that `--help` and `--version` answer at once.
"""

from __future__ import annotations

import functools
import gc
from pathlib import Path
from typing import Annotated, Literal

import typer

from .. import __version__
from ..correction.params import CorrectionParams
from ..correction.statistics import STATISTICS
from ..pipeline.plumbing.cache_layout import hash_local_models_ahead
from ..report.schema_files import SCHEMA_NAMES
from ..subspace.params import DEFAULT_ENERGY, STORAGES
from . import options
from .boundary import CsuloraGroup
from .help import GroupedCommand
from .options import (
    DEFAULTS,
    FLAG,
    AlignedOpt,
    BaseOpt,
    CacheDirOpt,
    ConfigOpt,
    ConfirmOrderOpt,
    DeviceOpt,
    EnergyOpt,
    EpsOpt,
    EstimatePushOpt,
    ExactOpt,
    FetchOpt,
    JsonOpt,
    LambdaOpt,
    MethodOpt,
    OverwriteOpt,
    PowerOpt,
    PrivateOpt,
    PushToHubOpt,
    QuietOpt,
    RankOpt,
    RevisionOpt,
    SafeLoraLayersOpt,
    SafeLoraSelectOpt,
    SafeLoraThresholdOpt,
    SeedOpt,
    SubspaceOpt,
    TokenOpt,
    TwoSidedOpt,
)
from .output import Output, gate_line

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
    csulora correct ./runs/*/adapter --subspace ./subspace --out-dir ./corrected
    csulora correct ./adapter --base ./base --aligned ./aligned --out ./adapter-safe --push-to-hub org/adapter-safe
    """
INSPECT_EXAMPLES = """
    csulora inspect ./adapter
    csulora inspect ./adapter --subspace ./subspace
    csulora inspect ./adapter --subspace ./subspace --gate reversal --fail-below -0.05
    """
VERIFY_EXAMPLES = """
    csulora verify ./adapter-safe && echo deploying
    csulora verify ./corrected/*/adapter --json
    """
VALIDATE_EXAMPLES = """
    csulora validate ./adapter-safe/csulora_report.json
    csulora validate dry-run.json --schema correct
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


@app.command("estimate-subspace", cls=GroupedCommand, epilog=ESTIMATE_EXAMPLES)
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
    modules: Annotated[
        str | None, typer.Option("--modules", metavar="REGEX", help="Regex over base weight keys.")
    ] = None,
    adapter: Annotated[
        str | None,
        typer.Option(
            "--adapter", metavar="ADAPTER", help="Estimate the modules this adapter (folder or Hub repo) targets."
        ),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers", metavar="RANGES", help="Only these transformer blocks, e.g. 0-15 or 0-3,8-11 (split jobs)."
        ),
    ] = None,
    rank: RankOpt = DEFAULTS.max_rank,
    energy: EnergyOpt = DEFAULT_ENERGY,
    exact: ExactOpt = False,
    seed: SeedOpt = DEFAULTS.seed,
    power_iterations: PowerOpt = DEFAULTS.power_iterations,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    fetch: FetchOpt = "auto",
    token: TokenOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Write a portable subspace folder here.")
    ] = None,
    storage: Annotated[
        Literal[STORAGES],
        typer.Option(
            "--storage", help="dtype of the --out folder's bases: float16 halves a folder to publish (readers upcast)."
        ),
    ] = "float32",
    overwrite: OverwriteOpt = False,
    push_to_hub: EstimatePushOpt = None,
    private: PrivateOpt = False,
    revision: RevisionOpt = None,
    confirm_order: ConfirmOrderOpt = False,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Estimate and cache the safety subspace of each module (or write a portable subspace folder)."""
    hash_local_models_ahead([base, aligned], options.as_path(cache_dir))  # beside the imports below
    api = _library()

    output = Output(json_output, quiet, flag_of=ctx.find_root().command.flag_of)
    flags = options.EstimationFlags.of(ctx)
    request = api.EstimateRequest(
        base=base,
        aligned=aligned,
        modules=modules,
        adapter=adapter,
        layers=layers,
        estimation=flags.estimation(),
        energy=energy,
        cache_dir=options.as_path(cache_dir),
        device=device,
        hub=flags.hub_options(),
        out=options.as_path(out),
        overwrite=overwrite,
        storage=storage,
        push=options.push_spec(ctx),
        confirm_order=confirm_order,
    )
    with output.progress():
        result = api.estimate_subspace(request, output)
    output.estimate(result)


@app.command("correct", cls=GroupedCommand, epilog=CORRECT_EXAMPLES)
def correct_command(
    ctx: typer.Context,
    adapters: Annotated[
        list[str],
        typer.Argument(metavar="ADAPTER", help="PEFT LoRA adapter folders, or Hub repos org/name[@revision]."),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="The corrected adapter's folder (one adapter).")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            metavar="DIR",
            help="Any number of adapters: each to DIR/<its path below the adapters' common parent>.",
        ),
    ] = None,
    subspace: SubspaceOpt = None,
    base: BaseOpt = None,
    aligned: AlignedOpt = None,
    method: MethodOpt = "csulora",
    lambda_: LambdaOpt = CorrectionParams.lambda_,
    eps: EpsOpt = CorrectionParams.eps,
    safelora_select: SafeLoraSelectOpt = CorrectionParams.safelora_select,
    safelora_threshold: SafeLoraThresholdOpt = CorrectionParams.safelora_threshold,
    safelora_layers: SafeLoraLayersOpt = CorrectionParams.safelora_layers,
    two_sided: TwoSidedOpt = CorrectionParams.two_sided,
    rank: RankOpt = DEFAULTS.max_rank,
    energy: EnergyOpt = DEFAULT_ENERGY,
    exact: ExactOpt = False,
    seed: SeedOpt = DEFAULTS.seed,
    power_iterations: PowerOpt = DEFAULTS.power_iterations,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    fetch: FetchOpt = "auto",
    token: TokenOpt = None,
    config: ConfigOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", metavar=FLAG, help="Compute and print the report; write nothing.")
    ] = False,
    recorrect: Annotated[
        bool,
        typer.Option("--recorrect", metavar=FLAG, help="Correct an adapter that csulora already corrected."),
    ] = False,
    overwrite: OverwriteOpt = False,
    push_to_hub: PushToHubOpt = None,
    private: PrivateOpt = False,
    revision: RevisionOpt = None,
    confirm_order: ConfirmOrderOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write corrected adapters and their reports."""
    if subspace is None:
        hash_local_models_ahead([base, aligned], options.as_path(cache_dir))  # beside the imports below
    api = _library()

    options.refuse_estimation_flags_with_subspace(ctx, subspace)
    output = Output(json_output, quiet, flag_of=ctx.find_root().command.flag_of)
    request = api.CorrectRequest(
        adapters=tuple(adapters),
        out=options.as_path(out),
        out_dir=options.as_path(out_dir),
        subspace=options.subspace_spec(ctx),
        method=method,
        correction=options.correction(ctx),
        dry_run=dry_run,
        overwrite=overwrite,
        recorrect=recorrect,
        command_line=options.command_line(ctx),
        push=options.push_spec(ctx),
        order_check="accept" if confirm_order else "warn",
    )
    with output.progress():
        reports = api.correct(request, output)
    output.reports(reports, dry_run)


@app.command("inspect", cls=GroupedCommand, epilog=INSPECT_EXAMPLES)
def inspect_command(
    ctx: typer.Context,
    adapter: Annotated[
        str, typer.Argument(metavar="ADAPTER", help="A PEFT LoRA adapter folder, or a Hub repo org/name[@revision].")
    ],
    subspace: SubspaceOpt = None,
    base: BaseOpt = None,
    aligned: AlignedOpt = None,
    fail_above: Annotated[
        float | None,
        typer.Option(
            "--fail-above",
            metavar="F",
            help="Exit 3 when the adapter's total --gate statistic (default off_share) exceeds F.",
        ),
    ] = None,
    fail_below: Annotated[
        float | None,
        typer.Option("--fail-below", metavar="F", help="Exit 3 when the adapter's total --gate statistic is below F."),
    ] = None,
    gate: Annotated[
        Literal[tuple(STATISTICS)] | None,
        typer.Option("--gate", help="The detection statistic --fail-above/--fail-below and --plot use."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE.png", help="Write a heatmap of the statistic per block and module type."),
    ] = None,
    method: MethodOpt = "csulora",
    lambda_: LambdaOpt = CorrectionParams.lambda_,
    eps: EpsOpt = CorrectionParams.eps,
    safelora_select: SafeLoraSelectOpt = CorrectionParams.safelora_select,
    safelora_threshold: SafeLoraThresholdOpt = CorrectionParams.safelora_threshold,
    safelora_layers: SafeLoraLayersOpt = CorrectionParams.safelora_layers,
    two_sided: TwoSidedOpt = CorrectionParams.two_sided,
    rank: RankOpt = DEFAULTS.max_rank,
    energy: EnergyOpt = DEFAULT_ENERGY,
    exact: ExactOpt = False,
    seed: SeedOpt = DEFAULTS.seed,
    power_iterations: PowerOpt = DEFAULTS.power_iterations,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    fetch: FetchOpt = "auto",
    token: TokenOpt = None,
    confirm_order: ConfirmOrderOpt = False,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show an adapter's modules, or with a subspace, what `correct` would remove."""
    if subspace is None:
        hash_local_models_ahead([base, aligned], options.as_path(cache_dir))  # beside the imports below
    api = _library()
    from ..errors import GateTripped

    options.refuse_estimation_flags_with_subspace(ctx, subspace)
    output = Output(json_output, quiet, flag_of=ctx.find_root().command.flag_of)
    request = api.InspectRequest(
        adapter=adapter,
        subspace=options.subspace_spec(ctx),
        method=method,
        correction=options.correction(ctx),
        fail_above=fail_above,
        fail_below=fail_below,
        gate=gate,
        plot=options.as_path(plot),
        command_line=options.command_line(ctx),
        confirm_order=confirm_order,
    )
    with output.progress():
        result = api.inspect(request, output)
    output.inspect(result)
    if result.gate is not None and result.gate.tripped:
        raise GateTripped(gate_line(result.gate))


@app.command("verify", cls=GroupedCommand, epilog=VERIFY_EXAMPLES)
def verify_command(
    folders: Annotated[
        list[Path], typer.Argument(metavar="OUT", help="Corrected adapter folders written by csulora correct.")
    ],
    json_output: JsonOpt = False,
) -> None:
    """Check that output folders hold exactly the files their csulora_report.json records (exit 1 if not)."""
    api = _library()
    from ..errors import CsuloraError

    output = Output(json_output)
    results = api.verify_outputs(tuple(folders))
    output.verify(results)
    first_problem = next((result.problem for result in results if result.problem is not None), None)
    if first_problem is not None:
        raise CsuloraError(first_problem)


@app.command("validate", cls=GroupedCommand, epilog=VALIDATE_EXAMPLES)
def validate_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="A csulora_report.json, a subspace's --json document, or what any command printed with --json.",
        ),
    ],
    schema: Annotated[
        Literal[SCHEMA_NAMES] | None,
        typer.Option("--schema", help="The schema to check against (default: the document's command, else report)."),
    ] = None,
) -> None:
    """Check JSON documents against the JSON Schemas that ship with csulora (exit 1 at the first mismatch)."""
    import json

    from ..errors import FormatError
    from ..report.validate import validate

    output = Output()
    for path in files:
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise FormatError("no such file", where=str(path)) from None
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise FormatError(f"not JSON ({error})", where=str(path)) from None
        try:
            name = validate(document, schema)
        except FormatError as error:
            error.where = str(path)
            raise
        output.stdout.print(f"valid: {path} ({name}.schema.json)", highlight=False, markup=False)


@app.command("push", cls=GroupedCommand, epilog=PUSH_EXAMPLES)
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
    private: Annotated[
        bool, typer.Option("--private", metavar=FLAG, help="A repo the push creates is private.")
    ] = False,
    revision: Annotated[
        str | None,
        typer.Option("--revision", metavar="BRANCH", help="The branch to push to (default main; created from main)."),
    ] = None,
    token: TokenOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Push a finished output to a Hub repo in one commit, as --push-to-hub would have (after a failed push).

    A corrected adapter is checked against its csulora_report.json first; a subspace folder gets its model
    card. The branch then holds exactly the folder: files of an earlier push that the folder no longer has
    are deleted in the same commit (.gitattributes stays).
    """
    api = _library()
    from ..checkpoints.hub.options import HubOptions

    output = Output(json_output, quiet)
    request = api.PushRequest(folder=folder, repo=repo, private=private, revision=revision, hub=HubOptions(token=token))
    with output.progress():
        result = api.push_output(request, output)
    output.pushed_output(result)


@app.command("demo", cls=GroupedCommand, epilog=DEMO_EXAMPLES)
def demo_command(
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            metavar="DIR",
            help="Build the demo here and keep it: DIR/base, DIR/aligned, DIR/adapter, and the demo's run in "
            "DIR/demo-run. An existing DIR that is not empty needs --overwrite.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", metavar=FLAG, help="Build the demo in a --keep DIR that is not empty.")
    ] = False,
) -> None:
    """Build a tiny model pair and adapter, then run estimate -> inspect -> correct on them."""
    from .demo import run_demo

    run_demo(Output(), keep, overwrite)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", metavar=FLAG, help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"csulora {__version__}")
        raise typer.Exit()
