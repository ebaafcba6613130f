"""`estimate-subspace --activations` end to end on a tiny Llama, in process: the input-side folder against a
dense float64 reference built from the model's own inputs (hooks of this test, one prompt at a time), the
refusal-direction folder against the blocks' outputs, what correct/inspect/verify make of each side, and every
bad input as one line."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("tokenizers")

from safetensors.torch import load_file  # noqa: E402

from csulora_cli.report.validate import validate  # noqa: E402
from csulora_cli.subspace.params import DEFAULT_RIDGE  # noqa: E402
from tests.helpers import assert_ok, assert_one_line_error, run_cli  # noqa: E402
from tests.tiny_lm import CORPUS, build_adapter_folder, build_model_folder  # noqa: E402

HARMFUL = CORPUS[:4]
BENIGN = CORPUS[4:7]
TARGETS = ("q_proj", "v_proj", "o_proj", "down_proj")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("activations")
    model = build_model_folder(root / "model")
    build_adapter_folder(model, root / "adapter", seed=1, targets=TARGETS, rank=2)
    (root / "harmful.txt").write_text("\n".join(HARMFUL) + "\n")
    (root / "benign.jsonl").write_text("\n".join(json.dumps({"text": p}) for p in BENIGN) + "\n")
    (root / "empty.txt").write_text("\n\n")
    return root


def _estimate(tiny, out, *extra):
    return run_cli(
        "estimate-subspace",
        tiny / "model",
        tiny / "model",
        "--adapter",
        tiny / "adapter",
        "--cache-dir",
        tiny / "cache",
        "--out",
        out,
        *extra,
    )


@pytest.fixture(scope="module")
def inputs_folder(tiny):
    out = tiny / "acts"
    assert_ok(_estimate(tiny, out, "--activations", tiny / "harmful.txt", "--contrast", tiny / "benign.jsonl",
                        "--prompt-field", "text", "--rank", "3"))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def refusal_folder(tiny):
    out = tiny / "refusal"
    assert_ok(_estimate(tiny, out, "--activations", tiny / "harmful.txt", "--contrast", tiny / "benign.jsonl",
                        "--prompt-field", "text", "--refusal-direction"))  # fmt: skip
    return out


def _model_and_tokens(tiny, prompts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny / "model")
    rows = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt")
        for p in prompts
    ]
    return model, [row if isinstance(row, torch.Tensor) else row["input_ids"] for row in rows]


def _inputs_by_module(tiny, prompts) -> dict[str, torch.Tensor]:
    """Every token's input to each targeted linear layer, prompt by prompt (no padding), in float64."""
    model, rows = _model_and_tokens(tiny, prompts)
    seen: dict[str, list[torch.Tensor]] = {}
    handles = [
        module.register_forward_hook(lambda m, args, out, name=name: seen.setdefault(name, []).append(args[0][0]))
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in TARGETS
    ]
    with torch.no_grad():
        for ids in rows:
            model(input_ids=ids)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(chunks).double() for name, chunks in seen.items()}


def _block_outputs_at_last_token(tiny, prompts) -> torch.Tensor:
    """(layers, hidden): the mean over prompts of each block's output at the prompt's last token."""
    model, rows = _model_and_tokens(tiny, prompts)
    outputs = []
    handles = [
        layer.register_forward_hook(lambda m, args, out: outputs.append(out[0] if isinstance(out, tuple) else out))
        for layer in model.model.layers
    ]
    per_prompt = []
    with torch.no_grad():
        for ids in rows:
            outputs.clear()
            model(input_ids=ids)
            per_prompt.append(torch.stack([out.reshape(-1, out.shape[-1])[-1] for out in outputs]).double())
    for handle in handles:
        handle.remove()
    return torch.stack(per_prompt).mean(dim=0)


