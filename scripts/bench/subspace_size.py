"""Size of a published subspace folder against the two checkpoints it describes, and what a compact one costs.

For the synthetic bf16 pairs of `bench_scale.py` (its shapes and writers, in its data folder), runs
`csulora estimate-subspace BASE ALIGNED --out DIR` at default settings (every 2-D weight that differs,
`--rank 256`, `--energy 0.99` when read) and prints the folder's size against base + aligned. Where the
folder is more than a tenth of them, it prototypes compact forms and measures what each costs:

  float16     basis and right singular vectors stored in float16 (singular values stay float32)
  top-k       only the k columns `correct` uses at the default energy (0.99): the same correction, but
              a larger `--energy` or `--rank` can no longer be served from the folder
  float16 top-k  both

Each form is written (float16 tensors as such, to measure its bytes) and, for accuracy, also as an
ordinary subspace folder holding the float16-rounded values, which `correct` reads through the Python
API like any other: the largest principal angle between each float16 basis (its k columns) and the
float32 one, and the change in the corrected `lora_B` of one benchmark adapter (csulora, defaults),
relative to `lora_B` itself and to the correction `B - B'`. Prints a table and writes
scripts/out/subspace_size.json.

    python -m scripts.bench.subspace_size --shape 1b [--shape 3b]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from csulora_cli.api import CorrectRequest, SubspaceSpec, correct
from csulora_cli.subspace.estimate import DEFAULT_ENERGY, SubspaceBasis
from csulora_cli.subspace.folder import SUBSPACE_MANIFEST
from csulora_cli.subspace.store import read_basis_file, write_basis_file
from scripts.bench.scale import SHAPES, csulora, measure, prepare
from scripts.paths import RAW

# Above this share of the checkpoints' bytes, a published subspace is worth making smaller.
COMPACT_ABOVE = 0.10
FORMS = ("float16", "top-k", "float16 top-k")
# Energies a publisher might keep columns for, so readers can ask for more than the default 0.99.
KEPT_ENERGIES = (0.99, 0.995, 0.999)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def estimate(base: Path, aligned: Path, out: Path, scratch: Path) -> dict:
    """The default subspace folder, estimated once (kept for later runs of this script)."""
    marker = out.parent / f".{out.name}.complete"
    if marker.exists() and (out / SUBSPACE_MANIFEST).is_file():
        return json.loads(marker.read_text())
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, CSULORA_CACHE=str(scratch / "cache"))
    measured = measure(csulora("estimate-subspace", str(base), str(aligned), "--out", str(out)), env)
    if measured.returncode != 0:
        raise SystemExit(f"estimate-subspace failed ({measured.returncode})")
    shutil.rmtree(scratch / "cache", ignore_errors=True)
    figures = {"estimate_wall_s": measured.wall_s, "estimate_peak_rss_mb": measured.peak_rss_mb}
    marker.write_text(json.dumps(figures))
    return figures


def compact_tensors(basis: SubspaceBasis, form: str) -> dict[str, torch.Tensor]:
    """The tensors a compact basis file would hold."""
    k = basis.select(DEFAULT_ENERGY).rank if "top-k" in form else basis.basis.shape[1]
    dtype = torch.float16 if "float16" in form else torch.float32
    tensors = {"basis": basis.basis[:, :k].to(dtype), "singular_values": basis.singular_values[:k].float()}
    if basis.right is not None:
        tensors["right"] = basis.right[:, :k].to(dtype)
    return {name: tensor.contiguous() for name, tensor in tensors.items()}


def max_principal_angle_deg(approximate: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest principal angle between span(approximate) and span(exact), both (m, k)."""
    if exact.shape[1] == 0:
        return 0.0
    orthonormal, _ = torch.linalg.qr(approximate.double())
    cosines = torch.linalg.svdvals(orthonormal.T @ exact.double())
    return float(torch.rad2deg(torch.arccos(cosines.min().clamp(-1.0, 1.0))))


def write_forms(subspace: Path, work: Path) -> tuple[dict, dict[str, Path]]:
    """Each compact form's bytes, float16 angles, and a readable folder of each form for `correct`."""
    stored = {form: work / "stored" / form.replace(" ", "-") for form in FORMS}
    readable = {form: work / "readable" / form.replace(" ", "-") for form in FORMS}
    for folder in [*stored.values(), *readable.values()]:
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "bases").mkdir(parents=True)
        shutil.copy(subspace / SUBSPACE_MANIFEST, folder / SUBSPACE_MANIFEST)
    angles, orthonormality, ranks = [], [], []
    kept_bytes = dict.fromkeys(KEPT_ENERGIES, 0)
    for path in sorted((subspace / "bases").glob("*.safetensors")):
        basis, record = read_basis_file(path)
        k = basis.select(DEFAULT_ENERGY).rank
        ranks.append(k)
        for energy in KEPT_ENERGIES:  # float32 tensor bytes (basis, right, values) of the columns kept
            width = basis.basis.shape[0] + (0 if basis.right is None else basis.right.shape[0])
            kept_bytes[energy] += basis.select(energy).rank * (width + 1) * 4
        half = basis.basis.half().float()
        angles.append(max_principal_angle_deg(half[:, :k], basis.basis[:, :k]))
        gram = half[:, :k].double().T @ half[:, :k].double()
        orthonormality.append(float((gram - torch.eye(k, dtype=torch.float64)).abs().max()) if k else 0.0)
        for form in FORMS:
            tensors = compact_tensors(basis, form)
            save_file(tensors, str(stored[form] / "bases" / path.name))
            # What correct would compute from the compact file: its values, read back as float32.
            values = {name: tensor.float() for name, tensor in tensors.items()}
            as_read = SubspaceBasis(
                values["basis"],
                values["singular_values"],
                basis.total_energy,
                basis.reference_energy,
                values.get("right"),
            )
            write_basis_file(readable[form] / "bases" / path.name, as_read, record)
    figures = {
        "modules": len(ranks),
        "k_at_default_energy": {"min": min(ranks), "max": max(ranks), "mean": sum(ranks) / len(ranks)},
        "float16_max_principal_angle_deg": max(angles),
        "float16_max_orthonormality_error": max(orthonormality),
        "form_bytes": {form: folder_bytes(stored[form]) for form in FORMS},
        "top_k_float32_tensor_bytes_at_energy": {str(energy): kept_bytes[energy] for energy in KEPT_ENERGIES},
    }
    return figures, readable


