"""Correction settings, run through the csulora command line in process, and the random-subspace control.

Flags are the stable interface, so every correction and every statistic goes through `csulora ...`
arguments exactly as a user would type them; only the random control writes a subspace folder itself.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scripts.cli_runs import CliRun, in_process


def checked(args: list[str]) -> CliRun:
    run = in_process(args)
    if run.code != 0:
        raise RuntimeError(f"csulora {' '.join(args[:2])} failed ({run.code}): {run.message}")
    return run


# What a label says of the folder a setting corrects against; the safety subspace and the activation folder
# (read only by remove-inputs, which names it) need no word.
SUBSPACE_PREFIXES = {
    "random": "random-subspace ",
    "refusal": "refusal-direction ",
    "random-activations": "random-input-directions ",
    "random-refusal": "random-direction ",
}


@dataclass(frozen=True)
class Setting:
    """One `csulora correct` invocation; `subspace` picks the estimated subspace or the random control."""

    method: str
    params: dict = field(default_factory=dict)
    # "safety"; "random": a random orthonormal basis of the same k per module; "activations" and "refusal":
    # the folders `estimate-subspace --activations` writes (input directions, and the refusal direction).
    subspace: str = "safety"
    smoke: bool = False
    headline: bool = False  # also run on the groups corrected with the headline settings only

    @property
    def label(self) -> str:
        options = " ".join(f"--{k}" if v is True else f"--{k} {v}" for k, v in self.params.items())
        prefix = SUBSPACE_PREFIXES.get(self.subspace, "")
        return f"{prefix}{self.method}{' ' + options if options else ''}"

    def args(self) -> list[str]:
        args = ["--method", self.method]
        for name, value in self.params.items():
            # True: a flag that takes no value (`--readd-everywhere`).
            args += [f"--{name}"] if value is True else [f"--{name}", str(value)]
        return args


# Today's defaults are --energy 0.99, --rank 256, --lambda 3; each sweep moves one of them both ways where it
# can (--energy and --rank can only drop: fewer directions kept), and the headline settings (defaults, the
# strongest of each method, and the random control of the strongest) also run on the second adapter shape.
SETTINGS = (
    Setting("none", smoke=True, headline=True),
    Setting("csulora", smoke=True, headline=True),
    Setting("csulora", {"energy": 0.9}),
    Setting("csulora", {"energy": 0.5}),
    Setting("csulora", {"rank": 32}),
    Setting("csulora", {"rank": 8}, headline=True),
    Setting("csulora", {"lambda": 1}),
    Setting("csulora", {"lambda": 10}),
    Setting("csulora-signed"),
    Setting("csulora-inside"),
    Setting("project"),
    Setting("project", {"rank": 8}, smoke=True, headline=True),
    Setting("safelora"),
    Setting("csulora", subspace="random", smoke=True),
    Setting("project", {"rank": 8}, subspace="random", headline=True),
)


def estimate_subspace(base: Path, aligned: Path, adapter: Path, out: Path, cache: Path) -> Path:
    """The portable subspace folder of every module `adapter` targets (at the estimation defaults)."""
    if (out / "subspace.json").is_file():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    checked(
        ["estimate-subspace", str(base), str(aligned), "--adapter", str(adapter), "--out", str(partial)]
        + ["--cache-dir", str(cache), "--device", "cpu", "--quiet"]
    )
    partial.rename(out)
    return out


def random_subspace(safety: Path, out: Path, seed: int = 0) -> Path:
    """A copy of the safety subspace folder with each basis replaced by random orthonormal columns.

    Singular values and energies are kept, so `--energy` and `--rank` select the same k per module as on
    the safety subspace: only the directions change. The basis files are written with csulora's own
    writer so their checksums hold.
    """
    from csulora_cli.subspace.estimate import SubspaceBasis
    from csulora_cli.subspace.store import read_basis_file, write_basis_file

    if (out / "subspace.json").is_file():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "bases").mkdir(parents=True)
    shutil.copy(safety / "subspace.json", partial / "subspace.json")
    generator = torch.Generator().manual_seed(seed)
    for path in sorted((safety / "bases").glob("[!.]*.safetensors")):
        basis, record = read_basis_file(path)
        right = None if basis.right is None else _orthonormal(basis.right.shape, generator)
        # An empty basis (a refusal-direction folder's modules that do not write to the residual stream) stays.
        empty = basis.basis.shape[1] == 0
        shuffled = SubspaceBasis(
            basis.basis if empty else _orthonormal(basis.basis.shape, generator),
            basis.singular_values,
            basis.total_energy,
            basis.reference_energy,
            right,
        )
        write_basis_file(partial / "bases" / path.name, shuffled, record)
    partial.rename(out)
    return out


def _orthonormal(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    rows, columns = shape
    q, r = torch.linalg.qr(torch.randn(rows, columns, generator=generator, dtype=torch.float64))
    # Fixing the signs by R's diagonal makes Q Haar-distributed rather than biased by QR's convention.
    return (q * torch.sign(torch.diagonal(r)).unsqueeze(0)).to(torch.float32)


def correct(adapter: Path, subspace: Path, setting: Setting, out: Path, extra_args: tuple[str, ...] = ()) -> dict:
    """Write the corrected adapter to `out` (once) and return its report's totals; `extra_args` carry what
    a label does not name (the safety adapter's folder of merge-safety)."""
    report = out / "csulora_report.json"
    if not report.is_file():
        if out.exists():
            shutil.rmtree(out)
        checked(
            ["correct", str(adapter), "--subspace", str(subspace), "--out", str(out), *setting.args(), *extra_args]
            + ["--device", "cpu", "--quiet"]
        )
    return json.loads(report.read_text()).get("totals", {})


GATE_STATISTICS = ("off_share", "enrichment", "weighted_enrichment", "reversal", "reversing_share")


def gate_statistics(adapter: Path, subspace: Path) -> dict[str, float]:
    """Every `inspect --gate` statistic of the adapter's total, read from `inspect --json`."""
    run = checked(["inspect", str(adapter), "--subspace", str(subspace), "--json", "--device", "cpu", "--quiet"])
    (report,) = json.loads(run.stdout)["adapters"]
    detection = report["totals"]["detection"]
    return {name: float(detection[name]) for name in GATE_STATISTICS if name in detection}


def estimate_activation_subspace(
    base: Path, aligned: Path, adapter: Path, harmful: Path, contrast: Path, out: Path, options: tuple[str, ...]
) -> Path:
    """The folder `estimate-subspace --activations` writes from the prompt files `harmful` and `contrast`
    (`options`: `--rank K`, or `--refusal-direction`)."""
    if (out / "subspace.json").is_file():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    checked(
        ["estimate-subspace", str(base), str(aligned), "--adapter", str(adapter)]
        + ["--activations", str(harmful), "--contrast", str(contrast), "--out", str(partial), *options]
        + ["--device", "cpu", "--quiet"]
    )
    partial.rename(out)
    return out
