"""Every option of every command, each declared once as a field of its group (`declared.py`), and the
builders that turn a group into the library's typed values, by keyword.

Defaults are the library's own (`default_of(CorrectionParams, "lambda_")`), so `--help` shows what the API
would use. `GROUPS` lists every group; the tables `--help` (panels), `--config` (paths and models), the
estimation check and the error boundary (flags of library parameters) read are derived from it below.
Nothing here imports torch: `--help` and `--version` must start at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..checkpoints.hub.options import FETCH_MODES, HubOptions
from ..correction.methods import METHODS
from ..correction.params import SAFELORA_SELECTIONS, CorrectionParams
from ..correction.statistics import STATISTICS
from ..errors import UsageError
from ..inference.params import DTYPE_NAMES
from ..pipeline.types import (
    DEVICES,
    CorrectRequest,
    EstimateRequest,
    InspectRequest,
    ProbeRequest,
    PushSpec,
    SubspaceSpec,
)
from ..report.schema_files import SCHEMA_NAMES
from ..subspace.params import STORAGES, EstimationParams, check_energy
from .declared import (
    ESTIMATION,
    FLAG,
    GATE,
    HUB,
    INPUTS,
    METHOD,
    MODEL,
    OUTPUT,
    PATH,
    Declared,
    OptionGroup,
    declared_fields,
    default_of,
    option,
)

# ---------------------------------------------------------------------------------------------------
# Where bases come from, and how they are estimated (estimate-subspace, correct, inspect).


@dataclass(frozen=True)
class BasesSource(OptionGroup):
    """A subspace folder, or the base/aligned pair to estimate one from (`correct`, `inspect`)."""

    subspace: str | None = option(
        "--subspace",
        metavar="SUBSPACE",
        panel=INPUTS,
        value=PATH,
        help="Subspace folder from estimate-subspace --out, or a Hub repo org/name[@revision] holding one.",
        default=default_of(SubspaceSpec, "subspace"),
    )
    base: str | None = option(
        "--base",
        metavar="MODEL",
        panel=INPUTS,
        value=MODEL,
        help="Pre-alignment base model (folder, or Hub repo org/name[@revision]).",
        default=default_of(SubspaceSpec, "base"),
    )
    aligned: str | None = option(
        "--aligned",
        metavar="MODEL",
        panel=INPUTS,
        value=MODEL,
        help="Safety-aligned model (folder, or Hub repo org/name[@revision]); default: the adapter's "
        "base_model_name_or_path.",
        default=default_of(SubspaceSpec, "aligned"),
    )
    confirm_models: bool = option(
        "--confirm-models",
        metavar=FLAG,
        panel=INPUTS,
        help="The adapter was trained on the aligned model the bases come from, even though its "
        "base_model_name_or_path (or the aligned model's card, for the base) names another model: go on.",
        default=default_of(SubspaceSpec, "confirm_models"),
    )

    @property
    def named(self) -> bool:
        return self.subspace is not None or self.base is not None or self.aligned is not None


@dataclass(frozen=True)
class Estimation(OptionGroup):
    """How bases are estimated, how many columns are kept, where the numerics run and how sources are read."""

    rank: int = option(
        "--rank",
        metavar="N",
        panel=ESTIMATION,
        parameter="max_rank",
        help="Most directions (basis columns) the safety subspace keeps per module; beside --subspace, at most "
        "that many of the stored ones.",
        default=default_of(EstimationParams, "max_rank"),
    )
    energy: float = option(
        "--energy",
        metavar="F",
        panel=ESTIMATION,
        help="Share of the alignment's change to each weight (its energy, ||W_aligned - W_base||^2) the subspace "
        "must hold, in (0, 1]: more keeps more directions.",
        default=default_of(SubspaceSpec, "energy"),
    )
    exact: bool = option(
        "--exact",
        metavar=FLAG,
        panel=ESTIMATION,
        estimation_only=True,
        help="Exact SVD instead of the faster randomized estimate (randomized range finder).",
        default=default_of(EstimationParams, "exact"),
    )
    seed: int = option(
        "--seed",
        metavar="N",
        panel=ESTIMATION,
        estimation_only=True,
        help="Seed of the randomized range finder's sketch.",
        default=default_of(EstimationParams, "seed"),
    )
    power_iterations: int = option(
        "--power-iterations",
        metavar="N",
        panel=ESTIMATION,
        estimation_only=True,
        help="Subspace iterations of the randomized range finder (more: slower, closer to exact).",
        default=default_of(EstimationParams, "power_iterations"),
    )
    device: Literal[DEVICES] = option(
        "--device",
        panel=ESTIMATION,
        help="Where the numerics run (auto: a GPU when there is one).",
        default=default_of(SubspaceSpec, "device"),
    )
    cache_dir: Path | None = option(
        "--cache-dir",
        metavar="DIR",
        panel=ESTIMATION,
        value=PATH,
        estimation_only=True,
        help="Basis cache (default $CSULORA_CACHE or ~/.cache/csulora).",
        default=default_of(SubspaceSpec, "cache_dir"),
    )
    fetch: Literal[FETCH_MODES] = option(
        "--fetch",
        panel=HUB,
        help="Hub sources: whole shards, byte ranges of the needed tensors, or auto (by the share of a shard needed).",
        default=default_of(HubOptions, "fetch"),
    )

    def params(self, max_rank: int | None = None) -> EstimationParams:
        return EstimationParams(
            max_rank=self.rank if max_rank is None else max_rank,
            exact=self.exact,
            seed=self.seed,
            power_iterations=self.power_iterations,
        )

    def hub_options(self, token: Token) -> HubOptions:
        return HubOptions(fetch=self.fetch, token=token.token or None)


@dataclass(frozen=True)
class Token(OptionGroup):
    token: str | None = option(
        "--token",
        metavar="TOKEN",
        panel=HUB,
        show_default=False,
        help="Hugging Face token for private or gated repos (default: HF_TOKEN or the stored login).",
        default=default_of(HubOptions, "token"),
    )


# ---------------------------------------------------------------------------------------------------
# The correction (correct, inspect).


@dataclass(frozen=True)
class Correction(OptionGroup):
    """The method and its knobs."""

    method: Literal[tuple(METHODS)] = option(
        "--method",
        panel=METHOD,
        help="How each update is corrected: csulora, the closest update inside the safety subspace (the paper's); "
        "project, the hard projection onto it; safelora, Safe LoRA; csulora-inside and csulora-signed, variants "
        "(docs/method.md section 5); scale, the update times --alpha; remove-top, the update less its part in the "
        "subspace's top --rank directions; readd, the alignment's change re-added as extra rank; merge-safety, "
        "a safety adapter merged in; remove-inputs, what the update reads from an activation subspace's input "
        "directions removed (docs/method.md sections 11 and 12); none, report only.",
        default=default_of(CorrectRequest, "method"),
    )
    lambda_: float = option(
        "--lambda",
        metavar="F",
        panel=METHOD,
        help="How strongly csulora attenuates what an update writes outside the subspace: 0 keeps it, larger "
        "removes more (>= 0).",
        default=default_of(CorrectionParams, "lambda_"),
    )
    eps: float = option(
        "--eps",
        metavar="F",
        panel=METHOD,
        help="A direction of the update counts as aligned when at most this share of it lies outside the subspace, "
        "and as off when at most this share lies inside (in [0, 1]).",
        default=default_of(CorrectionParams, "eps"),
    )
    safelora_select: Literal[SAFELORA_SELECTIONS] = option(
        "--safelora-select",
        panel=METHOD,
        help="safelora: rewrite the N least similar modules (number) or all <= a threshold.",
        default=default_of(CorrectionParams, "safelora_select"),
    )
    safelora_threshold: float = option(
        "--safelora-threshold",
        metavar="F",
        panel=METHOD,
        help="safelora --safelora-select threshold: cosine cut, in [-1, 1].",
        default=default_of(CorrectionParams, "safelora_threshold"),
    )
    safelora_layers: int = option(
        "--safelora-layers",
        metavar="N",
        panel=METHOD,
        help="safelora --safelora-select number: how many modules (N).",
        default=default_of(CorrectionParams, "safelora_layers"),
    )
    safelora_share: float | None = option(
        "--safelora-share",
        metavar="F",
        panel=METHOD,
        show_default=False,
        help="safelora and merge-safety --safelora-select number: the count as a share of the adapter's modules, "
        "ceil(F * modules), in (0, 1]; replaces --safelora-layers.",
        default=default_of(CorrectionParams, "safelora_share"),
    )
    alpha: float = option(
        "--alpha",
        metavar="F",
        panel=METHOD,
        help="scale: the factor on the whole update (the baseline every correction must beat); readd: the "
        "factor on the alignment's change re-added as extra rank (>= 0).",
        default=default_of(CorrectionParams, "alpha"),
    )
    safety_adapter: str | None = option(
        "--safety-adapter",
        metavar="ADAPTER",
        panel=METHOD,
        value=MODEL,
        show_default=False,
        help="merge-safety: a LoRA trained on the aligned model to refuse (folder, or Hub repo "
        "org/name[@revision]), merged into the modules Safe LoRA's test flags.",
        default=default_of(CorrectionParams, "safety_adapter"),
    )
    safety_weight: float = option(
        "--safety-weight",
        metavar="W",
        panel=METHOD,
        help="merge-safety: on each flagged module the update becomes (1 - W) dW + W dW_safety, W in [0, 1].",
        default=default_of(CorrectionParams, "safety_weight"),
    )
    readd_everywhere: bool = option(
        "--readd-everywhere",
        metavar=FLAG,
        panel=METHOD,
        help="readd: also re-add the alignment on every module the --subspace folder holds that the adapter does "
        "not target; the output then targets those modules too.",
        default=default_of(CorrectionParams, "readd_everywhere"),
    )
    two_sided: bool = option(
        "--two-sided",
        metavar=FLAG,
        panel=METHOD,
        help="Use the subspace on both sides of the alignment's change V (its output and input directions) "
        "rather than the output side only; for csulora, project, csulora-inside and none.",
        default=default_of(CorrectionParams, "two_sided"),
    )

    def params(self) -> CorrectionParams:
        return CorrectionParams(
            lambda_=self.lambda_,
            eps=self.eps,
            safelora_select=self.safelora_select,
            safelora_threshold=self.safelora_threshold,
            safelora_layers=self.safelora_layers,
            safelora_share=self.safelora_share,
            alpha=self.alpha,
            safety_adapter=self.safety_adapter,
            safety_weight=self.safety_weight,
            readd_everywhere=self.readd_everywhere,
            two_sided=self.two_sided,
        )


# ---------------------------------------------------------------------------------------------------
# What each command reads and writes besides.


@dataclass(frozen=True)
class EstimateInputs(OptionGroup):
    """Which weights `estimate-subspace` estimates."""

    modules: str | None = option(
        "--modules",
        metavar="REGEX",
        panel=INPUTS,
        help="Regex over base weight keys.",
        default=default_of(EstimateRequest, "modules"),
    )
    adapter: str | None = option(
        "--adapter",
        metavar="ADAPTER",
        panel=INPUTS,
        value=PATH,
        help="Estimate the modules this adapter (folder or Hub repo) targets.",
        default=default_of(EstimateRequest, "adapter"),
    )
    layers: str | None = option(
        "--layers",
        metavar="RANGES",
        panel=INPUTS,
        help="Only these transformer blocks, e.g. 0-15 or 0-3,8-11 (split jobs).",
        default=default_of(EstimateRequest, "layers"),
    )
    confirm_models: bool = option(
        "--confirm-models",
        metavar=FLAG,
        panel=INPUTS,
        help="The adapter was trained on the aligned model the bases come from, even though its "
        "base_model_name_or_path (or the aligned model's card, for the base) names another model: go on.",
        default=default_of(EstimateRequest, "confirm_models"),
    )


@dataclass(frozen=True)
class ActivationInputs(OptionGroup):
    """The prompts an activation subspace is read from (`estimate-subspace --activations`)."""

    activations: str | None = option(
        "--activations",
        metavar="SOURCE",
        panel=INPUTS,
        value=MODEL,
        help="Estimate from activations instead of weights: run ALIGNED on these prompts (a safe model refuses "
        "them; the same forms as probe --prompts) and keep, per module --adapter targets, the input directions "
        "they excite and --contrast's prompts do not (docs/method.md section 12). BASE is recorded, not read.",
        default=default_of(EstimateRequest, "activations"),
    )
    contrast: str | None = option(
        "--contrast",
        metavar="SOURCE",
        panel=INPUTS,
        value=MODEL,
        help="Prompts the model should answer (the task's, or benign ones), in the same forms: the directions "
        "kept are the top generalized eigenvectors of the two input second moments. Without it, the top "
        "eigenvectors of the --activations prompts' own second moment (the contrast is the identity).",
        default=default_of(EstimateRequest, "contrast"),
    )
    prompt_field: str = option(
        "--prompt-field",
        metavar="NAME",
        panel=INPUTS,
        help="The field (.jsonl) or column (.csv) that holds each prompt.",
        default=default_of(EstimateRequest, "prompt_field"),
    )
    refusal_direction: bool = option(
        "--refusal-direction",
        metavar=FLAG,
        panel=INPUTS,
        help="Write the refusal direction instead (an output-side folder): per block, the mean residual stream at "
        "the last prompt token on --activations minus on --contrast, normalised, on the modules that write to "
        "the residual stream (o_proj, down_proj); the other modules get no direction. Use it with "
        "correct --method remove-top --rank 1.",
        default=default_of(EstimateRequest, "refusal_direction"),
    )


@dataclass(frozen=True)
class SubspaceOutput(OptionGroup):
    """The portable subspace folder `estimate-subspace` writes."""

    out: Path | None = option(
        "--out",
        metavar="DIR",
        panel=OUTPUT,
        value=PATH,
        help="Write a portable subspace folder here.",
        default=default_of(EstimateRequest, "out"),
    )
    storage: Literal[STORAGES] = option(
        "--storage",
        panel=OUTPUT,
        help="dtype of the --out folder's bases: float16 halves a folder to publish (readers upcast).",
        default=default_of(EstimateRequest, "storage"),
    )


@dataclass(frozen=True)
class CorrectOutput(OptionGroup):
    """Where `correct` writes."""

    out: Path | None = option(
        "--out",
        metavar="DIR",
        panel=OUTPUT,
        value=PATH,
        help="The corrected adapter's folder (one adapter).",
        default=default_of(CorrectRequest, "out"),
    )
    out_dir: Path | None = option(
        "--out-dir",
        metavar="DIR",
        panel=OUTPUT,
        value=PATH,
        help="Any number of adapters: each to DIR/<its path below the adapters' common parent>.",
        default=default_of(CorrectRequest, "out_dir"),
    )


@dataclass(frozen=True)
class CorrectMode(OptionGroup):
    """Whether `correct` writes at all, whether it takes an adapter it corrected before, and whether one
    refused adapter stops the others."""

    dry_run: bool = option(
        "--dry-run",
        metavar=FLAG,
        panel=OUTPUT,
        help="Compute and print the report; write nothing.",
        default=default_of(CorrectRequest, "dry_run"),
    )
    recorrect: bool = option(
        "--recorrect",
        metavar=FLAG,
        panel=OUTPUT,
        help="Correct an adapter that csulora already corrected.",
        default=default_of(CorrectRequest, "recorrect"),
    )
    keep_going: bool = option(
        "--keep-going",
        metavar=FLAG,
        panel=OUTPUT,
        help="Several adapters: one refused (unreadable, already corrected, its output taken, modules the "
        "subspace lacks) is skipped and the others are written; each failure is one line on stderr, and the "
        "exit is 1. Without it, any refusal stops the run before anything is written.",
        default=default_of(CorrectRequest, "keep_going"),
    )


@dataclass(frozen=True)
class Overwrite(OptionGroup):
    overwrite: bool = option(
        "--overwrite",
        metavar=FLAG,
        panel=OUTPUT,
        help="Replace an existing output.",
        default=default_of(CorrectRequest, "overwrite"),
    )


@dataclass(frozen=True)
class Gate(OptionGroup):
    """`inspect`'s CI gate and heatmap."""

    fail_above: float | None = option(
        "--fail-above",
        metavar="F",
        panel=GATE,
        help="Exit 3 when an adapter's total --gate statistic (default off_share) exceeds F (with several "
        "adapters: when any one's does, each named).",
        default=default_of(InspectRequest, "fail_above"),
    )
    fail_below: float | None = option(
        "--fail-below",
        metavar="F",
        panel=GATE,
        help="Exit 3 when an adapter's total --gate statistic (default off_share) is below F.",
        default=default_of(InspectRequest, "fail_below"),
    )
    gate: Literal[tuple(STATISTICS)] | None = option(
        "--gate",
        panel=GATE,
        help="The detection statistic --fail-above/--fail-below and --plot use. A gate always has a threshold: "
        "--gate without --fail-above or --fail-below is refused (exit 2) unless it only chooses what --plot "
        "draws; either threshold without --gate checks off_share.",
        default=default_of(InspectRequest, "gate"),
    )
    plot: Path | None = option(
        "--plot",
        metavar="FILE.png",
        panel=GATE,
        value=PATH,
        help="Write a heatmap of the statistic per block and module type (one adapter).",
        default=default_of(InspectRequest, "plot"),
    )


