"""The `csulora` commands: parse flags, build a request, call one API function, print the result.

No math and no file formats here; the options shared by several commands are in `options.py`, and the
error boundary (one stderr line and an exit code) in `boundary.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import __version__, api
from ..correction.params import CorrectionParams
from ..errors import GateTripped
from ..subspace.estimate import DEFAULT_ENERGY
from . import options
from .boundary import CsuloraGroup
from .demo import run_demo
from .options import (
    DEFAULTS,
    AlignedOpt,
    BaseOpt,
    CacheDirOpt,
    ConfigOpt,
    DeviceOpt,
    EnergyOpt,
    EpsOpt,
    ExactOpt,
    FetchOpt,
    JsonOpt,
    LambdaOpt,
    MethodOpt,
    OverwriteOpt,
    PowerOpt,
    QuietOpt,
    RankOpt,
    SafeLoraLayersOpt,
    SafeLoraSelectOpt,
    SafeLoraThresholdOpt,
    SeedOpt,
    SubspaceOpt,
    TokenOpt,
    TwoSidedOpt,
)
from .output import Output

app = typer.Typer(
    name="csulora",
    cls=CsuloraGroup,
    help="Rewrite LoRA adapters into the closest update inside an aligned model's safety subspace.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
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
    energy: EnergyOpt = DEFAULT_ENERGY,
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
    output = Output(json_output, quiet)
    request = api.EstimateRequest(
        base=base,
        aligned=aligned,
        modules=modules,
        adapter=options.as_path(adapter),
        layers=layers,
        estimation=options.estimation(rank, exact, seed, power_iterations),
        energy=energy,
        cache_dir=options.as_path(cache_dir),
        device=device,
        hub=options.hub_options(fetch, token),
        out=options.as_path(out),
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
    energy: EnergyOpt = DEFAULT_ENERGY,
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
        out=options.as_path(out),
        subspace=options.subspace_spec(
            subspace, base, aligned, rank, exact, seed, power_iterations, energy, cache_dir, device, fetch, token
        ),
        method=method,
        correction=options.correction(lambda_, eps, safelora_select, safelora_threshold, safelora_layers, two_sided),
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
    energy: EnergyOpt = DEFAULT_ENERGY,
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
        subspace=options.subspace_spec(
            subspace, base, aligned, rank, exact, seed, power_iterations, energy, cache_dir, device, fetch, token
        ),
        method=method,
        correction=options.correction(lambda_, eps, safelora_select, safelora_threshold, safelora_layers, two_sided),
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

    run_demo(Output(), keep)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"csulora {__version__}")
        raise typer.Exit()
