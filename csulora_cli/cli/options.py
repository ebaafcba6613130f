"""Options shared by several commands, defined once, and the builders that turn flags into typed values."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import api
from ..correction.methods import METHODS
from ..correction.params import CorrectionParams
from ..subspace.estimate import EstimationParams

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


def as_path(value) -> Path | None:
    return None if value is None else Path(value).expanduser()


def subspace_spec(
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
        subspace=as_path(subspace),
        base=base,
        aligned=aligned,
        estimation=estimation(rank, exact, seed, power_iterations),
        energy=energy,
        cache_dir=as_path(cache_dir),
        device=device,
        hub=hub_options(fetch, token),
    )


def estimation(rank: int, exact: bool, seed: int, power_iterations: int) -> EstimationParams:
    return EstimationParams(max_rank=rank, exact=exact, seed=seed, power_iterations=power_iterations)


def hub_options(fetch: str, token: str | None) -> api.HubOptions:
    return api.HubOptions(fetch=fetch, token=token or None)


def correction(
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