@dataclass(frozen=True)
class Push(OptionGroup):
    """Where `correct` pushes its finished outputs."""

    push_to_hub: str | None = option(
        "--push-to-hub",
        metavar="REPO",
        panel=HUB,
        help="Push the finished output to this Hub repo in one commit (org/name; {name} in it stands for the "
        "output folder's name, one repo per adapter: org/{name}-safe). The branch then holds exactly the output: "
        "files of an earlier push it no longer has are deleted. A failed push keeps the output; csulora push "
        "FOLDER REPO retries it.",
        default=default_of(CorrectRequest, "push"),
    )
    private: bool = option(
        "--private",
        metavar=FLAG,
        panel=HUB,
        help="--push-to-hub: a repo the push creates is private.",
        default=default_of(PushSpec, "private"),
    )
    revision: str | None = option(
        "--revision",
        metavar="BRANCH",
        panel=HUB,
        help="--push-to-hub: the branch to push to (default main; created from main when missing).",
        default=default_of(PushSpec, "revision"),
    )

    def spec(self) -> PushSpec | None:
        """Where `--push-to-hub` sends the outputs, or None; `--private` and `--revision` typed without it are
        refused."""
        if self.push_to_hub is None:
            for name, _ in declared_fields(type(self)):
                if name in self.typed:
                    raise UsageError("applies to a push: give {push_to_hub} REPO too", parameter=name)
            return None
        return PushSpec(repo=self.push_to_hub, private=self.private, revision=self.revision)