def _projector(columns: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(columns)
    return q @ q.T


def _basis(folder, module) -> torch.Tensor:
    return load_file(folder / "bases" / f"{module}.weight.safetensors")["basis"].double()


def test_the_input_folder_holds_the_top_generalized_eigenvectors_of_the_models_inputs(tiny, inputs_folder):
    manifest = json.loads((inputs_folder / "subspace.json").read_text())
    validate(manifest)
    estimation = manifest["estimation"]
    assert estimation["kind"] == "activations" and estimation["side"] == "input"
    assert estimation["max_rank"] == 3 and estimation["ridge"] == DEFAULT_RIDGE
    assert estimation["harmful_prompts"]["prompts"] == len(HARMFUL)
    assert estimation["contrast_prompts"]["prompts"] == len(BENIGN)
    assert len(estimation["harmful_prompts"]["sha256"]) == 64
    assert manifest["sources"]["aligned"]["kind"] == "local"

    harmful, benign = _inputs_by_module(tiny, HARMFUL), _inputs_by_module(tiny, BENIGN)
    assert len(harmful) == 2 * len(TARGETS)
    for name, x in harmful.items():
        y = benign[name]
        sigma_h, sigma_c = x.T @ x / len(x), y.T @ y / len(y)
        n = sigma_c.shape[0]
        regularised = sigma_c + DEFAULT_RIDGE * float(torch.trace(sigma_c)) / n * torch.eye(n, dtype=torch.float64)
        d, e = torch.linalg.eigh(regularised)
        inverse_root = e @ torch.diag(d.rsqrt()) @ e.T
        values, w = torch.linalg.eigh(inverse_root @ sigma_h @ inverse_root)
        top = (inverse_root @ w)[:, values.argsort(descending=True)]
        basis = _basis(inputs_folder, name)
        assert basis.shape == (n, 3)
        assert torch.allclose(basis.T @ basis, torch.eye(3, dtype=torch.float64), atol=1e-5)
        assert torch.allclose(_projector(basis[:, :1]), _projector(top[:, :1]), atol=1e-3), name


def test_the_refusal_folder_holds_each_blocks_unit_difference_of_means_on_residual_writers(tiny, refusal_folder):
    manifest = json.loads((refusal_folder / "subspace.json").read_text())
    validate(manifest)
    estimation = manifest["estimation"]
    assert estimation["side"] == "output" and estimation["target"] == "refusal_direction"
    difference = _block_outputs_at_last_token(tiny, HARMFUL) - _block_outputs_at_last_token(tiny, BENIGN)
    for layer in range(2):
        for module in ("self_attn.o_proj", "mlp.down_proj"):
            basis = _basis(refusal_folder, f"model.layers.{layer}.{module}")
            expected = difference[layer] / difference[layer].norm()
            assert basis.shape == (16, 1)
            assert torch.allclose(basis[:, 0], expected, atol=1e-4)
        for module in ("self_attn.q_proj", "self_attn.v_proj"):
            assert _basis(refusal_folder, f"model.layers.{layer}.{module}").shape[1] == 0


def test_removing_the_refusal_direction_gives_i_minus_r_rt_times_b_and_leaves_other_modules(tiny, refusal_folder):
    out = tiny / "no-refusal"
    assert_ok(run_cli("correct", tiny / "adapter", "--subspace", refusal_folder, "--out", out,
                      "--method", "remove-top", "--rank", "1"))  # fmt: skip
    before = load_file(tiny / "adapter" / "adapter_model.safetensors")
    after = load_file(out / "adapter_model.safetensors")
    for key, b in before.items():
        if "lora_B" not in key:
            assert torch.equal(after[key], b)
            continue
        module = key.removeprefix("base_model.model.").split(".lora_B")[0]
        basis = _basis(refusal_folder, module)
        b = b.double()
        expected = b - basis @ (basis.T @ b)
        assert torch.allclose(after[key].double(), expected, atol=1e-5), key


def test_an_output_side_method_is_refused_on_an_input_side_folder_naming_both(tiny, inputs_folder):
    result = run_cli("correct", tiny / "adapter", "--subspace", inputs_folder, "--out", tiny / "never")
    line = assert_one_line_error(result, 2, str(inputs_folder), "input-side", "--method csulora")
    assert "none" in line
    assert not (tiny / "never").exists()


def test_inspect_reads_the_update_from_the_input_side_and_verify_checks_the_folder(tiny, inputs_folder):
    """With an input-side folder, `aligned_energy` is the share of dW = s B A that reads from the stored input
    directions: ||dW Q||^2 / ||dW||^2."""
    document = json.loads(
        assert_ok(
            run_cli("inspect", tiny / "adapter", "--subspace", inputs_folder, "--method", "none", "--json")
        ).stdout
    )
    validate(document)
    factors = load_file(tiny / "adapter" / "adapter_model.safetensors")
    modules = document["adapters"][0]["modules"]
    assert len(modules) == 2 * len(TARGETS)
    for module in modules:
        prefix = f"base_model.model.{module['module']}"
        update = factors[f"{prefix}.lora_B.weight"].double() @ factors[f"{prefix}.lora_A.weight"].double()
        q = _basis(inputs_folder, module["module"])
        assert module["subspace"]["k"] == 3
        expected = float((update @ q).square().sum() / update.square().sum())
        assert module["aligned_energy"] == pytest.approx(expected, rel=1e-4, abs=1e-7), module["module"]
    assert_ok(run_cli("verify", inputs_folder))


@pytest.mark.parametrize(
    ("extra", "code", "mentions"),
    [
        (("--contrast", "{benign}"), 2, ("--contrast", "--activations")),
        (("--refusal-direction",), 2, ("--refusal-direction", "--activations")),
        (("--prompt-field", "text"), 2, ("--prompt-field",)),
        (("--activations", "{harmful}", "--refusal-direction"), 2, ("--refusal-direction", "--contrast")),
        (("--activations", "{harmful}", "--layers", "0"), 2, ("--layers",)),
        (("--activations", "{harmful}", "--exact"), 2, ("--exact", "--activations")),
        (("--activations", "{missing}"), 1, ("missing.txt", "does not exist")),
        (("--activations", "{empty}"), 1, ("empty.txt", "no prompts")),
    ],
)
def test_bad_inputs_are_one_line_naming_the_flag_or_file(tiny, extra, code, mentions):
    names = {
        "{benign}": tiny / "benign.jsonl",
        "{harmful}": tiny / "harmful.txt",
        "{missing}": tiny / "missing.txt",
        "{empty}": tiny / "empty.txt",
    }
    args = [names.get(arg, arg) for arg in extra]
    result = _estimate(tiny, tiny / "bad-out", *args)
    assert_one_line_error(result, code, *mentions)
    assert not (tiny / "bad-out").exists()


def test_remove_inputs_gives_a_times_i_minus_q_qt_and_keeps_b_and_the_rank(tiny, inputs_folder):
    out = tiny / "no-inputs"
    assert_ok(run_cli("correct", tiny / "adapter", "--subspace", inputs_folder, "--out", out,
                      "--method", "remove-inputs", "--rank", "2"))  # fmt: skip
    before = load_file(tiny / "adapter" / "adapter_model.safetensors")
    after = load_file(out / "adapter_model.safetensors")
    assert set(after) == set(before)
    for key, tensor in before.items():
        if "lora_A" not in key:
            assert torch.equal(after[key], tensor), key
            continue
        q = _basis(inputs_folder, key.removeprefix("base_model.model.").split(".lora_A")[0])[:, :2]
        a = tensor.double()
        assert after[key].shape == tensor.shape
        assert torch.allclose(after[key].double(), a - (a @ q) @ q.T, atol=1e-5), key
    report = json.loads((out / "csulora_report.json").read_text())
    validate(report)
    assert report["method"]["name"] == "remove-inputs"
    for module in report["modules"]:
        prefix = f"base_model.model.{module['module']}"
        update = before[f"{prefix}.lora_B.weight"].double() @ before[f"{prefix}.lora_A.weight"].double()
        q = _basis(inputs_folder, module["module"])[:, :2]
        # What is removed is what the update reads from Q: ||dW Q||^2 (the LoRA scale is 1 here).
        assert module["removed_energy"] == pytest.approx(float((update @ q).square().sum()), rel=1e-4, abs=1e-7)
    assert_ok(run_cli("verify", out))


def test_remove_inputs_is_refused_on_an_output_side_folder_naming_both(tiny, refusal_folder):
    result = run_cli("correct", tiny / "adapter", "--subspace", refusal_folder, "--out", tiny / "never",
                     "--method", "remove-inputs")  # fmt: skip
    assert_one_line_error(result, 2, str(refusal_folder), "output-side", "--method remove-inputs")


def test_a_refusal_direction_for_an_adapter_without_residual_writers_is_refused(tiny):
    build_adapter_folder(tiny / "model", tiny / "qv-adapter", seed=2, targets=("q_proj", "v_proj"), rank=2)
    result = run_cli(
        "estimate-subspace", tiny / "model", tiny / "model", "--adapter", tiny / "qv-adapter", "--out",
        tiny / "qv-out", "--activations", tiny / "harmful.txt", "--contrast", tiny / "benign.jsonl",
        "--prompt-field", "text", "--refusal-direction",
    )  # fmt: skip
    assert_one_line_error(result, 2, "--refusal-direction", "residual stream")
    assert not (tiny / "qv-out").exists()


def test_correcting_an_adapter_the_refusal_folder_holds_no_direction_for_says_so(tiny, refusal_folder):
    adapter = build_adapter_folder(tiny / "model", tiny / "qv-only", seed=3, targets=("q_proj", "v_proj"), rank=2)
    result = run_cli(
        "correct", adapter, "--subspace", refusal_folder, "--out", tiny / "qv-corrected", "--method", "remove-top",
        "--rank", "1",
    )  # fmt: skip
    assert_one_line_error(result, 1, "no direction", "residual stream")
    assert not (tiny / "qv-corrected").exists()
