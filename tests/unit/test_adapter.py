"""PEFT adapter reading: scale resolution, key mapping, refusals, and byte-preserving writes."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from csulora_cli.adapters.peft import ModuleKind, read_adapter, resolve_scale
from csulora_cli.adapters.writer import AdapterWriter
from csulora_cli.checkpoints.header import read_header
from csulora_cli.errors import FormatError, MissingTensorError, ShapeMismatchError, UnsupportedAdapterError
from csulora_cli.subspace.targets import base_weight_key


def write(folder, tensors, config):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def lora(prefix, r, m, n):
    return {
        f"base_model.model.{prefix}.lora_A.weight": torch.randn(r, n),
        f"base_model.model.{prefix}.lora_B.weight": torch.randn(m, r),
    }


@pytest.mark.parametrize(
    ("config", "module", "expected"),
    [
        ({"r": 8, "lora_alpha": 16}, "model.layers.0.self_attn.q_proj", (8, 16.0, 2.0)),
        ({"r": 16, "lora_alpha": 8, "use_rslora": True}, "model.layers.0.mlp.up_proj", (16, 8.0, 2.0)),
        # A pattern matches a suffix at a module boundary, as peft.utils.other.get_pattern_key does.
        ({"r": 8, "lora_alpha": 8, "rank_pattern": {"q_proj": 4}}, "model.layers.3.self_attn.q_proj", (4, 8.0, 2.0)),
        ({"r": 8, "lora_alpha": 8, "rank_pattern": {"proj": 4}}, "model.layers.3.self_attn.q_proj", (8, 8.0, 1.0)),
        (
            {"r": 8, "lora_alpha": 8, "alpha_pattern": {r"layers\.1\..*v_proj": 32}},
            "model.layers.1.self_attn.v_proj",
            (8, 32.0, 4.0),
        ),
        (
            {"r": 8, "lora_alpha": 8, "alpha_pattern": {r"layers\.1\..*v_proj": 32}},
            "model.layers.11.self_attn.v_proj",
            (8, 8.0, 1.0),
        ),
        # The first matching pattern in file order wins.
        (
            {"r": 8, "lora_alpha": 8, "rank_pattern": {"self_attn.q_proj": 2, "q_proj": 4}},
            "model.layers.0.self_attn.q_proj",
            (2, 8.0, 4.0),
        ),
    ],
)
def test_scale_resolution_follows_peft(config, module, expected):
    scale = resolve_scale(config, module)
    assert (scale.rank, scale.alpha) == expected[:2]
    assert math.isclose(scale.value, expected[2])


def test_scale_matches_peft_get_pattern_key():
    peft_other = pytest.importorskip("peft.utils.other")
    patterns = {"q_proj": 4, r"layers\.1\..*": 2, "mlp.down_proj": 6}
    for name in [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.mlp.up_proj",
        "model.layers.2.mlp.down_proj",
        "model.layers.10.mlp.up_proj",
    ]:
        key = peft_other.get_pattern_key(patterns.keys(), name)
        expected = patterns.get(key, 8)
        assert resolve_scale({"r": 8, "lora_alpha": 8, "rank_pattern": patterns}, name).rank == expected


def test_reads_linear_embedding_and_passthrough(tmp_path):
    tensors = lora("model.layers.0.self_attn.q_proj", 4, 6, 5)
    tensors["base_model.model.model.embed_tokens.lora_embedding_A"] = torch.randn(4, 11)
    tensors["base_model.model.model.embed_tokens.lora_embedding_B"] = torch.randn(5, 4)
    tensors["base_model.model.lm_head.modules_to_save.weight"] = torch.randn(11, 5)
    adapter = read_adapter(write(tmp_path / "a", tensors, {"r": 4, "lora_alpha": 8}))
    kinds = {module.name: module.kind for module in adapter.modules}
    assert kinds == {"model.layers.0.self_attn.q_proj": ModuleKind.LINEAR, "model.embed_tokens": ModuleKind.EMBEDDING}
    assert adapter.passthrough_keys == ["base_model.model.lm_head.modules_to_save.weight"]


def test_fan_in_fan_out_marks_conv1d(tmp_path):
    tensors = lora("transformer.h.0.attn.c_attn", 2, 12, 4)
    adapter = read_adapter(write(tmp_path / "a", tensors, {"r": 2, "lora_alpha": 2, "fan_in_fan_out": True}))
    assert adapter.modules[0].kind is ModuleKind.CONV1D


def test_dora_is_refused(tmp_path):
    folder = write(tmp_path / "a", lora("m.q", 2, 3, 3), {"r": 2, "lora_alpha": 2, "use_dora": True})
    with pytest.raises(UnsupportedAdapterError, match="DoRA"):
        read_adapter(folder)


def test_rank_disagreeing_with_config_is_named(tmp_path):
    folder = write(tmp_path / "a", lora("m.q", 2, 3, 3), {"r": 4, "lora_alpha": 2})
    with pytest.raises(ShapeMismatchError, match="r = 4"):
        read_adapter(folder)


def test_missing_partner_is_named(tmp_path):
    tensors = lora("m.q", 2, 3, 3)
    tensors.pop("base_model.model.m.q.lora_B.weight")
    with pytest.raises(MissingTensorError, match="lora_A.weight"):
        read_adapter(write(tmp_path / "a", tensors, {"r": 2, "lora_alpha": 2}))


def test_bin_adapter_is_read_with_weights_only(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    tensors = lora("m.q", 2, 3, 3)
    torch.save(tensors, folder / "adapter_model.bin")
    (folder / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 2}))
    adapter = read_adapter(folder)
    assert torch.equal(adapter.factors(adapter.modules[0])[1], tensors["base_model.model.m.q.lora_B.weight"])


class RunsCode:
    """Unpickling this calls os.system: the loader must refuse it, not run it."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "a"
    folder.mkdir()
    with open(folder / "adapter_model.bin", "wb") as handle:
        pickle.dump({"base_model.model.m.q.lora_A.weight": RunsCode()}, handle)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 2}))
    with pytest.raises(FormatError, match="refused to load"):
        read_adapter(folder)
    assert not (tmp_path / "PWNED").exists()