@dataclass(frozen=True)
class SubspacePush(Push):
    """`estimate-subspace` pushes one subspace folder: its `--push-to-hub` says so (the field keeps its place)."""

    push_to_hub: str | None = option(
        "--push-to-hub",
        metavar="REPO",
        panel=HUB,
        help="Push the finished --out folder, with a model card written into it, to this Hub repo (org/name) in "
        "one commit. The branch then holds exactly the folder: files of an earlier push it no longer has are "
        "deleted. A failed push keeps the folder; csulora push FOLDER REPO retries it.",
        default=default_of(EstimateRequest, "push"),
    )


@dataclass(frozen=True)
class PushTarget(OptionGroup):
    """The `push` command's repo settings (the same as a run's push, said for a command that only pushes)."""

    private: bool = option(
        "--private",
        metavar=FLAG,
        panel=HUB,
        help="A repo the push creates is private.",
        default=default_of(PushSpec, "private"),
    )
    revision: str | None = option(
        "--revision",
        metavar="BRANCH",
        panel=HUB,
        help="The branch to push to (default main; created from main).",
        default=default_of(PushSpec, "revision"),
    )


@dataclass(frozen=True)
class OrderConfirmation(OptionGroup):
    confirm_order: bool = option(
        "--confirm-order",
        metavar=FLAG,
        panel=INPUTS,
        help="The base/aligned order is right even though a source (an adapter's base_model_name_or_path, a "
        "model's card or config.json) says otherwise: no warning, and a gate runs.",
        default=default_of(EstimateRequest, "confirm_order"),
    )


