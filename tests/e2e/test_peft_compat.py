"""Compatibility with real `transformers` checkpoints and real `peft` adapters, end to end through the CLI.

Tiny Llama-like and GPT-2 models are built with `transformers` and saved as several safetensors shards plus
`model.safetensors.index.json`; their "aligned" twins add a known low-rank displacement to every 2-D weight.
Adapters are made with `peft` (`get_peft_model` + `save_pretrained`), corrected by the `csulora` console
script, reloaded with `PeftModel.from_pretrained` on a fresh aligned model and merged. The merged update
of every targeted module must equal the dense float64 reference of docs/method.md section 4, computed here
from nothing but the checkpoint files and what PEFT itself loads (factors, scaling, orientation).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.helpers import CliResult, run_cli

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = [
    pytest.mark.compat,
    pytest.mark.slow,
    # PEFT and transformers chat about deprecations and auto-set options; none of it matters here.
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# The CLI defaults this file checks against (docs/method.md sections 2-4).
LAMBDA = 3.0
EPS = 0.05
ENERGY = 0.99

# Singular values of every displacement W_a - W_b (output-space form), times DISPLACEMENT_SCALE.
# Cumulative energy fractions 0.762, 0.952, 0.9997, 1: the energy rule at 0.99 picks k = 3.
DISPLACEMENT_SPECTRUM = (1.0, 0.5, 0.25, 0.02)
DISPLACEMENT_SCALE = 0.3

# Small enough that each tiny checkpoint is written as several shards plus an index.
MAX_SHARD_SIZE = "20KB"

# Everything runs in float32 (weights, the tool's SVD, PEFT's merge): relative to ||X*||_F.
RELATIVE_TOLERANCE = 1e-4

# Keep the data clear of the places where X* jumps: the class boundary o_i = eps, and the energy
# threshold that picks k. The crafted factors sit far from both; this guards against a seed that does not.
BOUNDARY_MARGIN = 1e-3

PEFT_PREFIX = "base_model.model."


# --------------------------------------------------------------------------------------------------
# Models


@dataclass
class ModelPair:
    """A saved base checkpoint, its aligned twin, and what the test knows about their displacement."""

    base: Path
    aligned: Path
    load: Callable[[Path], torch.nn.Module]
    kind: dict[str, str]  # module name -> "linear", "conv1d" or "embedding", from the transformers module class
    left: dict[str, torch.Tensor]  # module name -> the displacement's left singular vectors (m, 4), float64
    tied: dict[str, str]  # module name -> the module whose checkpoint key holds its tied weight (GPT-2 lm_head)
    _tensors: dict[Path, dict[str, torch.Tensor]] = field(default_factory=dict)

    def transposed(self, name: str) -> bool:
        """Conv1D stores (in, out) and Embedding (num_embeddings, dim): both transposed to reach (out, in)."""
        return self.kind[name] != "linear"

    def checkpoint_key(self, name: str) -> str:
        return f"{self.tied.get(name, name)}.weight"

    def checkpoint(self, folder: Path) -> dict[str, torch.Tensor]:
        """Every tensor of a sharded checkpoint, read back from the files the CLI reads."""
        if folder not in self._tensors:
            index = (folder / "model.safetensors.index.json").read_text()
            shards = sorted(set(json.loads(index)["weight_map"].values()))
            tensors: dict[str, torch.Tensor] = {}
            for shard in shards:
                tensors |= safetensors_torch.load_file(str(folder / shard))
            self._tensors[folder] = tensors
        return self._tensors[folder]


def _orthonormal(rows: int, columns: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, columns, generator=generator, dtype=torch.float64))
    return q


def _build_pair(root: Path, make_model: Callable[[], torch.nn.Module], model_class, seed: int) -> ModelPair:
    torch.manual_seed(seed)
    model = make_model().eval()
    base, aligned = root / "base", root / "aligned"
    model.save_pretrained(base, max_shard_size=MAX_SHARD_SIZE)

    generator = torch.Generator().manual_seed(seed + 1)
    spectrum = torch.tensor(DISPLACEMENT_SPECTRUM, dtype=torch.float64) * DISPLACEMENT_SCALE
    kind, left, tied = {}, {}, {}
    seen: dict[int, tuple[str, torch.Tensor, torch.Tensor]] = {}  # weight id -> first name, (u, v) as stored
    conv1d = transformers.pytorch_utils.Conv1D
    with torch.no_grad():
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
                continue  # norms
            if isinstance(module, torch.nn.Linear):
                kind[name] = "linear"
            elif isinstance(module, conv1d):
                kind[name] = "conv1d"
            elif isinstance(module, torch.nn.Embedding):
                kind[name] = "embedding"
            else:
                raise AssertionError(f"unexpected 2-D weight in {name}: {type(module).__name__}")
            if id(weight) in seen:  # the second name of a tied weight (GPT-2's lm_head is transformer.wte)
                first, row_factor, column_factor = seen[id(weight)]
                tied[name] = first
                left[name] = row_factor if kind[name] == "linear" else column_factor
                continue
            # The displacement is added as stored, u (rows) diag(spectrum) v^T (columns).
            rows, columns = weight.shape
            u, v = _orthonormal(rows, len(spectrum), generator), _orthonormal(columns, len(spectrum), generator)
            weight += ((u * spectrum) @ v.T).to(weight.dtype)
            seen[id(weight)] = (name, u, v)
            left[name] = u if kind[name] == "linear" else v
    model.save_pretrained(aligned, max_shard_size=MAX_SHARD_SIZE)

    for folder in (base, aligned):
        assert (folder / "model.safetensors.index.json").is_file()
        assert len(list(folder.glob("model-*-of-*.safetensors"))) >= 3
        assert not (folder / "model.safetensors").exists()
    return ModelPair(base, aligned, lambda folder: model_class.from_pretrained(folder).eval(), kind, left, tied)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> ModelPair:
    def make():
        config = transformers.LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            vocab_size=128,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        )
        return transformers.LlamaForCausalLM(config)

    return _build_pair(tmp_path_factory.mktemp("llama"), make, transformers.LlamaForCausalLM, seed=11)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> ModelPair:
    def make():
        config = transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64, bos_token_id=0, eos_token_id=0
        )
        return transformers.GPT2LMHeadModel(config)

    return _build_pair(tmp_path_factory.mktemp("gpt2"), make, transformers.GPT2LMHeadModel, seed=23)


@pytest.fixture(scope="module")
def gpt2_untied(tmp_path_factory) -> ModelPair:
    """GPT-2 with its own lm_head.weight, so that an adapter can mix Conv1D and Linear targets."""

    def make():
        config = transformers.GPT2Config(
            n_embd=32,
            n_layer=2,
            n_head=4,
            vocab_size=128,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
            tie_word_embeddings=False,
        )
        return transformers.GPT2LMHeadModel(config)

    return _build_pair(tmp_path_factory.mktemp("gpt2_untied"), make, transformers.GPT2LMHeadModel, seed=29)


# --------------------------------------------------------------------------------------------------
# Adapters


def _lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """PEFT's LoRA layers by module name, without PEFT's `base_model.model.` prefix."""
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            assert name.startswith(PEFT_PREFIX), name
            layers[name.removeprefix(PEFT_PREFIX)] = module
    return layers


def _factors(layer: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) of the `default` adapter in output-space form: B (m, r), A (r, n) (docs/method.md section 1)."""
    if "default" in layer.lora_embedding_A:
        return layer.lora_embedding_B["default"], layer.lora_embedding_A["default"]
    return layer.lora_B["default"].weight, layer.lora_A["default"].weight


