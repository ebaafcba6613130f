"""The base/aligned order is checked against a Hub model's card as against a local folder's: the card is read
through the run's Hub client, at the resolved commit (tests/cli/test_inputs_kept.py has the local cases)."""

from __future__ import annotations

import json
import shutil

from tests.helpers import RANK, assert_ok, assert_one_line_error, run_cli


def test_a_hub_models_card_naming_the_other_model_is_order_evidence(hub_online, models, tmp_path):
    base, aligned, adapter = models
    carded = tmp_path / "aligned"
    shutil.copytree(aligned, carded)
    (carded / "README.md").write_text("---\nbase_model: org/base\n---\n\n# the aligned model\n")
    hub_online.push("org/base", base)
    commit = hub_online.push("org/aligned", carded)
    # An adapter that names no model: the card is the only evidence.
    plain = tmp_path / "adapter"
    shutil.copytree(adapter, plain)
    config = json.loads((plain / "adapter_config.json").read_text())
    (plain / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": None}))
    card = f"org/aligned@{commit[:12]}/README.md (base_model)"

    swapped = ("--base", "org/aligned", "--aligned", "org/base", "--rank", RANK)
    warned = assert_ok(run_cli("correct", plain, *swapped, "--dry-run"))
    assert f"swapped: {card} names org/base, the model given as aligned" in warned.stderr, warned.describe()
    gate = ("inspect", plain, *swapped, "--gate", "reversal", "--fail-below", "-1")
    assert_one_line_error(run_cli(*gate), 2, "swapped", card, "--confirm-order")

    out = tmp_path / "subspace"
    right = run_cli("estimate-subspace", "org/base", "org/aligned", "--adapter", plain, "--rank", RANK, "--out", out)
    assert "swapped" not in assert_ok(right).stderr
    evidence = json.loads((out / "subspace.json").read_text())["order"]["evidence"]
    assert evidence == [f"{card} names the base model as the model it was made from"]
