"""Builders of tiny checkpoints and adapters: what the demo, the tests and the scripts all make models with.

A Llama-shaped base/aligned pair as bf16 shards with an index (and a `config.json` transformers loads as
a `LlamaForCausalLM`), and PEFT-format LoRA adapters, written with safetensors alone: no network, no
transformers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' `save_file`, then the umask's permissions: it creates files with mode 600, and a demo
    or test model must be readable by whoever else reads what csulora writes beside it."""
    save_file(tensors, str(path), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


@dataclass(frozen=True)
class TinyLlama:
    """Module shapes of a Llama block, scaled down."""

    layers: int = 2
    hidden: int = 64
    intermediate: int = 128
    kv_hidden: int = 32
    vocab: int = 256
    heads: int = 4

    def config(self) -> dict:
        """A transformers `LlamaConfig` whose model has exactly `weight_shapes()` (untied head, no biases)."""
        head_dim = self.hidden // self.heads
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_hidden // head_dim,
            "head_dim": head_dim,
            "vocab_size": self.vocab,
            "max_position_embeddings": 128,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        }

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, self.hidden)}
        for layer in range(self.layers):
            prefix = f"model.layers.{layer}"
            shapes |= {
                f"{prefix}.self_attn.q_proj.weight": (self.hidden, self.hidden),
                f"{prefix}.self_attn.k_proj.weight": (self.kv_hidden, self.hidden),
                f"{prefix}.self_attn.v_proj.weight": (self.kv_hidden, self.hidden),
                f"{prefix}.self_attn.o_proj.weight": (self.hidden, self.hidden),
                f"{prefix}.mlp.gate_proj.weight": (self.intermediate, self.hidden),
                f"{prefix}.mlp.up_proj.weight": (self.intermediate, self.hidden),
                f"{prefix}.mlp.down_proj.weight": (self.hidden, self.intermediate),
                f"{prefix}.input_layernorm.weight": (self.hidden,),
                f"{prefix}.post_attention_layernorm.weight": (self.hidden,),
            }
        shapes |= {"model.norm.weight": (self.hidden,), "lm_head.weight": (self.vocab, self.hidden)}
        return shapes


def write_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], shards: int = 2) -> None:
    """Save as `model-0000i-of-0000N.safetensors` shards plus `model.safetensors.index.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(tensors)
    per_shard = -(-len(keys) // shards)
    weight_map = {}
    total = 0
    for index in range(shards):
        name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = {key: tensors[key].contiguous() for key in keys[index * per_shard : (index + 1) * per_shard]}
        save_tensors(part, folder / name)
        weight_map |= {key: name for key in part}
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def make_model_pair(
    shape: TinyLlama, seed: int = 0, displacement_rank: int = 4, noise: float = 1e-4, dtype=torch.bfloat16
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Base weights and an aligned twin displaced by a low-rank-plus-noise matrix per 2-D weight."""
    generator = torch.Generator().manual_seed(seed)
    base, aligned = {}, {}
    for key, dims in shape.weight_shapes().items():
        if len(dims) == 1:
            base[key] = aligned[key] = torch.ones(dims, dtype=dtype)
            continue
        weight = torch.randn(dims, generator=generator) * 0.02
        left = torch.randn(dims[0], displacement_rank, generator=generator)
        right = torch.randn(displacement_rank, dims[1], generator=generator)
        displacement = 0.01 * (left @ right) / displacement_rank + noise * torch.randn(dims, generator=generator)
        base[key] = weight.to(dtype)
        aligned[key] = (weight + displacement).to(dtype)
    return base, aligned


def write_adapter(
    folder: Path,
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]],
    config: dict,
) -> None:
    """A PEFT-format adapter: modules maps PEFT module names to (A: (r, n), B: (m, r))."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (lora_a, lora_b) in modules.items():
        embedding = "embed" in name
        a_key = "lora_embedding_A" if embedding else "lora_A.weight"
        b_key = "lora_embedding_B" if embedding else "lora_B.weight"
        tensors[f"base_model.model.{name}.{a_key}"] = lora_a.contiguous()
        tensors[f"base_model.model.{name}.{b_key}"] = lora_b.contiguous()
    save_tensors(tensors, folder / "adapter_model.safetensors")
    full_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in modules}),
        "base_model_name_or_path": None,
        "inference_mode": True,
    } | config
    (folder / "adapter_config.json").write_text(json.dumps(full_config, indent=2))


def make_adapter_factors(
    shape: TinyLlama, targets: tuple[str, ...], rank: int = 8, seed: int = 1, dtype=torch.float32
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    shapes = shape.weight_shapes()
    modules = {}
    for layer in range(shape.layers):
        for key, dims in shapes.items():
            if not key.startswith(f"model.layers.{layer}.") or key.split(".")[-2] not in targets:
                continue
            out_features, in_features = dims
            lora_a = torch.randn(rank, in_features, generator=generator) / in_features**0.5
            lora_b = torch.randn(out_features, rank, generator=generator) * 0.01
            modules[key.removesuffix(".weight")] = (lora_a.to(dtype), lora_b.to(dtype))
    return modules


def build_demo(root: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write base/, aligned/ and adapter/ under `root`; returns their paths.

    The models load with transformers' `AutoModelForCausalLM`, and the adapter names the aligned model by
    its absolute path, so PEFT finds it from any working directory (a relative one would become a Hub id).
    """
    shape = TinyLlama()
    base_weights, aligned_weights = make_model_pair(shape, seed)
    base, aligned, adapter = root / "base", root / "aligned", root / "adapter"
    for folder, weights in ((base, base_weights), (aligned, aligned_weights)):
        write_checkpoint(folder, weights)
        (folder / "config.json").write_text(json.dumps(shape.config(), indent=2) + "\n")
    targets = ("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj")
    factors = make_adapter_factors(shape, targets, seed=seed + 1)
    # Half of each update writes along the directions alignment moved, half elsewhere, so the report
    # shows all three direction classes.
    for name, (_, lora_b) in factors.items():
        key = f"{name}.weight"
        displacement = aligned_weights[key].float() - base_weights[key].float()
        safety_directions = torch.linalg.svd(displacement, full_matrices=False)[0][:, :2]
        half = lora_b.shape[1] // 2
        lora_b[:, :half] = safety_directions @ torch.randn(2, half, generator=torch.Generator().manual_seed(seed))
        lora_b[:, :half] *= 0.05
    write_adapter(
        adapter, factors, {"target_modules": list(targets), "base_model_name_or_path": str(aligned.resolve())}
    )
    return base, aligned, adapter
