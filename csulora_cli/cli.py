"""The `csulora` command: parse flags, build a request, call one API function, print the result.

No math and no file formats here. `main()` is the one place where user errors become one stderr line
and an exit code (0 ok, 1 error, 2 usage, 3 gate tripped).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import __version__, api
from .config import config_defaults
from .correction import CorrectionParams
from .errors import CsuloraError, GateTripped
from .methods import METHODS
from .output import Output
from .subspace import EstimationParams

app = typer.Typer(
    name="csulora",
    help="Rewrite LoRA adapters into the closest update inside an aligned model's safety subspace.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)

# Options shared by several commands, defined once.
RankOpt = Annotated[int, typer.Option("--rank", help="Most basis columns kept per module (max_rank).")]
EnergyOpt = Annotated[float, typer.Option("--energy", help="Energy fraction of the displacement the basis keeps.")]
ExactOpt = Annotated[bool, typer.Option("--exact", help="Exact SVD instead of the randomized range finder.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the randomized range finder's sketch.")]
PowerOpt = Annotated[
    int,
    typer.Option(
        "--power-iterations", help="Subspace iterations of the randomized range finder (more: slower, closer to exact)."
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")]
CacheDirOpt = Annotated[
    Path | None, typer.Option("--cache-dir", help="Basis cache (default $CSULORA_CACHE or ~/.cache/csulora).")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file of option defaults.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as JSON.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or warnings.")]
SubspaceOpt = Annotated[Path | None, typer.Option("--subspace", help="Subspace folder from estimate-subspace --out.")]
BaseOpt = Annotated[
    str | None, typer.Option("--base", help="Pre-alignment base model (folder, or Hub repo org/name[@revision]).")
]
AlignedOpt = Annotated[
    str | None,
    typer.Option(
        "--aligned",
        help="Safety-aligned model (folder or Hub repo[@revision]); default: the adapter's base_model_name_or_path.",
    ),
]
MethodOpt = Annotated[str, typer.Option("--method", help=f"One of: {', '.join(METHODS)}.")]
LambdaOpt = Annotated[float, typer.Option("--lambda", help="Penalty strength of csulora (>= 0).")]
EpsOpt = Annotated[float, typer.Option("--eps", help="Tolerance of the direction classes, in [0, 1].")]
FetchOpt = Annotated[
    str,
    typer.Option(
        "--fetch",
        help="Hub sources: whole shards, byte ranges of the needed tensors, or auto (by the share of a shard needed).",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Hugging Face token for private or gated repos (default: HF_TOKEN or the stored login).",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
SafeLoraSelectOpt = Annotated[
    str,
    typer.Option(
        "--safelora-select", help="safelora: rewrite the N least similar modules (number) or all <= a threshold."
    ),
]
SafeLoraThresholdOpt = Annotated[
    float, typer.Option("--safelora-threshold", help="safelora --safelora-select threshold: cosine cut, in [-1, 1].")
]
TwoSidedOpt = Annotated[
    bool,
    typer.Option(
        "--two-sided",
        help="Subspace P_out X P_in (output and input side of V) for csulora, project, csulora-inside, none.",
    ),
]
SafeLoraLayersOpt = Annotated[
    int, typer.Option("--safelora-layers", help="safelora --safelora-select number: how many modules (N).")
]

DEFAULTS = EstimationParams()
# typer ships its own copy of click; its usage-error base class is reached through a public export.
_CLICK_ERROR = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException")


def _path(value) -> Path | None:
    return None if value is None else Path(value).expanduser()


def _subspace(
    subspace,
    base,
    aligned,
    rank: int,
    exact: bool,
    seed: int,
    power_iterations: int,
    energy: float,
    cache_dir,
    device: str,
    fetch: str,
    token: str | None,
) -> api.SubspaceSpec:
    return api.SubspaceSpec(
        subspace=_path(subspace),
        base=base,
        aligned=aligned,
        estimation=_estimation(rank, exact, seed, power_iterations),
        energy=energy,
        cache_dir=_path(cache_dir),
        device=device,
        hub=_hub(fetch, token),
    )


def _estimation(rank: int, exact: bool, seed: int, power_iterations: int) -> EstimationParams:
    return EstimationParams(max_rank=rank, exact=exact, seed=seed, power_iterations=power_iterations)


def _hub(fetch: str, token: str | None) -> api.HubOptions:
    return api.HubOptions(fetch=fetch, token=token or None)


def _correction(
    lambda_: float, eps: float, select: str, threshold: float, layers: int, two_sided: bool
) -> CorrectionParams:
    return CorrectionParams(
        lambda_=lambda_,
        eps=eps,
        safelora_select=select,
        safelora_threshold=threshold,
        safelora_layers=layers,
        two_sided=two_sided,
    )


@app.command("estimate-subspace")
def estimate_subspace_command(
    base: Annotated[str, typer.Argument(help="Pre-alignment base model (folder, or Hub repo org/name[@revision]).")],
    aligned: Annotated[str, typer.Argument(help="Safety-aligned model (folder, or Hub repo org/name[@revision]).")],
    modules: Annotated[str | None, typer.Option("--modules", help="Regex over base weight keys.")] = None,
    adapter: Annotated[
        Path | None, typer.Option("--adapter", help="Estimate the modules this adapter targets.")
    ] = None,
    layers: Annotated[
        str | None, typer.Option("--layers", help="Only these transformer blocks, e.g. 0-15 or 0-3,8-11 (split jobs).")
    ] = None,
    rank: RankOpt = DEFAULTS.max_rank,
    energy: EnergyOpt = 0.99,
    exact: ExactOpt = False,
    seed: SeedOpt = DEFAULTS.seed,
    power_iterations: PowerOpt = DEFAULTS.power_iterations,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    fetch: FetchOpt = "auto",
    token: TokenOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write a portable subspace folder here.")] = None,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Estimate and cache the safety subspace of each module (or write a portable subspace folder)."""
    if modules and adapter:
        raise typer.BadParameter("give --modules or --adapter, not both", param_hint="--modules")
    output = Output(json_output, quiet)
    request = api.EstimateRequest(
        base=base,
        aligned=aligned,
        modules=modules,
        adapter=_path(adapter),
        layers=layers,
        estimation=_estimation(rank, exact, seed, power_iterations),
        energy=energy,
        cache_dir=_path(cache_dir),
        device=device,
        hub=_hub(fetch, token),
        out=_path(out),
        overwrite=overwrite,
    )
    with output.progress():
        result = api.estimate_subspace(request, output)
    output.estimate(result)