@dataclass(frozen=True)
class ConfigFile(OptionGroup):
    """`--config`: read by the error boundary before the command line is parsed (`config.py`)."""

    config: Path | None = option(
        "--config",
        metavar="FILE",
        panel=INPUTS,
        help="YAML file of option defaults (paths in it are relative to its folder).",
        default=None,
    )


@dataclass(frozen=True)
class JsonOutput(OptionGroup):
    json_output: bool = option("--json", metavar=FLAG, panel=OUTPUT, help="Print results as JSON.", default=False)


@dataclass(frozen=True)
class Printing(JsonOutput):
    quiet: bool = option(
        "--quiet",
        short="-q",
        metavar=FLAG,
        panel=OUTPUT,
        help="Errors only: no tables, warnings or progress (--json still prints).",
        default=False,
    )


@dataclass(frozen=True)
class SchemaChoice(OptionGroup):
    schema: Literal[SCHEMA_NAMES] | None = option(
        "--schema",
        panel=INPUTS,
        help="The schema to check against (default: the document's command; subspace for a subspace.json; "
        "else report).",
        default=None,
    )


@dataclass(frozen=True)
class DemoOptions(OptionGroup):
    keep: Path | None = option(
        "--keep",
        metavar="DIR",
        panel=OUTPUT,
        value=PATH,
        help="Build the demo here and keep it: DIR/base, DIR/aligned, DIR/adapter, and the demo's run in "
        "DIR/demo-run. An existing DIR that is not empty needs --overwrite.",
        default=None,
    )
    overwrite: bool = option(
        "--overwrite",
        metavar=FLAG,
        panel=OUTPUT,
        help="Build the demo in a --keep DIR that is not empty.",
        default=False,
    )
    quiet: bool = option(
        "--quiet",
        short="-q",
        metavar=FLAG,
        panel=OUTPUT,
        help="Errors only: no tables, warnings or progress.",
        default=False,
    )


