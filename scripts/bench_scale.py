"""Scale benchmark: csulora against the approach users run instead, on synthetic Llama-shaped pairs.

Writes bf16 base/aligned checkpoints with the real module shapes of Llama-3.2-1B / 3B (Llama-3-8B with
`--shape 8b`) and a low-rank-plus-noise displacement, plus N rank-16 adapters on all seven projection
types; then times whole processes (wall time, and peak RSS from /usr/bin/time):

  a) `csulora correct` with a cold cache;  b) the same with a warm cache;
  c) one `correct` over N adapters (warm cache);
  d) the reference approach (both checkpoints loaded whole in float32, C = V V^T / ||V|| per module,
     lora_B projected), reimplemented plainly below (`--reference-run`).

It also measures the time to read the targeted tensors of both checkpoints once, and the principal
angles between the randomized basis (default settings) and an exact SVD for one module of each type.
Prints a table and writes scripts/out/bench_scale.json.

    python scripts/bench_scale.py --shape 1b --shape 3b --adapters 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from csulora_cli.checkpoints.local import LocalSource  # noqa: E402
from csulora_cli.subspace.estimate import EstimationParams, estimate_basis, frobenius_energy  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    intermediate: int
    kv_hidden: int
    vocab: int
    tied_embeddings: bool

    def weights(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, self.hidden)}
        for layer in range(self.layers):
            p = f"model.layers.{layer}"
            shapes |= {
                f"{p}.self_attn.q_proj.weight": (self.hidden, self.hidden),
                f"{p}.self_attn.k_proj.weight": (self.kv_hidden, self.hidden),
                f"{p}.self_attn.v_proj.weight": (self.kv_hidden, self.hidden),
                f"{p}.self_attn.o_proj.weight": (self.hidden, self.hidden),
                f"{p}.mlp.gate_proj.weight": (self.intermediate, self.hidden),
                f"{p}.mlp.up_proj.weight": (self.intermediate, self.hidden),
                f"{p}.mlp.down_proj.weight": (self.hidden, self.intermediate),
                f"{p}.input_layernorm.weight": (self.hidden,),
                f"{p}.post_attention_layernorm.weight": (self.hidden,),
            }
        shapes["model.norm.weight"] = (self.hidden,)
        if not self.tied_embeddings:
            shapes["lm_head.weight"] = (self.vocab, self.hidden)
        return shapes


SHAPES = {
    "1b": Shape("Llama-3.2-1B", 16, 2048, 8192, 512, 128256, True),
    "3b": Shape("Llama-3.2-3B", 28, 3072, 8192, 1024, 128256, True),
    "8b": Shape("Llama-3-8B", 32, 4096, 14336, 1024, 128256, False),
    "tiny": Shape("tiny", 2, 256, 512, 64, 1024, False),  # a smoke run of the script itself
}


def write_pair(shape: Shape, folder: Path, shard_bytes: int = 1 << 30, displacement_rank: int = 64) -> None:
    """bf16 shards plus index for base/ and aligned/; aligned = base + low-rank + noise per 2-D weight."""
    generator = torch.Generator().manual_seed(0)
    writers = {name: _ShardWriter(folder / name, shard_bytes) for name in ("base", "aligned")}
    for key, dims in shape.weights().items():
        if len(dims) == 1:
            ones = torch.ones(dims, dtype=torch.bfloat16)
            writers["base"].add(key, ones)
            writers["aligned"].add(key, ones)
            continue
        weight = torch.randn(dims, generator=generator) * 0.02
        writers["base"].add(key, weight.to(torch.bfloat16))
        if key.endswith("embed_tokens.weight"):
            writers["aligned"].add(key, weight.to(torch.bfloat16))
            continue
        rank = min(displacement_rank, *dims)
        left = torch.randn(dims[0], rank, generator=generator)
        right = torch.randn(rank, dims[1], generator=generator)
        decay = torch.logspace(0, -2, rank)  # a spread spectrum, as real alignment displacements have
        weight += 2e-3 * (left * decay) @ right / rank**0.5 + 2e-5 * torch.randn(dims, generator=generator)
        writers["aligned"].add(key, weight.to(torch.bfloat16))
    for writer in writers.values():
        writer.close()


class _ShardWriter:
    def __init__(self, folder: Path, shard_bytes: int):
        self.folder, self.shard_bytes = folder, shard_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.shards: list[dict[str, torch.Tensor]] = []
        self.weight_map: dict[str, str] = {}
        self.count = 0
        self.total = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.shard_bytes:
            self._flush()
        self.pending[key] = tensor
        self.pending_bytes += size
        self.total += size

    def _flush(self) -> None:
        self.count += 1
        name = f"model-{self.count:05d}.safetensors"
        save_file(self.pending, str(self.folder / name), metadata={"format": "pt"})
        self.weight_map |= {key: name for key in self.pending}
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        if self.pending:
            self._flush()
        # Rename to the Hub's model-0000i-of-0000N pattern now that N is known.
        renames = {}
        for index in range(1, self.count + 1):
            old, new = f"model-{index:05d}.safetensors", f"model-{index:05d}-of-{self.count:05d}.safetensors"
            (self.folder / old).rename(self.folder / new)
            renames[old] = new
        weight_map = {key: renames[name] for key, name in self.weight_map.items()}
        index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def write_adapters(shape: Shape, folder: Path, count: int, rank: int = 16) -> list[Path]:
    paths = []
    for index in range(count):
        generator = torch.Generator().manual_seed(1000 + index)
        tensors = {}
        for key, dims in shape.weights().items():
            if len(dims) != 2 or key.split(".")[-2] not in TARGETS:
                continue
            module = key.removesuffix(".weight")
            tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn(rank, dims[1], generator=generator) / (
                dims[1] ** 0.5
            )
            tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn(dims[0], rank, generator=generator) * 1e-3
        path = folder / f"adapter-{index:03d}"
        path.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = {
            "peft_type": "LORA",
            "r": rank,
            "lora_alpha": 2 * rank,
            "target_modules": list(TARGETS),
            "fan_in_fan_out": False,
            "use_rslora": False,
            "use_dora": False,
            "base_model_name_or_path": None,
        }
        (path / "adapter_config.json").write_text(json.dumps(config))
        paths.append(path)
    return paths


def prepare(shape_key: str, root: Path, adapters: int) -> tuple[Path, list[Path]]:
    shape = SHAPES[shape_key]
    folder = root / shape_key
    marker = folder / ".complete"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        write_pair(shape, folder)
        print(f"[{shape_key}] wrote base/aligned in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        marker.write_text("ok")
    existing = sorted((folder / "adapters").glob("adapter-*"))
    if len(existing) < adapters:
        write_adapters(shape, folder / "adapters", adapters)
    return folder, sorted((folder / "adapters").glob("adapter-*"))[:adapters]


@dataclass
class Measured:
    wall_s: float
    peak_rss_mb: float
    returncode: int


def measure(command: list[str], env: dict | None = None) -> Measured:
    """Run a whole process; wall time and its own peak RSS as /usr/bin/time reports them.

    Not wait4 on a child of this script: Linux carries a process's RSS high-water mark across fork and
    exec, so a child of a benchmark that has itself read a checkpoint would report the parent's peak.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        started = time.perf_counter()
        process = subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", "-o", report.name, *command],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wall = time.perf_counter() - started
        fields = report.read().split()
    if process.returncode != 0:
        print(f"command failed ({process.returncode}): {' '.join(command)}\n{process.stderr[-2000:]}", file=sys.stderr)
    return Measured(wall, int(fields[-1]) / 1024, process.returncode)