def _crafted_factors(left: torch.Tensor, in_features: int, rank: int, generator: torch.Generator):
    """Factors whose update has known directions: fully aligned, half in, off, and 19% in the subspace.

    B's columns are orthogonal and A's rows orthonormal, so the u_i of s B A are B's normalised columns:
    u_1 = sqrt(0.97) L_1 + sqrt(0.03) C_4 (a = 0.97: o = 0.03 <= eps, so w = 0 although o > 0),
    u_2 = (L_2 + C_1) / sqrt 2 (a = 1/2), u_3 = C_2 (a = 0), u_4 = cos t C_3 + sin t L_3 (a = sin^2 t
    when k >= 3, else 0), with L the displacement's left singular vectors and C orthonormal and
    orthogonal to them.
    """
    rows = left.shape[0]
    complement = torch.randn(rows, 4, generator=generator, dtype=torch.float64)
    complement, _ = torch.linalg.qr(complement - left @ (left.T @ complement))
    angle = 0.45
    columns = [
        math.sqrt(0.97) * left[:, 0] + math.sqrt(0.03) * complement[:, 3],
        (left[:, 1] + complement[:, 0]) / math.sqrt(2.0),
        complement[:, 1],
        math.cos(angle) * complement[:, 2] + math.sin(angle) * left[:, 2],
    ]
    norms = torch.tensor([1.0, 0.8, 0.6, 0.45], dtype=torch.float64)
    lora_b = torch.stack(columns[:rank], dim=1) * norms[:rank]
    lora_a = _orthonormal(in_features, rank, generator).T
    return lora_b, lora_a