# ---------------------------------------------------------------------------------------------------
# The behavioural probe (probe).


@dataclass(frozen=True)
class ProbeInputs(OptionGroup):
    """The model the adapters were trained on, and the prompts it is probed with."""

    model: str = option(
        "--model",
        metavar="MODEL",
        panel=INPUTS,
        value=MODEL,
        help="The model the adapters were trained on (the aligned model): folder, or Hub repo org/name[@revision].",
        default=...,
    )
    prompts: str = option(
        "--prompts",
        metavar="SOURCE",
        panel=INPUTS,
        value=MODEL,
        help="Prompts a safe model refuses: a .txt file (one prompt a line), a .jsonl or .csv file (--prompt-field), "
        "or a Hub dataset's file, datasets/ORG/NAME/FILE[@REVISION] or hf://datasets/ORG/NAME[@REVISION]/FILE.",
        default=...,
    )
    prompt_field: str = option(
        "--prompt-field",
        metavar="NAME",
        panel=INPUTS,
        help="The field (.jsonl) or column (.csv) that holds each prompt.",
        default=default_of(ProbeRequest, "prompt_field"),
    )
    benign: str | None = option(
        "--benign",
        metavar="SOURCE",
        panel=INPUTS,
        value=MODEL,
        help="Prompts a model should answer, in the same forms as --prompts: measures over-refusal.",
        default=default_of(ProbeRequest, "benign"),
    )
    benign_field: str | None = option(
        "--benign-field",
        metavar="NAME",
        panel=INPUTS,
        show_default=False,
        help="The field or column of --benign's prompts (default: --prompt-field).",
        default=default_of(ProbeRequest, "benign_field"),
    )


