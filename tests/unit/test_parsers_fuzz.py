"""Parsers fail cleanly on arbitrary bytes, and every method stays finite on extreme inputs."""

from __future__ import annotations

import json
import struct

import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from csulora_cli.checkpoints.header import read_header
from csulora_cli.cli.config import read_config_file
from csulora_cli.correction.decompose import decompose_update
from csulora_cli.correction.measures import measure_factors
from csulora_cli.correction.methods import METHODS, get_method
from csulora_cli.correction.methods.base import CompanionUpdate
from csulora_cli.correction.params import CorrectionParams
from csulora_cli.errors import CsuloraError
from csulora_cli.subspace.estimate import SelectedSubspace

# --- parsers on arbitrary input ---------------------------------------------------------------

fuzz = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None
)


@fuzz
@given(data=st.binary(max_size=300))
def test_header_parser_on_random_bytes(tmp_path, data):
    path = tmp_path / "random.safetensors"
    path.write_bytes(data)
    try:
        read_header(path)
    except CsuloraError as error:
        assert str(path) in error.one_line()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@fuzz
@given(header=st.dictionaries(st.text(max_size=8), json_values, max_size=4), tail=st.binary(max_size=64))
def test_header_parser_on_random_json_headers(tmp_path, header, tail):
    encoded = json.dumps(header).encode()
    path = tmp_path / "json.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + tail)
    try:
        parsed = read_header(path)
    except CsuloraError:
        return
    for entry in parsed.entries.values():  # whatever is accepted lies inside the file
        assert parsed.data_start <= entry.start <= entry.end <= path.stat().st_size


@fuzz
@given(
    config=st.dictionaries(
        st.sampled_from(
            [
                "r",
                "lora_alpha",
                "use_rslora",
                "use_dora",
                "peft_type",
                "rank_pattern",
                "alpha_pattern",
                "fan_in_fan_out",
            ]
        ),
        json_values,
        max_size=6,
    )
)
@example(config={"r": float("inf")})  # once found by this test: int(inf) raised OverflowError
def test_adapter_config_parser_on_random_configs(tmp_path, config):
    from csulora_cli.adapters.peft import read_config, resolve_scale

    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps(config))
    try:
        parsed = read_config(path)
    except CsuloraError:
        return
    scale = resolve_scale(parsed, "model.layers.0.self_attn.q_proj")
    assert scale.rank > 0 and scale.value > 0


@fuzz
@given(text=st.text(max_size=200))
def test_yaml_config_parser_on_random_text(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    try:
        values = read_config_file(path)
    except CsuloraError:
        return
    assert isinstance(values, dict)
    yaml.safe_dump(values)


# --- the math on extreme inputs -----------------------------------------------------------------


def orthonormal(m: int, k: int, seed: int) -> torch.Tensor:
    if k == 0:
        return torch.zeros(m, 0, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(m, k, generator=generator, dtype=torch.float64))[0]


@fuzz
@given(
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    r=st.integers(1, 6),
    k=st.integers(0, 12),
    scale=st.sampled_from([1e-30, 1e-8, 1.0, 1e8, 1e30]),
    pattern=st.sampled_from(["random", "zero_b", "zero_a", "rank_one_a", "rank_one_b"]),
    lambda_=st.sampled_from([0.0, 1e-6, 3.0, 1e12, float("inf")]),
    eps=st.sampled_from([0.0, 0.05, 1.0]),
    seed=st.integers(0, 10_000),
)
def test_every_method_is_finite_on_extreme_inputs(m, n, r, k, scale, pattern, lambda_, eps, seed):
    generator = torch.Generator().manual_seed(seed)
    lora_b = torch.randn(m, r, generator=generator, dtype=torch.float64)
    lora_a = torch.randn(r, n, generator=generator, dtype=torch.float64)
    if pattern == "zero_b":
        lora_b.zero_()
    elif pattern == "zero_a":
        lora_a.zero_()
    elif pattern == "rank_one_a":
        lora_a = lora_a[:1].expand(r, n).clone()
    elif pattern == "rank_one_b":
        lora_b = lora_b[:, :1].expand(m, r).clone()
    k = min(k, m)
    basis = orthonormal(m, k, seed)
    # Right vectors for the sign-aware and two-sided forms; past n there are none (zero columns).
    right = torch.zeros(n, k, dtype=torch.float64)
    right[:, : min(k, n)] = orthonormal(n, min(k, n), seed + 1)
    subspace = SelectedSubspace(basis, torch.ones(k, dtype=torch.float64), 1.0, 1.0, True, right=right)
    update = decompose_update(lora_b, lora_a, scale)
    variants = [(get_method(name), False) for name in METHODS]
    variants += [(get_method(name), True) for name, entry in METHODS.items() if entry.two_sided]
    # merge-safety's safety adapter: another update of the same module, of another rank.
    companion = CompanionUpdate(
        torch.randn(m, 2, generator=generator, dtype=torch.float64),
        torch.randn(2, n, generator=generator, dtype=torch.float64),
        1.0,
    )
    for method, two_sided in variants:
        params = CorrectionParams(lambda_=lambda_, eps=eps, two_sided=two_sided)
        corrected = method.corrected_factors(update, subspace, params, companion)
        assert corrected.lora_b.shape[0] == m and corrected.lora_a.shape[1] == n, method.name
        assert corrected.rank == r or method.adds_rank, method.name
        finite = torch.isfinite(corrected.lora_b).all() and torch.isfinite(corrected.lora_a).all()
        assert finite, (method.name, two_sided)
        figures = measure_factors(update, corrected, subspace, eps, two_sided)
        values = [
            figures.update_energy,
            figures.corrected_energy,
            figures.removed_energy,
            figures.cosine,
            figures.attenuation_fraction,
            figures.aligned_fraction,
            figures.off_subspace_fraction,
        ]
        assert all(v == v and abs(v) != float("inf") for v in values), (method.name, values)