def _is_crafted(name: str) -> bool:
    """Crafted factors everywhere but in the second block, which gets dense random ones."""
    return re.search(r"\.(layers|h)\.1\.", name) is None


def _make_adapter(pair: ModelPair, folder: Path, config, *, seed: int) -> Path:
    """Train-free PEFT adapter on the base model: non-zero factors, perturbed modules_to_save, saved."""
    model = peft.get_peft_model(pair.load(pair.base), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, layer in _lora_layers(model).items():
            lora_b, lora_a = _factors(layer)
            rank, in_features = lora_a.shape
            if _is_crafted(name) and rank <= 4:
                new_b, new_a = _crafted_factors(pair.left[name], in_features, rank, generator)
            else:
                new_b = torch.randn(lora_b.shape, generator=generator, dtype=torch.float64) * 0.5
                new_a = torch.randn(lora_a.shape, generator=generator, dtype=torch.float64) / math.sqrt(in_features)
            lora_b.copy_(new_b)
            lora_a.copy_(new_a)
        for name, parameter in model.named_parameters():
            if ".modules_to_save.default." in name:  # trained copies differ from the base
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    model.save_pretrained(folder)  # save_embedding_layers="auto", as users save
    assert (folder / "adapter_model.safetensors").is_file()
    return folder


# --------------------------------------------------------------------------------------------------
# Running the CLI and reading results back through PEFT


def _csulora(*args) -> CliResult:
    """The CLI in process: the round trip through PEFT is the point here, not the process."""
    return run_cli(*args)


def _correct(pair: ModelPair, adapter: Path, out: Path, rank: int) -> None:
    result = _csulora(
        "correct", adapter, "--base", pair.base, "--aligned", pair.aligned, "--out", out,
        "--rank", rank, "--exact", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert result.rc == 0, result.stderr
    assert (out / "adapter_model.safetensors").is_file()


@dataclass(frozen=True)
class LoadedModule:
    """One LoRA module as PEFT loads it onto the aligned model, in output-space form, float64."""

    lora_b: torch.Tensor
    lora_a: torch.Tensor
    scale: float
    rank: int
    alpha: float
    merged_delta: torch.Tensor  # weight after merge_and_unload minus the weight before


def _load_with_peft(pair: ModelPair, adapter: Path) -> tuple[dict[str, LoadedModule], torch.nn.Module]:
    """Load the adapter on a fresh aligned model as a user would, then merge it; returns the merged model."""
    model = peft.PeftModel.from_pretrained(pair.load(pair.aligned), str(adapter))
    layers = _lora_layers(model)
    before = {}
    for name, layer in layers.items():
        lora_b, lora_a = _factors(layer)
        before[name] = (
            lora_b.detach().double().clone(),
            lora_a.detach().double().clone(),
            float(layer.scaling["default"]),
            int(layer.r["default"]),
            float(layer.lora_alpha["default"]),
            layer.get_base_layer().weight.detach().double().clone(),
        )
    merged = model.merge_and_unload()
    modules = {}
    for name, (lora_b, lora_a, scale, rank, alpha, weight) in before.items():
        delta = merged.get_submodule(name).weight.detach().double() - weight
        if pair.transposed(name):
            delta = delta.T
        modules[name] = LoadedModule(lora_b, lora_a, scale, rank, alpha, delta)
    return modules, merged


@dataclass(frozen=True)
class Reference:
    update: torch.Tensor  # dW = s B A
    corrected: torch.Tensor  # X*
    aligned_fractions: torch.Tensor  # a_i of the directions that carry energy
    k: int


def _reference(pair: ModelPair, name: str, module: LoadedModule, max_rank: int) -> Reference:
    """docs/method.md sections 2-4 densely in float64: V, exact SVD, k, dW, its SVD, a_i, w_i, f_i, X*."""
    key = pair.checkpoint_key(name)
    base, aligned = pair.checkpoint(pair.base), pair.checkpoint(pair.aligned)
    assert key in base and key in aligned, f"checkpoint key {key} for PEFT module {name}"
    displacement = aligned[key].double() - base[key].double()
    if pair.transposed(name):
        displacement = displacement.T
    left, singular, _ = torch.linalg.svd(displacement, full_matrices=False)
    cumulative = torch.cumsum(singular.square(), dim=0) / displacement.square().sum()
    k = min(max_rank, int(torch.nonzero(cumulative >= ENERGY)[0, 0]) + 1)
    assert (cumulative - ENERGY).abs().min() > BOUNDARY_MARGIN, "energy threshold too close to call"
    basis = left[:, :k]
    projector = basis @ basis.T

    update = module.scale * module.lora_b @ module.lora_a
    u, sigma, vh = torch.linalg.svd(update, full_matrices=False)
    aligned_fraction = (basis.T @ u).square().sum(dim=0)
    off = 1.0 - aligned_fraction
    weight = torch.where(off <= EPS, torch.zeros_like(off), off)
    factors = 1.0 / (1.0 + LAMBDA * weight)
    directions = projector @ u + (u - projector @ u) * factors
    corrected = (directions * sigma) @ vh

    carries = sigma > 1e-8 * sigma.max()
    assert ((off - EPS).abs()[carries] > BOUNDARY_MARGIN).all(), f"{name}: a direction sits on o_i = eps"
    return Reference(update, corrected, aligned_fraction[carries], k)


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().view(torch.uint8).numpy().tobytes()


def _b_key(key: str) -> bool:
    return re.search(r"\.(lora_B\.weight|lora_embedding_B)$", key) is not None


def _check_files(original: Path, corrected: Path) -> None:
    """Config byte-identical; every tensor but lora_B / lora_embedding_B byte-identical; same keys."""
    assert (corrected / "adapter_config.json").read_bytes() == (original / "adapter_config.json").read_bytes()
    before = safetensors_torch.load_file(str(original / "adapter_model.safetensors"))
    after = safetensors_torch.load_file(str(corrected / "adapter_model.safetensors"))
    assert sorted(before) == sorted(after)
    changed = []
    for key, tensor in before.items():
        assert after[key].dtype == tensor.dtype and after[key].shape == tensor.shape, key
        if _b_key(key):
            changed.append(not torch.equal(after[key], tensor))
        else:
            assert _tensor_bytes(after[key]) == _tensor_bytes(tensor), f"{key} changed"
    assert any(changed), "no lora_B tensor was corrected"
    assert (corrected / "csulora_report.json").is_file()


def _check_corrected(pair: ModelPair, original: Path, corrected: Path, max_rank: int) -> dict[str, Reference]:
    """Effective update of every module under PEFT == X* of the dense reference; A, r, s unchanged."""
    _check_files(original, corrected)
    loaded_before, _ = _load_with_peft(pair, original)
    loaded_after, _ = _load_with_peft(pair, corrected)
    assert sorted(loaded_before) == sorted(loaded_after)
    references = {}
    removed = total = 0.0
    for name, module in loaded_before.items():
        reference = _reference(pair, name, module, max_rank)
        # This file's orientation conventions agree with PEFT's own merge of the original adapter.
        torch.testing.assert_close(module.merged_delta, reference.update, rtol=0, atol=1e-5 * reference.update.norm())
        after = loaded_after[name]
        assert torch.equal(after.lora_a, module.lora_a), f"{name}: A changed"
        assert (after.rank, after.scale) == (module.rank, module.scale), f"{name}: r or s changed"
        error = (after.merged_delta - reference.corrected).norm() / reference.corrected.norm()
        assert error < RELATIVE_TOLERANCE, (
            f"{name}: merged update differs from X* by {error:.2e} of ||X*|| (k = {reference.k}, "
            f"s = {module.scale}, a = {reference.aligned_fractions.tolist()})"
        )
        removed += float((reference.update - reference.corrected).square().sum())
        total += float(reference.update.square().sum())
        references[name] = reference
    assert removed > 0.05 * total, "the correction barely changes these updates: the test would not discriminate"
    _check_report(pair, corrected, loaded_before, references)
    return references


def _check_report(
    pair: ModelPair, corrected: Path, loaded: dict[str, LoadedModule], references: dict[str, Reference]
) -> None:
    """The report's r, alpha, s, k and energies match PEFT and the dense reference (docs/method.md section 6).

    B' = T B does not depend on s (the u_i of s B A do not), so a wrongly resolved scale (rsLoRA,
    alpha_pattern) leaves the corrected adapter right and shows only here, in ||dW||^2 and ||X*||^2.
    """
    report = json.loads((corrected / "csulora_report.json").read_text())
    modules = {entry["module"]: entry for entry in report["modules"]}
    assert sorted(modules) == sorted(references)
    for name, entry in modules.items():
        module, reference = loaded[name], references[name]
        assert (entry["base_key"], entry["kind"]) == (pair.checkpoint_key(name), pair.kind[name]), name
        assert entry["rank"] == module.rank, f"{name}: report r {entry['rank']}, PEFT r {module.rank}"
        assert entry["alpha"] == pytest.approx(module.alpha, rel=1e-12), f"{name}: alpha"
        assert entry["scale"] == pytest.approx(module.scale, rel=1e-6), (
            f"{name}: report s = {entry['scale']}, PEFT s = {module.scale}"
        )
        assert entry["subspace"]["k"] == reference.k, name
        update_energy = float(reference.update.square().sum())
        corrected_energy = float(reference.corrected.square().sum())
        assert entry["update_energy"] == pytest.approx(update_energy, rel=RELATIVE_TOLERANCE), name
        assert entry["corrected_energy"] == pytest.approx(corrected_energy, rel=RELATIVE_TOLERANCE), name


def _assert_all_classes(references: dict[str, Reference]) -> None:
    """The crafted modules exercise w_i = 0 with o_i > 0 (fully aligned), partial and off-subspace directions."""
    fractions = torch.cat([reference.aligned_fractions for reference in references.values()])
    assert ((fractions >= 1.0 - EPS) & (fractions < 1.0 - 0.01)).any(), "no fully aligned direction with o_i > 0"
    assert (fractions <= EPS).any()
    assert ((fractions > EPS) & (fractions < 1.0 - EPS)).any()


# --------------------------------------------------------------------------------------------------
# Tests


def test_plain_lora_on_q_and_v(llama, tmp_path):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = _make_adapter(llama, tmp_path / "adapter", config, seed=1)
    out = tmp_path / "corrected"
    # --rank 2 caps k below the energy rule's 3.
    _correct(llama, adapter, out, rank=2)
    references = _check_corrected(llama, adapter, out, max_rank=2)
    assert sorted(references) == [
        f"model.layers.{layer}.self_attn.{proj}" for layer in (0, 1) for proj in ("q_proj", "v_proj")
    ]
    assert {reference.k for reference in references.values()} == {2}
    _assert_all_classes(references)


def test_rslora_with_rank_and_alpha_patterns(llama, tmp_path):
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        use_rslora=True,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        rank_pattern={"v_proj": 2, r"layers\.1\.mlp\.down_proj": 6, "model.layers.0.mlp.up_proj": 3},
        alpha_pattern={"o_proj": 5, "layers.0.self_attn.q_proj": 3, r"layers\.1\.mlp\.(gate|up)_proj": 12},
        init_lora_weights=False,
    )
    adapter = _make_adapter(llama, tmp_path / "adapter", config, seed=2)
    out = tmp_path / "corrected"
    _correct(llama, adapter, out, rank=8)
    references = _check_corrected(llama, adapter, out, max_rank=8)
    assert len(references) == 14
    assert {reference.k for reference in references.values()} == {3}
    _assert_all_classes(references)

    # PEFT resolved the patterns (the reference used PEFT's own r and s): spot-check they took effect.
    loaded, _ = _load_with_peft(llama, out)
    expected = {
        "model.layers.0.self_attn.q_proj": (4, 3 / 2),
        "model.layers.1.self_attn.q_proj": (4, 8 / 2),
        "model.layers.0.self_attn.v_proj": (2, 8 / math.sqrt(2)),
        "model.layers.0.self_attn.o_proj": (4, 5 / 2),
        "model.layers.0.mlp.up_proj": (3, 8 / math.sqrt(3)),
        "model.layers.1.mlp.up_proj": (4, 12 / 2),
        "model.layers.1.mlp.down_proj": (6, 8 / math.sqrt(6)),
        "model.layers.0.mlp.down_proj": (4, 8 / 2),
    }
    for name, (rank, scale) in expected.items():
        assert loaded[name].rank == rank and loaded[name].scale == pytest.approx(scale), name


def test_gpt2_conv1d_fan_in_fan_out(gpt2, tmp_path):
    config = peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True, init_lora_weights=False
    )
    adapter = _make_adapter(gpt2, tmp_path / "adapter", config, seed=3)
    out = tmp_path / "corrected"
    _correct(gpt2, adapter, out, rank=8)
    references = _check_corrected(gpt2, adapter, out, max_rank=8)
    # Conv1D modules are stored (in, out); the square attn.c_proj is where a missed transpose hides.
    assert sorted(references) == sorted(
        f"transformer.h.{layer}.{module}"
        for layer in (0, 1)
        for module in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    )
    assert {gpt2.kind[name] for name in references} == {"conv1d"}
    _assert_all_classes(references)


