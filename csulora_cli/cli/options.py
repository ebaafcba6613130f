"""Options shared by several commands, defined once, and the builders that turn flags into typed values.

Nothing here imports torch: `--help` and `--version` must start at once (the request types are plain
data, so the builders import them directly).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Literal

import typer

from ..checkpoints.hub.options import FETCH_MODES, HubOptions
from ..correction.methods import METHODS
from ..correction.params import SAFELORA_SELECTIONS, CorrectionParams
from ..errors import UsageError
from ..pipeline.types.devices import DEVICES
from ..pipeline.types.requests import PushSpec, SubspaceSpec
from ..subspace.params import EstimationParams

# Flags that take no value show no placeholder; the others show what they take.
FLAG = ""

RankOpt = Annotated[
    int,
    typer.Option(
        "--rank",
        metavar="N",
        help="Most directions (basis columns) the safety subspace keeps per module; beside --subspace, at most "
        "that many of the stored ones.",
    ),
]
EnergyOpt = Annotated[
    float,
    typer.Option(
        "--energy",
        metavar="F",
        help="Share of the alignment's change to each weight (its energy, ||W_aligned - W_base||^2) the subspace "
        "must hold, in (0, 1]: more keeps more directions.",
    ),
]
ExactOpt = Annotated[
    bool,
    typer.Option(
        "--exact", metavar=FLAG, help="Exact SVD instead of the faster randomized estimate (randomized range finder)."
    ),
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
DeviceOpt = Annotated[
    Literal[DEVICES], typer.Option("--device", help="Where the numerics run (auto: a GPU when there is one).")
]
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
ConfirmOrderOpt = Annotated[
    bool,
    typer.Option(
        "--confirm-order",
        metavar=FLAG,
        help="The base/aligned order is right even though a source (an adapter's base_model_name_or_path, a "
        "model's card or config.json) says otherwise: no warning, and a gate runs.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print results as JSON.")]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", metavar=FLAG, help="Errors only: no tables, warnings or progress (--json still prints)."
    ),
]
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
MethodOpt = Annotated[
    Literal[tuple(METHODS)],
    typer.Option(
        "--method",
        help="How each update is corrected: csulora, the closest update inside the safety subspace (the paper's); "
        "project, the hard projection onto it; safelora, Safe LoRA; csulora-inside and csulora-signed, variants "
        "(docs/method.md section 5); none, report only.",
    ),
]
LambdaOpt = Annotated[
    float,
    typer.Option(
        "--lambda",
        metavar="F",
        help="How strongly csulora attenuates what an update writes outside the subspace: 0 keeps it, larger "
        "removes more (>= 0).",
    ),
]
EpsOpt = Annotated[
    float,
    typer.Option(
        "--eps",
        metavar="F",
        help="A direction of the update counts as aligned when at most this share of it lies outside the subspace, "
        "and as off when at most this share lies inside (in [0, 1]).",
    ),
]
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
        "output folder's name, one repo per adapter: org/{name}-safe). The branch then holds exactly the output: "
        "files of an earlier push it no longer has are deleted. A failed push keeps the output; csulora push "
        "FOLDER REPO retries it.",
    ),
]
EstimatePushOpt = Annotated[
    str | None,
    typer.Option(
        "--push-to-hub",
        metavar="REPO",
        help="Push the finished --out folder, with a model card written into it, to this Hub repo (org/name) in "
        "one commit. The branch then holds exactly the folder: files of an earlier push it no longer has are "
        "deleted. A failed push keeps the folder; csulora push FOLDER REPO retries it.",
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
        help="Use the subspace on both sides of the alignment's change V (its output and input directions) "
        "rather than the output side only; for csulora, project, csulora-inside and none.",
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


def _from_preset(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "DEFAULT_MAP"


@dataclass(frozen=True)
class EstimationFlags:
    """How bases are estimated and from where they are read: the flags `estimate-subspace`, `correct` and
    `inspect` share (`subspace`, `base` and `aligned` are None where a command has no such flag)."""

    rank: int
    energy: float
    exact: bool
    seed: int
    power_iterations: int
    device: str
    cache_dir: Path | None
    fetch: str
    token: str | None
    subspace: str | None = None
    base: str | None = None
    aligned: str | None = None

    @classmethod
    def of(cls, ctx: typer.Context) -> EstimationFlags:
        """The group's values as the command received them (typed, from --config, or defaults)."""
        return cls(**{field.name: ctx.params[field.name] for field in fields(cls) if field.name in ctx.params})

    def estimation(self) -> EstimationParams:
        return EstimationParams(
            max_rank=self.rank, exact=self.exact, seed=self.seed, power_iterations=self.power_iterations
        )

    def hub_options(self) -> HubOptions:
        return HubOptions(fetch=self.fetch, token=self.token or None)


def subspace_spec(ctx: typer.Context) -> SubspaceSpec:
    """Where `correct` and `inspect` take bases from. Beside a subspace folder, `--rank` (typed, or a
    preset's `rank`) caps its stored columns; estimation uses the default rank there (the folder's bases
    are already estimated). A preset's cap above what the folder stores keeps every column."""
    flags = EstimationFlags.of(ctx)
    from_preset = _from_preset(ctx, "rank")
    rank_cap = flags.rank if flags.subspace is not None and (_typed(ctx, "rank") or from_preset) else None
    if flags.subspace is not None:
        flags = replace(flags, rank=DEFAULTS.max_rank)
    return SubspaceSpec(
        subspace=flags.subspace,
        base=flags.base,
        aligned=flags.aligned,
        estimation=flags.estimation(),
        rank_cap=rank_cap,
        rank_cap_may_exceed=rank_cap is not None and from_preset,
        energy=flags.energy,
        cache_dir=as_path(flags.cache_dir),
        device=flags.device,
        hub=flags.hub_options(),
    )


def push_spec(ctx: typer.Context) -> PushSpec | None:
    """Where `--push-to-hub` sends the outputs, or None; `--private` and `--revision` typed without it are refused."""
    repo = ctx.params["push_to_hub"]
    if repo is None:
        for name in ("private", "revision"):
            if _typed(ctx, name):
                raise UsageError("applies to a push: give {push_to_hub} REPO too", parameter=name)
        return None
    return PushSpec(repo=repo, private=ctx.params["private"], revision=ctx.params["revision"])


def correction(ctx: typer.Context) -> CorrectionParams:
    """The correction flags (`--lambda`, `--eps`, the Safe LoRA selection, `--two-sided`) as params."""
    return CorrectionParams(
        lambda_=ctx.params["lambda_"],
        eps=ctx.params["eps"],
        safelora_select=ctx.params["safelora_select"],
        safelora_threshold=ctx.params["safelora_threshold"],
        safelora_layers=ctx.params["safelora_layers"],
        two_sided=ctx.params["two_sided"],
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