def corrected_b(adapter: Path, subspace: Path, out: Path) -> dict[str, torch.Tensor]:
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    correct(CorrectRequest(adapters=(adapter,), out=out, subspace=SubspaceSpec(subspace=subspace, device="cpu")))
    return {k: v.double() for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k}


def b_changes(adapter: Path, reference: Path, readable: dict[str, Path], work: Path) -> dict:
    """Per form: max over modules of |B'_form - B'| / |B'| and of |B'_form - B'| / |B - B'| (Frobenius)."""
    original = {k: v.double() for k, v in load_file(str(adapter / "adapter_model.safetensors")).items()}
    exact = corrected_b(adapter, reference, work / "corrected" / "float32")
    changes = {}
    for form, folder in readable.items():
        compact = corrected_b(adapter, folder, work / "corrected" / form.replace(" ", "-"))
        of_b, of_correction = [], []
        for key, value in exact.items():
            difference = float(torch.linalg.norm(compact[key] - value))
            of_b.append(difference / max(float(torch.linalg.norm(value)), 1e-300))
            of_correction.append(difference / max(float(torch.linalg.norm(original[key] - value)), 1e-300))
        changes[form] = {"max_relative_to_b": max(of_b), "max_relative_to_correction": max(of_correction)}
    return changes


def measure_shape(shape_key: str, root: Path) -> dict:
    folder, adapters = prepare(shape_key, root, adapters=1)
    base, aligned = folder / "base", folder / "aligned"
    work = folder / "subspace-size"
    subspace = work / "subspace"
    work.mkdir(exist_ok=True)
    result = {"shape": SHAPES[shape_key].name} | estimate(base, aligned, subspace, work)
    checkpoints = folder_bytes(base) + folder_bytes(aligned)
    subspace_bytes = folder_bytes(subspace)
    result |= {"subspace_bytes": subspace_bytes, "checkpoint_bytes": checkpoints, "share": subspace_bytes / checkpoints}
    tensor_bytes = {"basis": 0, "right": 0, "singular_values": 0}
    for path in (subspace / "bases").glob("*.safetensors"):
        for name, tensor in load_file(str(path)).items():
            tensor_bytes[name] += tensor.numel() * tensor.element_size()
    result["tensor_bytes"] = tensor_bytes
    print(f"[{shape_key}] subspace {subspace_bytes / 1e6:.1f} MB, {result['share']:.1%} of the checkpoints", flush=True)
    if result["share"] > COMPACT_ABOVE:
        forms, readable = write_forms(subspace, work)
        result["compact"] = forms | {"b_change": b_changes(adapters[0], subspace, readable, work)}
        shutil.rmtree(work / "stored")
    return result


def print_table(results: list[dict]) -> None:
    header = ("form", "size", "of ckpts", "max |dB|/|B|", "max |dB|/|B-B'|")
    for r in results:
        print(f"\n{r['shape']}: checkpoints (base + aligned) {r['checkpoint_bytes'] / 1e9:.2f} GB")
        print("  {:16} {:>10} {:>9}  {:>12}  {:>16}".format(*header))
        print(f"  {'float32 (now)':16} {r['subspace_bytes'] / 1e6:8.1f}MB {r['share']:9.2%}")
        compact = r.get("compact")
        if not compact:
            continue
        for form in FORMS:
            size = compact["form_bytes"][form]
            change = compact["b_change"][form]
            print(
                f"  {form:16} {size / 1e6:8.1f}MB {size / r['checkpoint_bytes']:9.2%}  "
                f"{change['max_relative_to_b']:12.2e}  {change['max_relative_to_correction']:16.2e}"
            )
        kept = ", ".join(
            f"{float(e):.3f}: {b / 1e6:.0f} MB" for e, b in compact["top_k_float32_tensor_bytes_at_energy"].items()
        )
        print(f"  top-k float32 tensor bytes if kept up to energy {kept}")
        angle = compact["float16_max_principal_angle_deg"]
        print(
            f"  float16 basis vs float32 at k: largest principal angle {angle:.4f} deg, "
            f"|U^T U - I| <= {compact['float16_max_orthonormality_error']:.1e}; k = {compact['k_at_default_energy']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="repeatable; default 1b")
    parser.add_argument("--workdir", type=Path, default=RAW / "bench_data")
    parser.add_argument("--json-out", type=Path, default=RAW / "subspace_size.json")
    args = parser.parse_args()
    results = []
    for shape in args.shape or ["1b"]:
        results.append(measure_shape(shape, args.workdir))
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwrote {args.json_out}")


if __name__ == "__main__":
    main()