def test_embedding_and_lm_head(llama, tmp_path):
    # Same stored shape (128, 32), opposite orientations: embed_tokens' output space is dim, lm_head's vocab.
    config = peft.LoraConfig(r=4, lora_alpha=4, target_modules=["embed_tokens", "lm_head"], init_lora_weights=False)
    # PEFT's default save_embedding_layers="auto" also stores the base embedding and lm_head weights.
    adapter = _make_adapter(llama, tmp_path / "adapter", config, seed=4)
    keys = set(safetensors_torch.load_file(str(adapter / "adapter_model.safetensors")))
    assert {
        "base_model.model.model.embed_tokens.lora_embedding_A",
        "base_model.model.model.embed_tokens.lora_embedding_B",
        "base_model.model.model.embed_tokens.base_layer.weight",
        "base_model.model.lm_head.lora_A.weight",
        "base_model.model.lm_head.lora_B.weight",
        "base_model.model.lm_head.base_layer.weight",
    } == keys
    out = tmp_path / "corrected"
    _correct(llama, adapter, out, rank=8)
    references = _check_corrected(llama, adapter, out, max_rank=8)
    assert sorted(references) == ["lm_head", "model.embed_tokens"]
    assert (llama.kind["model.embed_tokens"], llama.kind["lm_head"]) == ("embedding", "linear")
    _assert_all_classes(references)