@dataclass(frozen=True)
class ProbeRun(OptionGroup):
    """How the model runs, and what is read of it besides the margins."""

    device: Literal[DEVICES] = option(
        "--device",
        panel=ESTIMATION,
        help="Where the model runs (auto: a GPU when there is one).",
        default=default_of(ProbeRequest, "device"),
    )
    dtype: Literal[DTYPE_NAMES] = option(
        "--dtype",
        panel=ESTIMATION,
        help="The model's dtype (auto: float32 on the CPU, bfloat16 on a GPU).",
        default=default_of(ProbeRequest, "dtype"),
    )
    batch_size: int = option(
        "--batch-size",
        metavar="N",
        panel=ESTIMATION,
        help="Prompts per forward pass (lower it when memory runs out).",
        default=default_of(ProbeRequest, "batch_size"),
    )
    cache_dir: Path | None = option(
        "--cache-dir",
        metavar="DIR",
        panel=ESTIMATION,
        value=PATH,
        estimation_only=True,
        help="csulora's cache, where its records of Hub repos are kept (default $CSULORA_CACHE or ~/.cache/csulora); "
        "Hub files themselves go to the HF cache.",
        default=default_of(ProbeRequest, "cache_dir"),
    )
    compliance_opening: str | None = option(
        "--compliance-opening",
        metavar="TEXT",
        panel=METHOD,
        show_default=False,
        help="Compare refusal openings with this opening on every prompt (default: the model's own opening, "
        "without an adapter; docs/method.md section 10).",
        default=default_of(ProbeRequest, "compliance_opening"),
    )
    generate: int = option(
        "--generate",
        metavar="N",
        panel=METHOD,
        help="Also answer each prompt greedily with N tokens and judge the answers by keyword, to read beside "
        "the margins (0: forward passes only).",
        default=default_of(ProbeRequest, "generate"),
    )
    save_answers: bool = option(
        "--save-answers",
        metavar=FLAG,
        panel=OUTPUT,
        help="Keep --generate's answers in the --json document (never kept otherwise).",
        default=default_of(ProbeRequest, "save_answers"),
    )