def test_base_key_mapping():
    class Module:
        def __init__(self, name):
            self.name = name

    keys = {"model.layers.0.self_attn.q_proj.weight", "h.0.attn.c_attn.weight", "lm_head.weight"}
    assert base_weight_key(Module("model.layers.0.self_attn.q_proj"), keys) == "model.layers.0.self_attn.q_proj.weight"
    # GPT-2 checkpoints saved from the backbone drop PEFT's leading `transformer.`
    assert base_weight_key(Module("transformer.h.0.attn.c_attn"), keys) == "h.0.attn.c_attn.weight"
    with pytest.raises(MissingTensorError, match="model.layers.0.mlp.up_proj"):
        base_weight_key(Module("model.layers.0.mlp.up_proj"), keys)


def test_written_adapter_changes_only_replaced_bytes(tmp_path):
    tensors = lora("m.q", 2, 3, 4) | lora("m.v", 2, 5, 4)
    tensors = {key: value.to(torch.bfloat16) for key, value in tensors.items()}
    folder = write(tmp_path / "a", tensors, {"r": 2, "lora_alpha": 2})
    (folder / "tokenizer.json").write_text("{}")
    adapter = read_adapter(folder)
    key = "base_model.model.m.q.lora_B.weight"
    replacement = torch.zeros(3, 2, dtype=torch.bfloat16)
    out = tmp_path / "out"
    out.mkdir()
    AdapterWriter(adapter, out).replace(key, replacement)
    assert (out / "adapter_config.json").read_bytes() == (folder / "adapter_config.json").read_bytes()
    assert (out / "tokenizer.json").exists()
    written = load_file(str(out / "adapter_model.safetensors"))
    assert torch.equal(written[key], replacement)
    for other in tensors:
        if other != key:
            assert torch.equal(written[other], tensors[other])
    before, after = read_header(folder / "adapter_model.safetensors"), read_header(out / "adapter_model.safetensors")
    assert before.header_bytes == after.header_bytes