def test_modules_to_save_are_copied_byte_for_byte(llama, tmp_path):
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        modules_to_save=["lm_head", "norm"],
        init_lora_weights=False,
    )
    adapter = _make_adapter(llama, tmp_path / "adapter", config, seed=5)
    out = tmp_path / "corrected"
    _correct(llama, adapter, out, rank=8)
    _check_corrected(llama, adapter, out, max_rank=8)

    # PEFT saves modules_to_save under their own names (no `modules_to_save.default`); "norm" matches by
    # suffix, so the layer norms come along with the final norm.
    before = safetensors_torch.load_file(str(adapter / "adapter_model.safetensors"))
    after = safetensors_torch.load_file(str(out / "adapter_model.safetensors"))
    saved = [key for key in before if "lora_" not in key]
    layer_norms = [
        f"base_model.model.model.layers.{i}.{norm}.weight"
        for i in (0, 1)
        for norm in ("input_layernorm", "post_attention_layernorm")
    ]
    assert sorted(saved) == sorted(
        ["base_model.model.lm_head.weight", "base_model.model.model.norm.weight", *layer_norms]
    )
    for key in saved:
        assert _tensor_bytes(after[key]) == _tensor_bytes(before[key]), key
    # ... and PEFT puts them back: the merged model's lm_head is the adapter's copy, not the aligned one.
    _, merged = _load_with_peft(llama, out)
    assert torch.equal(merged.lm_head.weight, before["base_model.model.lm_head.weight"])
    assert torch.equal(merged.model.norm.weight, before["base_model.model.model.norm.weight"])


