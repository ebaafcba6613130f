"""`csulora demo --keep DIR` writes models transformers loads and adapters PEFT loads, from any directory.

The demo is where a newcomer starts: its models must load as the Llama they are shaped like, and the
adapter's `base_model_name_or_path` must find the aligned model from another working directory (a
relative path there becomes a Hub lookup).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from tests.helpers import assert_ok, load_tensors, model_tensor, run_cli

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

pytestmark = [
    pytest.mark.compat,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo kept under a *relative* --keep path, as a user would type it."""
    work = tmp_path_factory.mktemp("demo-work")
    assert_ok(run_cli("demo", "--keep", "demo", cwd=work))
    return work / "demo"


@pytest.fixture
def elsewhere(tmp_path):
    with contextlib.chdir(tmp_path):
        yield tmp_path


@pytest.mark.parametrize("name", ["base", "aligned"])
def test_models_load_with_transformers_as_llama(demo, elsewhere, name):
    model = transformers.AutoModelForCausalLM.from_pretrained(demo / name)
    assert isinstance(model, transformers.LlamaForCausalLM)
    state = model.state_dict()
    for key in ("model.layers.1.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight", "lm_head.weight"):
        assert torch.equal(state[key], model_tensor(demo / name, key)), key


@pytest.mark.parametrize("adapter", ["adapter", "demo-run/corrected"])
def test_adapters_load_onto_the_aligned_model_from_another_directory(demo, elsewhere, adapter):
    config = json.loads((demo / adapter / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_absolute()
    # Reads base_model_name_or_path itself, as a user's `from_pretrained(adapter)` does.
    model = peft.AutoPeftModelForCausalLM.from_pretrained(demo / adapter)
    state = model.state_dict()
    weight = "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"
    assert torch.equal(state[weight], model_tensor(demo / "aligned", "model.layers.0.self_attn.q_proj.weight"))
    saved = load_tensors(demo / adapter / "adapter_model.safetensors")
    key = "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"
    assert torch.equal(state[key.replace(".lora_B.", ".lora_B.default.")], saved[key])
