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
Beside each shape's runs it measures the machine's floor: the float32 GEMM rate (4096^3 `torch.mm`, and
at the finder's own 8192x2048 @ 2048x266 shape), sha256 throughput, and the FLOPs of csulora's own
products for a cold estimate (`estimation_flops`), whence the rate the cold run achieves and its share
of the GEMM rate.
Prints a table and writes scripts/out/bench_scale.json.

    python -m scripts.bench.scale --shape 1b --shape 3b --adapters 32
    python -m scripts.bench.scale --shape 1b --adapters 2 --spectrum decaying --spectrum flat  # both 1B pairs

With `--device cuda` every csulora run goes through a small wrapper (`--child-run`) that runs the CLI in
its own process and reports that process's peak GPU memory (`torch.cuda.max_memory_allocated`), and the
script also times `estimate-subspace` alone (`--estimate`, on by default with cuda): the time inside the
CLI with the CUDA context already made, against the time to read both checkpoints once. `--generate-device
cuda` draws the synthetic weights on the GPU (other numbers than the CPU's, and minutes faster at 8B):

    python -m scripts.bench.scale --shape 8b --device cuda --generate-device cuda --adapters 2
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from csulora_cli.checkpoints.local import LocalSource
from csulora_cli.subspace.estimate import EstimationParams, estimate_basis, frobenius_energy
from csulora_cli.subspace.estimating import steering_dtype
from scripts.paths import RAW, REPO

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


SPECTRA = {
    # name: (rank of the displacement, its singular values before scaling)
    "decaying": (64, lambda rank, device: torch.logspace(0, -2, rank, device=device)),
    # A flat spectrum: the energy rule (0.99) needs nearly all 1024 directions, so it keeps every one of
    # the --rank columns, as on real alignment displacements.
    "flat": (1024, lambda rank, device: torch.ones(rank, device=device)),
}


def write_pair(
    shape: Shape, folder: Path, shard_bytes: int = 1 << 30, spectrum: str = "decaying", device: str = "cpu"
) -> None:
    """bf16 shards plus index for base/ and aligned/; aligned = base + low-rank + noise per 2-D weight.

    `spectrum`: "decaying" (rank 64, singular values decaying 100x) or "flat" (rank 1024, equal values).

    The weights are drawn on `device` (a CUDA generator draws other numbers than the CPU's) and written
    from the CPU.
    """
    generator = torch.Generator(device=device).manual_seed(0)
    writers = {name: _ShardWriter(folder / name, shard_bytes) for name in ("base", "aligned")}
    for key, dims in shape.weights().items():
        if len(dims) == 1:
            ones = torch.ones(dims, dtype=torch.bfloat16)
            writers["base"].add(key, ones)
            writers["aligned"].add(key, ones)
            continue
        weight = torch.randn(dims, generator=generator, device=device) * 0.02
        writers["base"].add(key, weight.to(torch.bfloat16).cpu())
        if key.endswith("embed_tokens.weight"):
            writers["aligned"].add(key, weight.to(torch.bfloat16).cpu())
            continue
        displacement_rank, values = SPECTRA[spectrum]
        rank = min(displacement_rank, *dims)
        left = torch.randn(dims[0], rank, generator=generator, device=device)
        right = torch.randn(rank, dims[1], generator=generator, device=device)
        decay = values(rank, device)
        noise = torch.randn(dims, generator=generator, device=device)
        weight += 2e-3 * (left * decay) @ right / rank**0.5 + 2e-5 * noise
        writers["aligned"].add(key, weight.to(torch.bfloat16).cpu())
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


def shape_for(shape_key: str, layers: int | None, spectrum: str = "decaying") -> tuple[str, Shape]:
    """The shape, or the same shape with only its first `layers` blocks (smoke runs), and its data folder name.

    A pair with another spectrum than the default lives in a folder (and a shape name) of its own.
    """
    shape = SHAPES[shape_key]
    folder_key = shape_key
    if spectrum != "decaying":
        folder_key, shape = f"{folder_key}-{spectrum}", dataclasses.replace(shape, name=f"{shape.name} {spectrum}")
    if layers is None or layers == shape.layers:
        return folder_key, shape
    return f"{folder_key}-{layers}layers", dataclasses.replace(shape, name=f"{shape.name}/{layers}L", layers=layers)


def prepare(
    shape_key: str,
    root: Path,
    adapters: int,
    shape: Shape | None = None,
    generate_device: str = "cpu",
    spectrum: str = "decaying",
) -> tuple[Path, list[Path]]:
    shape = shape or SHAPES[shape_key]
    folder = root / shape_key
    marker = folder / ".complete"
    # Which generator drew the weights: data drawn on another device is other data.
    expected = "ok" if generate_device == "cpu" else f"ok generated on {generate_device}"
    if spectrum != "decaying":
        expected += f" spectrum {spectrum}"
    if not marker.exists() or marker.read_text() != expected:
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        write_pair(shape, folder, spectrum=spectrum, device=generate_device)
        print(f"[{shape_key}] wrote base/aligned in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        marker.write_text(expected)
    existing = sorted((folder / "adapters").glob("adapter-*"))
    if len(existing) < adapters:
        write_adapters(shape, folder / "adapters", adapters)
    return folder, sorted((folder / "adapters").glob("adapter-*"))[:adapters]


@dataclass
class Measured:
    wall_s: float
    peak_rss_mb: float
    returncode: int
    # What a `--child-run` wrapper reported (peak GPU memory, time inside the CLI); empty for plain runs.
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"wall_s": self.wall_s, "peak_rss_mb": self.peak_rss_mb, "returncode": self.returncode} | self.extra


TIME = Path("/usr/bin/time")


def measure(command: list[str], env: dict | None = None, child_report: Path | None = None) -> Measured:
    """Run a whole process; wall time and its own peak RSS as /usr/bin/time reports them.

    Not wait4 on a child of this script: Linux carries a process's RSS high-water mark across fork and
    exec, so a child of a benchmark that has itself read a checkpoint would report the parent's peak.
    `child_report`: the JSON file a `--child-run` wrapper writes; its figures are added, and its own
    VmHWM (the high-water mark of the process image after exec) stands in where /usr/bin/time is missing.
    """
    if child_report is not None:
        child_report.unlink(missing_ok=True)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        timed = [str(TIME), "-f", "%e %M", "-o", report.name, *command] if TIME.exists() else command
        started = time.perf_counter()
        process = subprocess.run(
            timed,
            env=env,
            cwd=REPO,  # the wrappers run as `python -m scripts.bench.scale`
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wall = time.perf_counter() - started
        fields = report.read().split()
    if process.returncode != 0:
        print(f"command failed ({process.returncode}): {' '.join(command)}\n{process.stderr[-2000:]}", file=sys.stderr)
    extra = {}
    if child_report is not None and child_report.is_file():
        extra = json.loads(child_report.read_text())
    peak_rss_mb = int(fields[-1]) / 1024 if fields else float(extra.get("vm_hwm_mb", -1.0))
    return Measured(wall, peak_rss_mb, process.returncode, extra)


def csulora(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "csulora"), *args, "--quiet"]


def wrapped_csulora(report: Path, device: str, *args: str) -> list[str]:
    """`csulora ARGS` run by this script's `--child-run` wrapper, which writes `report` (see child_run)."""
    return [sys.executable, "-m", "scripts.bench.scale", "--child-run", str(report), device, *args, "--quiet"]


def child_run(report: Path, device: str, argv: list[str]) -> None:
    """Run the csulora CLI on `argv` in this process, then write what the CLI does not report to `report`.

    in_process_s: time inside the CLI (imports done and, for cuda, the CUDA context made before it starts);
    peak_gpu_allocated_mb / peak_gpu_reserved_mb: torch's peak over the run (reset just before it);
    cuda_init_s: making the CUDA context; vm_hwm_mb: this process's peak RSS from /proc/self/status.
    """
    from csulora_cli.cli import main as cli_main

    figures: dict = {}
    cuda = device.startswith("cuda")
    if cuda:
        started = time.perf_counter()
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
        figures["cuda_init_s"] = time.perf_counter() - started
        torch.cuda.reset_peak_memory_stats()
    code: int | str | None = 0
    started = time.perf_counter()
    try:
        cli_main(argv)
    except SystemExit as exit_:
        code = exit_.code
    if cuda:
        torch.cuda.synchronize()
    figures["in_process_s"] = time.perf_counter() - started
    if cuda:
        figures["peak_gpu_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        figures["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    figures["vm_hwm_mb"] = vm_hwm_mb()
    report.write_text(json.dumps(figures))
    sys.exit(code)


def vm_hwm_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return -1.0


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


def warm_page_cache(*folders: Path) -> float:
    """Read every safetensors file of `folders` once (16 MB at a time), so the page cache holds them."""
    started = time.perf_counter()
    for folder in folders:
        for path in sorted(folder.glob("*.safetensors")):
            with open(path, "rb", buffering=0) as handle:
                while handle.read(16 << 20):
                    pass
    return time.perf_counter() - started


def read_once_seconds(base: Path, aligned: Path, keys: list[str]) -> float:
    started = time.perf_counter()
    for folder in (base, aligned):
        source = LocalSource(folder)
        for _, tensor in source.read_many(keys):
            tensor.float()
    return time.perf_counter() - started


def gemm_gflops(size: int = 4096, repeats: int = 3) -> float:
    """This machine's float32 GEMM rate: the best of `repeats` (size x size) @ (size x size) products."""
    left, right = torch.randn(size, size), torch.randn(size, size)
    torch.mm(left, right)  # warm-up: thread pool and pages
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(left, right)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def thin_gemm_gflops(rows: int = 8192, inner: int = 2048, width: int = 266, repeats: int = 5) -> float:
    """The same rate at the finder's own shape: an MLP displacement (8192 x 2048) times a 266-column sketch."""
    left, right = torch.randn(rows, inner), torch.randn(inner, width)
    torch.mm(left, right)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(left, right)
        best = min(best, time.perf_counter() - started)
    return 2 * rows * inner * width / best / 1e9


def sha256_mb_per_s(megabytes: int = 512) -> float:
    """hashlib's sha256 throughput on one large in-memory buffer (the cache key hashes what it reads)."""
    buffer = bytes(megabytes << 20)
    started = time.perf_counter()
    hashlib.sha256(buffer).hexdigest()
    return megabytes * 2**20 / 1e6 / (time.perf_counter() - started)


def estimation_flops(shape: Shape, params: EstimationParams | None = None) -> dict:
    """FLOPs of csulora's own products for a cold estimate of every targeted module (estimate.py's paths).

    Per module V (m x n), keep = min(max_rank, m, n), sketch width l = min(keep + oversample, m, n):
    - randomized finder (l <= min(m, n) / 2): Y = V S, one power round per power_iterations (V^T Q, then
      V (V^T Q)), and B = Q^T V: (2 + 2 q) products of 2 m n l flops in float32; two products with the
      small SVD's vectors (B^T U_b: 2 n l^2, Q U_b: 2 m l^2); the float64 Gram of B (2 l^2 n); (1 + q)
      Householder QRs of (m, l) with Q formed, ~4 m l^2 each.
    - nearly as wide as the matrix (k_proj / v_proj of these shapes, m <= n): the float64 Gram V V^T
      (2 m^2 n) and V^T U for the right vectors (2 m n keep).
    The energies (||V||_F^2, ~2 m n) and the eigendecompositions (l^3 order) are left out.
    """
    params = params or EstimationParams()
    q = params.power_iterations
    products = gram = qr = 0.0
    for key, dims in shape.weights().items():
        if len(dims) != 2 or key.split(".")[-2] not in TARGETS:
            continue
        m, n = dims
        keep = min(params.max_rank, m, n)
        width = min(keep + params.oversample, m, n)
        if width > 0.5 * min(m, n):
            if m <= n:
                gram += 2 * m * m * n
                products += 2 * m * n * keep
            else:  # a full SVD; not on these shapes
                products += 4 * m * n * n
            continue
        products += (2 + 2 * q) * 2 * m * n * width + 2 * n * width**2 + 2 * m * width**2
        gram += 2 * width**2 * n
        qr += (1 + q) * 4 * m * width**2
    total = products + gram + qr
    return {"products_f32": products, "gram_f64": gram, "qr": qr, "total": total}


def floor_figures() -> dict:
    """What the machine can do, measured beside each shape's runs (see print_table)."""
    return {
        "gemm_gflops": gemm_gflops(),
        "thin_gemm_gflops": thin_gemm_gflops(),
        "sha256_mb_per_s": sha256_mb_per_s(),
    }


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
        # The product's own path: a bfloat16 copy steers the finder where bfloat16 products are fast.
        steering = steering_dtype(tuple(displacement.shape), defaults, torch.device(device))
        steer = steering is not None
        low_precision = displacement.to(steering) if steer else None
        randomized = estimate_basis(
            displacement, defaults, reference_energy=reference_energy, low_precision=low_precision
        )
        exact = estimate_basis(displacement, EstimationParams(exact=True), reference_energy=reference_energy)
        k = randomized.select(0.99).rank
        cosines = torch.linalg.svdvals(randomized.basis[:, :k].T.double() @ exact.basis[:, :k].double())
        angle = float(torch.rad2deg(torch.arccos(cosines.min().clamp(-1, 1))))
        rows.append(
            {
                "module": key,
                "shape": list(displacement.shape),
                "bfloat16_steering": steer,
                "k_at_0.99": k,
                "max_principal_angle_deg": angle,
                "captured_randomized": randomized.select(0.99).captured_energy,
                "captured_exact_same_k": float(exact.singular_values[:k].double().square().sum()) / exact.total_energy,
            }
        )
    return rows


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return name


@dataclass(frozen=True)
class Options:
    """What varies a run beyond the shape: see main's arguments."""

    adapters: int
    device: str = "cpu"
    reference: bool = False
    layers: int | None = None
    generate_device: str = "cpu"
    estimate: bool = False
    accuracy: bool = True
    verbose: bool = False
    spectrum: str = "decaying"


def bench(shape_key: str, root: Path, options: Options, progress: Callable[[dict], None] = lambda _: None) -> dict:
    """One shape's figures; `progress` gets the figures so far after each step (to save partial results)."""
    folder_key, shape = shape_for(shape_key, options.layers, options.spectrum)
    folder, adapter_paths = prepare(
        folder_key, root, options.adapters, shape, options.generate_device, options.spectrum
    )
    base, aligned = folder / "base", folder / "aligned"
    runs = folder / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    cache = runs / "cache"
    env = dict(os.environ, CSULORA_CACHE=str(cache))
    device = options.device
    common = ["--base", str(base), "--aligned", str(aligned), "--device", device]
    result: dict = {"shape": shape.name, "adapters": len(adapter_paths), "device": device}
    if options.generate_device != "cpu":
        result["generated_on"] = options.generate_device

    def run(name: str, *args: str, cache_env: dict = env) -> None:
        """`csulora ARGS` as a whole process; through the wrapper on cuda, for the peak GPU memory."""
        if device.startswith("cuda") or name == "estimate":
            report = runs / f"{name}.child.json"
            result[name] = measure(wrapped_csulora(report, device, *args), cache_env, report)
        else:
            result[name] = measure(csulora(*args), cache_env)
        step_done(name)

    def step_done(name: str) -> None:
        value = result[name]
        if options.verbose:
            shown = f"{value.wall_s:.1f} s, peak RSS {value.peak_rss_mb:.0f} MB" if isinstance(value, Measured) else ""
            if isinstance(value, Measured) and "peak_gpu_allocated_mb" in value.extra:
                shown += f", peak GPU {value.extra['peak_gpu_allocated_mb']:.0f} MB"
            if isinstance(value, float):
                shown = f"{value:.1f} s"
            if isinstance(value, dict):
                shown = ", ".join(f"{key} {figure:.0f}" for key, figure in value.items())
            print(f"[{folder_key}] {name}: {shown}", file=sys.stderr, flush=True)
        progress(as_json(result))

    # The reference runs last, with both checkpoints in the page cache from the runs before it; the cold run
    # gets the same start, so that neither is timed on the disk (a cold run right after another pair's
    # reference, which evicted this pair's pages, read part of 4.9 GB from disk: 27.5 s against 21-23 s).
    result["page_cache_warm_s"] = warm_page_cache(base, aligned)
    result["floor"] = floor_figures()
    result["estimation_flops"] = estimation_flops(shape)
    step_done("floor")
    run("cold", "correct", str(adapter_paths[0]), "--out", str(runs / "cold"), *common)
    # The rate the cold run achieves on csulora's own FLOPs (estimation_flops), and its share of the GEMM rate.
    achieved = result["estimation_flops"]["total"] / result["cold"].wall_s / 1e9
    result["cold_achieved"] = {"gflops": achieved, "share_of_gemm": achieved / result["floor"]["gemm_gflops"]}
    run("warm", "correct", str(adapter_paths[0]), "--out", str(runs / "warm"), *common)
    run("batch_warm", "correct", *map(str, adapter_paths), "--out-dir", str(runs / "batch"), *common)
    keys = [k for k in shape.weights() if k.split(".")[-2] in TARGETS]
    result["read_both_once_s"] = read_once_seconds(base, aligned, keys)
    result["checkpoint_bytes"] = sum(
        path.stat().st_size for path in [*base.glob("*.safetensors"), *aligned.glob("*.safetensors")]
    )
    step_done("read_both_once_s")
    if options.estimate:
        # estimate-subspace alone, into a cache of its own: the bases the cold run estimated, no adapter
        # written; `in_process_s` leaves out the interpreter, the imports and making the CUDA context.
        estimate_env = dict(os.environ, CSULORA_CACHE=str(runs / "estimate-cache"))
        estimate_args = [str(base), str(aligned), "--adapter", str(adapter_paths[0]), "--device", device]
        run("estimate", "estimate-subspace", *estimate_args, cache_env=estimate_env)
    if options.reference:
        result["reference"] = measure(
            [
                sys.executable,
                "-m",
                "scripts.bench.scale",
                "--reference-run",
                str(base),
                str(aligned),
                str(adapter_paths[0]),
                str(runs / "reference"),
            ]
        )
        step_done("reference")
    if options.accuracy:
        # On the CPU as before; with cuda the exact SVDs run on the GPU too (an 8B module takes minutes on CPUs).
        result["accuracy"] = basis_accuracy(
            base, aligned, layer=0, device="cuda" if device.startswith("cuda") else "cpu"
        )
        if options.verbose:
            worst = max(row["max_principal_angle_deg"] for row in result["accuracy"])
            print(f"[{folder_key}] accuracy: largest principal angle {worst:.3f} deg", file=sys.stderr, flush=True)
    return as_json(result)


def as_json(result: dict) -> dict:
    return {k: (v.as_dict() if isinstance(v, Measured) else v) for k, v in result.items()}


def print_table(results: list[dict]) -> None:
    print(f"\n{'shape':14} {'run':28} {'wall s':>9} {'peak RSS MB':>12}")
    for r in results:
        for name in ("cold", "warm", "batch_warm", "reference"):
            if name in r:
                label = name if name != "batch_warm" else f"batch of {r['adapters']} (warm)"
                print(f"{r['shape']:14} {label:28} {r[name]['wall_s']:9.1f} {r[name]['peak_rss_mb']:12.0f}")
        print(f"{r['shape']:14} {'read both checkpoints once':28} {r['read_both_once_s']:9.1f}")
        if "page_cache_warm_s" in r:
            warmed = r["page_cache_warm_s"]
            print(f"  every run started with both checkpoints in the page cache (read first: {warmed:.1f} s)")
        if "estimate" in r:
            estimate = r["estimate"]
            label = "estimate-subspace (process)"
            print(f"{r['shape']:14} {label:28} {estimate['wall_s']:9.1f} {estimate['peak_rss_mb']:12.0f}")
            inside = estimate.get("in_process_s")
            if inside is not None:
                print(
                    f"  estimation {inside:.1f} s inside the CLI (imports and any CUDA context made before) = "
                    f"{inside / r['read_both_once_s']:.2f}x reading both checkpoints once (goal <= 1.5x)"
                )
        for name in ("cold", "warm", "batch_warm", "estimate"):
            if name in r and "peak_gpu_allocated_mb" in r[name]:
                print(
                    f"  peak GPU memory, {name}: {r[name]['peak_gpu_allocated_mb']:.0f} MB allocated, "
                    f"{r[name]['peak_gpu_reserved_mb']:.0f} MB reserved"
                )
        if "reference" in r:
            ref = r["reference"]["wall_s"]
            print(
                f"  cold vs reference: {ref / r['cold']['wall_s']:.1f}x faster; "
                f"batch of {r['adapters']} vs {r['adapters']} reference runs (one run x {r['adapters']}): "
                f"{ref * r['adapters'] / r['batch_warm']['wall_s']:.0f}x faster"
            )
        if "floor" in r:
            floor, flops = r["floor"], r["estimation_flops"]
            sha_s = r.get("checkpoint_bytes", 0) / 1e6 / floor["sha256_mb_per_s"]
            print(
                f"  floor: float32 GEMM {floor['gemm_gflops']:.0f} GFLOP/s (4096^3), "
                f"{floor['thin_gemm_gflops']:.0f} GFLOP/s at 8192x2048 @ 2048x266; "
                f"sha256 {floor['sha256_mb_per_s']:.0f} MB/s ({sha_s:.1f} s for both checkpoints' shards)"
            )
            if "cold" in r:
                achieved = flops["total"] / r["cold"]["wall_s"] / 1e9
                at_gemm = flops["total"] / 1e9 / floor["gemm_gflops"]
                print(
                    f"  cold estimation: {flops['total'] / 1e12:.2f} TFLOP "
                    f"(products {flops['products_f32'] / 1e12:.2f}, "
                    f"float64 Gram {flops['gram_f64'] / 1e12:.2f}, QR {flops['qr'] / 1e12:.2f}); the cold run "
                    f"achieves {achieved:.0f} GFLOP/s = {achieved / floor['gemm_gflops']:.0%} of the GEMM rate; "
                    f"floor ~ {at_gemm:.1f} s of GEMM + {r['read_both_once_s']:.1f} s read + {sha_s:.1f} s sha256"
                )
        if "accuracy" in r:
            worst = max(row["max_principal_angle_deg"] for row in r["accuracy"])
            print(f"  randomized vs exact basis (layer 0, k at energy 0.99): largest principal angle {worst:.3f} deg")


def machine() -> dict:
    described = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        described["cuda"] = {
            "device": properties.name,
            "memory_mb": properties.total_memory / 2**20,
            "torch_cuda": torch.version.cuda,
        }
    return described


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--child-run":
        child_run(Path(sys.argv[2]), sys.argv[3], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="repeatable; default 1b and 3b")
    parser.add_argument("--adapters", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=RAW / "bench_data")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="csulora's --device")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference approach")
    parser.add_argument("--reference-shapes", default="1b", help="shapes whose reference run fits in memory")
    parser.add_argument("--reference-run", nargs=4, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, help="only the first N blocks of each shape (smoke runs)")
    parser.add_argument(
        "--generate-device", default="cpu", choices=("cpu", "cuda"), help="draw the synthetic weights here"
    )
    parser.add_argument(
        "--estimate",
        action=argparse.BooleanOptionalAction,
        help="also time estimate-subspace alone, in process (default: on with a cuda device)",
    )
    parser.add_argument(
        "--spectrum",
        action="append",
        choices=sorted(SPECTRA),
        help="the displacement: decaying (rank 64, the default) or flat (rank 1024; the energy rule keeps --rank); "
        "repeatable, to bench both pairs in one run",
    )
    parser.add_argument("--no-accuracy", action="store_true", help="skip the randomized-vs-exact basis check")
    parser.add_argument("--verbose", action="store_true", help="print each step's figures to stderr as it ends")
    parser.add_argument("--json-out", type=Path, default=RAW / "bench_scale.json")
    args = parser.parse_args()
    if args.reference_run:
        reference_run(*args.reference_run)
        return
    if args.layers is not None and args.layers < 1:
        parser.error("--layers must be at least 1")
    device = resolve_device(args.device)
    generate_device = resolve_device(args.generate_device)
    shapes = args.shape or ["1b", "3b"]
    out = args.json_out
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    described = machine()

    def save(partial: list[dict]) -> None:
        payload = {"machine": described, "results": partial}
        out.write_text(json.dumps(payload, indent=2))

    for shape, spectrum in [(shape, spectrum) for shape in shapes for spectrum in args.spectrum or ["decaying"]]:
        options = Options(
            adapters=args.adapters,
            device=device,
            reference=not args.no_reference and shape in args.reference_shapes.split(","),
            layers=args.layers,
            generate_device=generate_device,
            estimate=device.startswith("cuda") if args.estimate is None else args.estimate,
            accuracy=not args.no_accuracy,
            verbose=args.verbose,
            spectrum=spectrum,
        )
        results.append(bench(shape, args.workdir, options, lambda partial: save([*results, partial])))
    print_table(results)
    save(results)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
