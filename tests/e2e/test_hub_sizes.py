"""A Hub (or mirror) whose file listing gives no sizes: a model is still read, sizes taken from the answers.

In process: the real `huggingface_hub` client, pointed at the local stand-in (`hub_online` fixture), with
the stand-in's `omit_listing_sizes` knob on; tensors are compared with a local read of the same files.
"""

from __future__ import annotations

import pytest
import torch

from csulora_cli.checkpoints.hub.client import HubClient
from csulora_cli.checkpoints.hub.options import HubOptions
from csulora_cli.checkpoints.hub.refs import parse_hub_ref
from csulora_cli.checkpoints.hub.source import HubSource
from csulora_cli.checkpoints.local import LocalSource
from csulora_cli.events import SilentEvents
from csulora_cli.testing.builders import TinyLlama, make_model_pair, write_checkpoint

SHAPE = TinyLlama(layers=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sizes") / "base"
    base, _ = make_model_pair(SHAPE, seed=7)
    write_checkpoint(folder, base, shards=2)
    return folder


def hub_source(metadata_dir, fetch: str) -> HubSource:
    return HubSource(parse_hub_ref("org/base"), HubClient(HubOptions(fetch=fetch), metadata_dir, SilentEvents()))


@pytest.mark.parametrize("fetch", ["ranges", "shards"])
def test_a_listing_without_sizes_still_reads_every_tensor(fetch, hub_online, checkpoint, tmp_path):
    hub_online.push("org/base", checkpoint)
    hub_online.omit_listing_sizes = True
    source = hub_source(tmp_path / "meta", fetch)
    assert all(f.size is None for f in source.snapshot.files.values())  # the listing said nothing
    local = LocalSource(checkpoint)
    keys = [key for key in local.keys() if key.endswith("q_proj.weight") or key.endswith("down_proj.weight")]
    source.plan_reads(keys)
    for key, tensor in source.read_many(keys):
        assert torch.equal(tensor, local.read(key)), key
    assert source.entry(keys[0]).shape == local.entry(keys[0]).shape


def test_sizes_learned_once_serve_a_later_run_without_requests(hub_online, checkpoint, tmp_path):
    hub_online.push("org/base", checkpoint)
    hub_online.omit_listing_sizes = True
    key = "model.layers.1.self_attn.q_proj.weight"
    first = hub_source(tmp_path / "meta", "ranges").read(key)
    hub_online.clear_log()
    again = hub_source(tmp_path / "meta", "ranges")
    again.entry(key)  # headers and sizes from the first run's records: only the listing is asked for
    assert [r.path for r in hub_online.log] == ["/api/models/org/base/revision/main"]
    assert torch.equal(again.read(key), first)


def test_without_a_recorded_size_the_hub_head_answer_gives_it(hub_online, checkpoint, tmp_path):
    hub_online.push("org/base", checkpoint)
    hub_online.omit_listing_sizes = True
    key = "model.layers.0.mlp.up_proj.weight"
    first = hub_source(tmp_path / "meta", "ranges").read(key)
    for record in (tmp_path / "meta" / "headers").glob("*.size"):
        record.unlink()  # headers memoised, sizes not: as after an older version of csulora
    hub_online.clear_log()
    again = hub_source(tmp_path / "meta", "ranges")
    assert torch.equal(again.read(key), first)
    heads = [r for r in hub_online.log if r.method == "HEAD"]
    assert [r.path.rsplit("/", 1)[-1] for r in heads] == [again._file_of[key]]