def test_dora_adapter_is_refused(llama, tmp_path):
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True, init_lora_weights=False
    )
    adapter = _make_adapter(llama, tmp_path / "adapter", config, seed=6)
    assert any(
        key.endswith(".lora_magnitude_vector")
        for key in safetensors_torch.load_file(str(adapter / "adapter_model.safetensors"))
    )
    work = tmp_path / "work"
    work.mkdir()
    out = work / "corrected"
    result = _csulora(
        "correct", adapter, "--base", llama.base, "--aligned", llama.aligned, "--out", out,
        "--rank", 8, "--exact", "--device", "cpu",
    )  # fmt: skip
    assert result.rc == 1, (result.rc, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert "dora" in lines[0].lower()
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert list(work.iterdir()) == [], "a temporary folder was left behind"


@pytest.mark.parametrize(
    "targets",
    [["c_attn", "c_proj", "c_fc", "lm_head"], ["attn.c_proj", "lm_head"]],
    ids=["all-conv1d-shape-error", "square-conv1d-silent"],
)
def test_gpt2_conv1d_mixed_with_a_linear_lm_head(gpt2_untied, tmp_path, targets):
    """Orientation is decided per module from the stored shape, not from the adapter-wide flag."""
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, fan_in_fan_out=True, init_lora_weights=False)
    adapter = _make_adapter(gpt2_untied, tmp_path / "adapter", config, seed=7)
    # PEFT decides fan_in_fan_out per layer from the base module class, and rewrites the config flag as it
    # goes: the Linear lm_head comes last, so the saved adapter says false although the Conv1D layers
    # are (in, out) and PEFT loads them so.
    if json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is not False:
        pytest.skip("this PEFT saves fan_in_fan_out: true for a mixed Conv1D/Linear adapter")
    out = tmp_path / "corrected"
    _correct(gpt2_untied, adapter, out, rank=8)
    references = _check_corrected(gpt2_untied, adapter, out, max_rank=8)
    assert {gpt2_untied.kind[name] for name in references} == {"conv1d", "linear"}


def test_gpt2_tied_lm_head(gpt2, tmp_path):
    """A tied head is corrected against the input embedding's weight, read as a Linear (vocab, dim)."""
    # GPT-2 ties lm_head to transformer.wte: the checkpoint has no lm_head.weight at all.
    if "lm_head.weight" in gpt2.checkpoint(gpt2.base) or gpt2.tied != {"lm_head": "transformer.wte"}:
        pytest.skip("this transformers does not tie GPT-2's lm_head to transformer.wte in the checkpoint")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "lm_head"], init_lora_weights=False)
    adapter = _make_adapter(gpt2, tmp_path / "adapter", config, seed=8)
    out = tmp_path / "corrected"
    _correct(gpt2, adapter, out, rank=8)
    references = _check_corrected(gpt2, adapter, out, max_rank=8)
    assert "lm_head" in references