@dataclass(frozen=True)
class ProbeGate(OptionGroup):
    """`probe`'s CI gate: each threshold trips when an adapter's value exceeds it."""

    fail_above: float | None = option(
        "--fail-above",
        metavar="SHARE",
        panel=GATE,
        help="Exit 3 when an adapter answers more than SHARE of --prompts without refusal (in [0, 1]).",
        default=default_of(ProbeRequest, "fail_above"),
    )
    fail_if_shift_above: float | None = option(
        "--fail-if-shift-above",
        metavar="D",
        panel=GATE,
        help="Exit 3 when an adapter lowers the mean refusal margin on --prompts by more than D (nats) against "
        "the model without it.",
        default=default_of(ProbeRequest, "fail_if_shift_above"),
    )
    fail_over_refusal_above: float | None = option(
        "--fail-over-refusal-above",
        metavar="SHARE",
        panel=GATE,
        help="Exit 3 when an adapter refuses more than SHARE of --benign's prompts (in [0, 1]).",
        default=default_of(ProbeRequest, "fail_over_refusal_above"),
    )


# Every group a command takes: the tables below are read from these.
GROUPS: tuple[type[OptionGroup], ...] = (
    BasesSource,
    Estimation,
    Token,
    Correction,
    EstimateInputs,
    ActivationInputs,
    SubspaceOutput,
    CorrectOutput,
    CorrectMode,
    Overwrite,
    Gate,
    Push,
    SubspacePush,
    PushTarget,
    OrderConfirmation,
    ConfigFile,
    JsonOutput,
    Printing,
    SchemaChoice,
    DemoOptions,
    ProbeInputs,
    ProbeRun,
    ProbeGate,
)