def csulora(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "csulora"), *args, "--quiet"]


def reference_run(base: Path, aligned: Path, adapter: Path, out: Path) -> None:
    """What users run today: both models whole in float32, C = V V^T / ||V||_F per module, B' = C B."""

    def load_all(folder: Path) -> dict[str, torch.Tensor]:
        tensors = {}
        for shard in sorted(folder.glob("*.safetensors")):
            tensors |= {key: value.float() for key, value in load_file(str(shard)).items()}
        return tensors

    base_weights, aligned_weights = load_all(base), load_all(aligned)
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    corrected = dict(lora)
    for key, lora_b in lora.items():
        if ".lora_B." not in key:
            continue
        weight_key = key.removeprefix("base_model.model.").replace(".lora_B.weight", ".weight")
        displacement = aligned_weights[weight_key] - base_weights[weight_key]
        projector = displacement @ displacement.T / torch.linalg.norm(displacement)
        corrected[key] = (projector @ lora_b).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(corrected, str(out / "adapter_model.safetensors"))


def read_once_seconds(base: Path, aligned: Path, keys: list[str]) -> float:
    started = time.perf_counter()
    for folder in (base, aligned):
        source = LocalSource(folder)
        for _, tensor in source.read_many(keys):
            tensor.float()
    return time.perf_counter() - started


