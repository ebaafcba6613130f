"""Options shared by several commands, defined once, and the builders that turn flags into typed values.

Nothing here imports torch: `--help` and `--version` must start at once. The request types are imported
inside the builders, which only run once a command has been chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ..checkpoints.hub.options import FETCH_MODES, HubOptions
from ..correction.params import METHOD_NAMES, SAFELORA_SELECTIONS, CorrectionParams
from ..errors import UsageError
from ..pipeline.devices import DEVICES
from ..subspace.params import EstimationParams

# Flags that take no value show no placeholder; the others show what they take.
FLAG = ""

RankOpt = Annotated[int, typer.Option("--rank", metavar="N", help="Most basis columns kept per module (max_rank).")]
EnergyOpt = Annotated[
    float, typer.Option("--energy", metavar="F", help="Energy fraction of the displacement the basis keeps.")
]
ExactOpt = Annotated[
    bool, typer.Option("--exact", metavar=FLAG, help="Exact SVD instead of the randomized range finder.")
]
SeedOpt = Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the randomized range finder's sketch.")]
PowerOpt = Annotated[
    int,
    typer.Option(
        "--power-iterations",
        metavar="N",
        help="Subspace iterations of the randomized range finder (more: slower, closer to exact).",
    ),
]
DeviceOpt = Annotated[Literal[DEVICES], typer.Option("--device", help="Where the numerics run.")]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", metavar="DIR", help="Basis cache (default $CSULORA_CACHE or ~/.cache/csulora)."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="YAML file of option defaults (paths in it are relative to its folder).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print results as JSON.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", metavar=FLAG, help="No progress bars or warnings.")]
SubspaceOpt = Annotated[
    str | None,
    typer.Option(
        "--subspace",
        metavar="SUBSPACE",
        help="Subspace folder from estimate-subspace --out, or a Hub repo org/name[@revision] holding one.",
    ),
]
BaseOpt = Annotated[
    str | None,
    typer.Option("--base", metavar="MODEL", help="Pre-alignment base model (folder, or Hub repo org/name[@revision])."),
]
AlignedOpt = Annotated[
    str | None,
    typer.Option(
        "--aligned",
        metavar="MODEL",
        help="Safety-aligned model (folder, or Hub repo org/name[@revision]); default: the adapter's "
        "base_model_name_or_path.",
    ),
]
MethodOpt = Annotated[Literal[METHOD_NAMES], typer.Option("--method", help="How each update is corrected.")]
LambdaOpt = Annotated[float, typer.Option("--lambda", metavar="F", help="Penalty strength of csulora (>= 0).")]
EpsOpt = Annotated[float, typer.Option("--eps", metavar="F", help="Tolerance of the direction classes, in [0, 1].")]
FetchOpt = Annotated[
    Literal[FETCH_MODES],
    typer.Option(
        "--fetch",
        help="Hub sources: whole shards, byte ranges of the needed tensors, or auto (by the share of a shard needed).",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        help="Hugging Face token for private or gated repos (default: HF_TOKEN or the stored login).",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", metavar=FLAG, help="Replace an existing output.")]
PushToHubOpt = Annotated[
    str | None,
    typer.Option(
        "--push-to-hub",
        metavar="REPO",
        help="Push the finished output to this Hub repo in one commit (org/name; {name} in it stands for the "
        "output folder's name, one repo per adapter: org/{name}-safe).",
    ),
]
PrivateOpt = Annotated[
    bool, typer.Option("--private", metavar=FLAG, help="--push-to-hub: a repo the push creates is private.")
]
RevisionOpt = Annotated[
    str | None,
    typer.Option(
        "--revision",
        metavar="BRANCH",
        help="--push-to-hub: the branch to push to (default main; created from main when missing).",
    ),
]
SafeLoraSelectOpt = Annotated[
    Literal[SAFELORA_SELECTIONS],
    typer.Option(
        "--safelora-select", help="safelora: rewrite the N least similar modules (number) or all <= a threshold."
    ),
]
SafeLoraThresholdOpt = Annotated[
    float,
    typer.Option(
        "--safelora-threshold", metavar="F", help="safelora --safelora-select threshold: cosine cut, in [-1, 1]."
    ),
]
TwoSidedOpt = Annotated[
    bool,
    typer.Option(
        "--two-sided",
        metavar=FLAG,
        help="Subspace P_out X P_in (output and input side of V) for csulora, project, csulora-inside, none.",
    ),
]
SafeLoraLayersOpt = Annotated[
    int, typer.Option("--safelora-layers", metavar="N", help="safelora --safelora-select number: how many modules (N).")
]

DEFAULTS = EstimationParams()
DEFAULT_CORRECTION = CorrectionParams()

# What only estimation uses: given on the command line together with --subspace, they would be ignored.
# (--rank is not: beside a subspace folder it keeps fewer of the stored columns.)
ESTIMATION_FLAGS = {
    "exact": "--exact",
    "seed": "--seed",
    "power_iterations": "--power-iterations",
    "cache_dir": "--cache-dir",
}


def as_path(value) -> Path | None:
    return None if value is None else Path(value).expanduser()


def refuse_estimation_flags_with_subspace(ctx: typer.Context, subspace) -> None:
    """A subspace folder fixes how its bases were estimated: estimation flags typed beside it are an error.

    Values from a `--config` preset are not: a preset serves every command and every source of bases.
    """
    if subspace is None:
        return
    for name, flag in ESTIMATION_FLAGS.items():
        if _typed(ctx, name):
            raise UsageError(
                f"{flag} sets how bases are estimated, but {{subspace}} reads bases already estimated "
                "(their parameters are in its subspace.json); drop it, or estimate with --base/--aligned",
                parameter="subspace",
            )


def _typed(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def subspace_spec(
    ctx: typer.Context,
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
):
    from ..pipeline.types import SubspaceSpec

    return SubspaceSpec(
        subspace=subspace,
        base=base,
        aligned=aligned,
        estimation=estimation(DEFAULTS.max_rank if subspace is not None else rank, exact, seed, power_iterations),
        rank_cap=rank if subspace is not None and _typed(ctx, "rank") else None,
        energy=energy,
        cache_dir=as_path(cache_dir),
        device=device,
        hub=hub_options(fetch, token),
    )


def push_spec(ctx: typer.Context, repo: str | None, private: bool, revision: str | None):
    """Where `--push-to-hub` sends the outputs, or None; `--private` and `--revision` typed without it are refused."""
    from ..pipeline.types import PushSpec

    if repo is None:
        for name in ("private", "revision"):
            if _typed(ctx, name):
                raise UsageError("applies to a push: give {push_to_hub} REPO too", parameter=name)
        return None
    return PushSpec(repo=repo, private=private, revision=revision)


def estimation(rank: int, exact: bool, seed: int, power_iterations: int) -> EstimationParams:
    return EstimationParams(max_rank=rank, exact=exact, seed=seed, power_iterations=power_iterations)


def hub_options(fetch: str, token: str | None) -> HubOptions:
    return HubOptions(fetch=fetch, token=token or None)


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


def command_line(ctx: typer.Context) -> tuple[str, ...]:
    """The command line as typed (recorded in reports), with any token's value removed."""
    argv = list((ctx.obj or {}).get("argv", ()))
    cleaned = ["csulora"]
    hide_next = False
    for arg in argv:
        if hide_next:
            cleaned.append("***")
            hide_next = False
        elif arg == "--token":
            cleaned.append(arg)
            hide_next = True
        elif arg.startswith("--token="):
            cleaned.append("--token=***")
        else:
            cleaned.append(arg)
    return tuple(cleaned)