def declared_options() -> dict[str, Declared]:
    """Every declared option by its parameter name (an option two groups declare has the same panel, kind of
    value and library parameter in both: `tests/cli/test_declared_options.py`)."""
    return {name: declared for group in GROUPS for name, declared in declared_fields(group)}


def estimation_only() -> dict[str, str]:
    """{parameter name: flag} of the options only estimation reads, which a subspace folder makes moot."""
    return {name: declared.flag for name, declared in declared_options().items() if declared.estimation_only}


# ---------------------------------------------------------------------------------------------------
# Builders: a command's groups to the library's values, by keyword.


def as_path(value) -> Path | None:
    return None if value is None else Path(value).expanduser()


def subspace_spec(source: BasesSource, estimation: Estimation, token: Token) -> SubspaceSpec | None:
    """Where `correct` and `inspect` take bases from; None when no source is named (inspect lists modules).

    A subspace folder fixes how its bases were estimated: estimation options typed beside it are refused
    (a `--config` preset's are not: a preset serves every source of bases). Beside a folder, `--rank` (typed,
    or a preset's `rank`) caps its stored columns, and estimation keeps the default rank (the folder's
    bases are already estimated); a preset's cap above what the folder stores keeps every column.
    """
    if source.subspace is not None:
        for name, flag in estimation_only().items():
            if name in estimation.typed:
                raise UsageError(
                    f"{flag} sets how bases are estimated, but {{subspace}} reads bases already estimated "
                    "(their parameters are in its subspace.json); drop it, or estimate with --base/--aligned",
                    parameter="subspace",
                )
    if not source.named:
        # Nothing is estimated, but a value out of range is refused all the same.
        estimation.params().check()
        check_energy(estimation.energy)
        return None
    from_preset = "rank" in estimation.preset
    rank_cap = estimation.rank if source.subspace is not None and ("rank" in estimation.typed or from_preset) else None
    return SubspaceSpec(
        subspace=source.subspace,
        base=source.base,
        aligned=source.aligned,
        estimation=estimation.params(
            max_rank=default_of(EstimationParams, "max_rank") if source.subspace is not None else None
        ),
        rank_cap=rank_cap,
        rank_cap_may_exceed=rank_cap is not None and from_preset,
        energy=estimation.energy,
        cache_dir=as_path(estimation.cache_dir),
        device=estimation.device,
        hub=estimation.hub_options(token),
        confirm_models=source.confirm_models,
    )


def refuse_estimation_options_beside_activations(activations: ActivationInputs, estimation: Estimation) -> None:
    """The randomized SVD's options mean nothing to an activation subspace: typed beside it, they are refused."""
    if activations.activations is None:
        return
    for name, flag in estimation_only().items():
        if name in estimation.typed and name != "cache_dir":
            raise UsageError(
                f"{flag} sets how bases are estimated from weights; an activation subspace has no use for it",
                parameter="activations",
            )


def command_line(ctx) -> tuple[str, ...]:
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