def basis_accuracy(base: Path, aligned: Path, layer: int, device: str) -> list[dict]:
    """Largest principal angle between the default randomized basis and the exact top-k basis."""
    rows = []
    base_source, aligned_source = LocalSource(base), LocalSource(aligned)
    defaults = EstimationParams()
    for target in TARGETS:
        kind = "self_attn" if target in TARGETS[:4] else "mlp"
        key = f"model.layers.{layer}.{kind}.{target}.weight"
        displacement = (aligned_source.read(key).float() - base_source.read(key).float()).to(device)
        reference_energy = frobenius_energy(base_source.read(key).float())
        randomized = estimate_basis(displacement, defaults, reference_energy=reference_energy)
        exact = estimate_basis(displacement, EstimationParams(exact=True), reference_energy=reference_energy)
        k = randomized.select(0.99).rank
        cosines = torch.linalg.svdvals(randomized.basis[:, :k].T.double() @ exact.basis[:, :k].double())
        angle = float(torch.rad2deg(torch.arccos(cosines.min().clamp(-1, 1))))
        rows.append(
            {
                "module": key,
                "shape": list(displacement.shape),
                "k_at_0.99": k,
                "max_principal_angle_deg": angle,
                "captured_randomized": randomized.select(0.99).captured_energy,
                "captured_exact_same_k": float(exact.singular_values[:k].double().square().sum()) / exact.total_energy,
            }
        )
    return rows


def bench(shape_key: str, root: Path, adapters: int, device: str, reference: bool) -> dict:
    folder, adapter_paths = prepare(shape_key, root, adapters)
    base, aligned = folder / "base", folder / "aligned"
    runs = folder / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    cache = runs / "cache"
    env = dict(os.environ, CSULORA_CACHE=str(cache))
    common = ["--base", str(base), "--aligned", str(aligned), "--device", device]
    result: dict = {"shape": SHAPES[shape_key].name, "adapters": len(adapter_paths), "device": device}
    result["cold"] = measure(csulora("correct", str(adapter_paths[0]), "--out", str(runs / "cold"), *common), env)
    result["warm"] = measure(csulora("correct", str(adapter_paths[0]), "--out", str(runs / "warm"), *common), env)
    result["batch_warm"] = measure(
        csulora("correct", *map(str, adapter_paths), "--out", str(runs / "batch"), *common), env
    )
    keys = [k for k in SHAPES[shape_key].weights() if k.split(".")[-2] in TARGETS]
    result["read_both_once_s"] = read_once_seconds(base, aligned, keys)
    if reference:
        result["reference"] = measure(
            [
                sys.executable,
                __file__,
                "--reference-run",
                str(base),
                str(aligned),
                str(adapter_paths[0]),
                str(runs / "reference"),
            ]
        )
    result["accuracy"] = basis_accuracy(base, aligned, layer=0, device="cpu")
    return {k: (v.__dict__ if isinstance(v, Measured) else v) for k, v in result.items()}


def print_table(results: list[dict]) -> None:
    print(f"\n{'shape':14} {'run':28} {'wall s':>9} {'peak RSS MB':>12}")
    for r in results:
        for name in ("cold", "warm", "batch_warm", "reference"):
            if name in r:
                label = name if name != "batch_warm" else f"batch of {r['adapters']} (warm)"
                print(f"{r['shape']:14} {label:28} {r[name]['wall_s']:9.1f} {r[name]['peak_rss_mb']:12.0f}")
        print(f"{r['shape']:14} {'read both checkpoints once':28} {r['read_both_once_s']:9.1f}")
        if "reference" in r:
            ref = r["reference"]["wall_s"]
            print(
                f"  cold vs reference: {ref / r['cold']['wall_s']:.1f}x faster; "
                f"batch of {r['adapters']} vs {r['adapters']} reference runs (one run x {r['adapters']}): "
                f"{ref * r['adapters'] / r['batch_warm']['wall_s']:.0f}x faster"
            )
        worst = max(row["max_principal_angle_deg"] for row in r["accuracy"])
        print(f"  randomized vs exact basis (layer 0, k at energy 0.99): largest principal angle {worst:.3f} deg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="repeatable; default 1b and 3b")
    parser.add_argument("--adapters", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=REPO / "scripts" / "out" / "bench_data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference approach")
    parser.add_argument("--reference-shapes", default="1b", help="shapes whose reference run fits in memory")
    parser.add_argument("--reference-run", nargs=4, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_run:
        reference_run(*args.reference_run)
        return
    shapes = args.shape or ["1b", "3b"]
    results = []
    for shape in shapes:
        reference = not args.no_reference and shape in args.reference_shapes.split(",")
        results.append(bench(shape, args.workdir, args.adapters, args.device, reference))
    print_table(results)
    out = REPO / "scripts" / "out" / "bench_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "results": results,
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