@app.command("correct")
def correct_command(
    adapters: Annotated[list[Path], typer.Argument(help="One or more PEFT LoRA adapter folders.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (one subfolder per adapter if several).")
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
    energy: EnergyOpt = 0.99,
    exact: ExactOpt = False,
    seed: SeedOpt = DEFAULTS.seed,
    power_iterations: PowerOpt = DEFAULTS.power_iterations,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    fetch: FetchOpt = "auto",
    token: TokenOpt = None,
    config: ConfigOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute and print the report; write nothing.")] = False,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write corrected adapters and their reports."""
    output = Output(json_output, quiet)
    request = api.CorrectRequest(
        adapters=tuple(adapters),
        out=_path(out),
        subspace=_subspace(
            subspace, base, aligned, rank, exact, seed, power_iterations, energy, cache_dir, device, fetch, token
        ),
        method=method,
        correction=_correction(lambda_, eps, safelora_select, safelora_threshold, safelora_layers, two_sided),
        dry_run=dry_run,
        overwrite=overwrite,
    )
    with output.progress():
        reports = api.correct(request, output)
    output.reports(reports, dry_run)


@app.command("inspect")
def inspect_command(
    adapter: Annotated[Path, typer.Argument(help="A PEFT LoRA adapter folder.")],
    subspace: SubspaceOpt = None,
    base: BaseOpt = None,
    aligned: AlignedOpt = None,
    fail_above: Annotated[
        float | None,
        typer.Option("--fail-above", help="Exit 3 when the total off-subspace energy fraction exceeds this."),
    ] = None,
    method: MethodOpt = "csulora",
    lambda_: LambdaOpt = CorrectionParams.lambda_,
    eps: EpsOpt = CorrectionParams.eps,
    safelora_select: SafeLoraSelectOpt = CorrectionParams.safelora_select,
    safelora_threshold: SafeLoraThresholdOpt = CorrectionParams.safelora_threshold,
    safelora_layers: SafeLoraLayersOpt = CorrectionParams.safelora_layers,
    two_sided: TwoSidedOpt = CorrectionParams.two_sided,
    rank: RankOpt = DEFAULTS.max_rank,
    energy: EnergyOpt = 0.99,
    exact: ExactOpt = False,
    seed: SeedOpt = DEFAULTS.seed,
    power_iterations: PowerOpt = DEFAULTS.power_iterations,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    fetch: FetchOpt = "auto",
    token: TokenOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show an adapter's modules, or with a subspace, what `correct` would remove."""
    output = Output(json_output, quiet)
    request = api.InspectRequest(
        adapter=adapter,
        subspace=_subspace(
            subspace, base, aligned, rank, exact, seed, power_iterations, energy, cache_dir, device, fetch, token
        ),
        method=method,
        correction=_correction(lambda_, eps, safelora_select, safelora_threshold, safelora_layers, two_sided),
        fail_above=fail_above,
    )
    with output.progress():
        result = api.inspect(request, output)
    output.inspect(result)
    threshold = fail_above
    if threshold is not None and result.report is not None:
        off = result.report.totals.off_subspace_fraction
        if off > threshold:
            raise GateTripped(f"off-subspace energy {off:.4f} exceeds --fail-above {threshold}")


@app.command("demo")
def demo_command(
    keep: Annotated[Path | None, typer.Option("--keep", help="Build the demo here and keep it.")] = None,
) -> None:
    """Build a tiny model pair and adapter, then run estimate -> inspect -> correct on them."""
    from .demo import run_demo

    run_demo(Output(), keep)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"csulora {__version__}")
        raise typer.Exit()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line on stderr and an exit code."""
    debug = os.environ.get("CSULORA_DEBUG") == "1"
    output = Output()
    try:
        command = typer.main.get_command(app)
        args = sys.argv[1:] if argv is None else list(argv)
        code = command.main(
            args=args, prog_name="csulora", standalone_mode=False, default_map=config_defaults(command, args)
        )
    except GateTripped as gate:
        output.error(f"csulora: {gate}")
        sys.exit(GateTripped.exit_code)
    except CsuloraError as error:
        if debug:
            raise
        output.error(f"csulora: error: {error.one_line()}")
        sys.exit(error.exit_code)
    except _CLICK_ERROR as error:
        if debug:
            raise
        command = f" {error.ctx.info_name}" if getattr(error, "ctx", None) and error.ctx.info_name != "csulora" else ""
        output.error(f"csulora{command}: error: {error.format_message()} (see --help)")
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        output.error("csulora: interrupted")
        sys.exit(130)
    except Exception as error:  # a bug: one line, unless asked for the traceback
        if debug:
            raise
        output.error(
            f"csulora: internal error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            " (rerun with CSULORA_DEBUG=1 for the traceback)"
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
