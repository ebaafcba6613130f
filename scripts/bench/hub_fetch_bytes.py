"""Bytes moved from a Hub repo by `csulora correct` of a q/v-only adapter, against a whole-snapshot download.

Writes a synthetic Llama-shaped bf16 pair (the shapes and writer of `bench_scale.py`, sharded ~1 GB),
serves it from the local Hub stand-in the tests use (`csulora_cli/testing/server.py`: the real routes, counted on
the server), and runs the real CLI against it with HF_ENDPOINT under each `--fetch` mode, each with
cold caches. Prints a table and writes `scripts/out/hub_fetch_bytes.json`.

    python -m scripts.bench.hub_fetch_bytes [--shape 1b] [--root scripts/out/bench_data]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.bench.scale import SHAPES, prepare
from scripts.paths import RAW
from scripts.tools.hub_standin import FakeHub

CSULORA = str(Path(sys.executable).parent / "csulora")


def qv_adapter(adapters: list[Path], folder: Path) -> Path:
    """The first benchmark adapter cut down to q_proj and v_proj (the classic LoRA targets)."""
    from safetensors.torch import load_file, save_file

    source = adapters[0]
    tensors = load_file(str(source / "adapter_model.safetensors"))
    kept = {key: value for key, value in tensors.items() if ".q_proj." in key or ".v_proj." in key}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(kept, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "v_proj"]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def run(hub: FakeHub, adapter: Path, fetch: str, scratch: Path) -> dict:
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(scratch / f"hf-{fetch}"), HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_HUB_OFFLINE", None)
    command = [
        CSULORA, "correct", str(adapter), "--base", "org/base", "--aligned", "org/aligned", "--fetch", fetch,
        "--cache-dir", str(scratch / f"cache-{fetch}"), "--out", str(scratch / f"out-{fetch}"), "--quiet",
    ]  # fmt: skip
    hub.clear_log()
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    requests = hub.data_requests()
    return {
        "fetch": fetch,
        "bytes": hub.bytes_served(),
        "range_requests": sum(1 for r in requests if r.range),
        "whole_file_requests": sum(1 for r in requests if not r.range),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="1b", choices=sorted(SHAPES))
    parser.add_argument("--root", type=Path, default=RAW / "bench_data")
    args = parser.parse_args()
    folder, adapters = prepare(args.shape, args.root, 1)
    snapshot = sum(path.stat().st_size for name in ("base", "aligned") for path in (folder / name).iterdir())
    with tempfile.TemporaryDirectory(dir=args.root) as scratch_name, FakeHub() as hub:
        scratch = Path(scratch_name)
        adapter = qv_adapter(adapters, scratch / "adapter-qv")
        hub.push("org/base", folder / "base")
        hub.push("org/aligned", folder / "aligned")
        rows = [run(hub, adapter, fetch, scratch) for fetch in ("auto", "ranges", "shards")]
    result = {"shape": args.shape, "whole_snapshot_bytes": snapshot, "runs": rows}
    print(f"{args.shape}: whole snapshot of base + aligned = {snapshot / 1e9:.2f} GB")
    print(f"{'--fetch':8} {'fetched':>10} {'share':>7} {'ranges':>7} {'files':>6} {'time':>7}")
    for row in rows:
        share = row["bytes"] / snapshot
        print(
            f"{row['fetch']:8} {row['bytes'] / 1e6:8.1f} MB {share:7.1%} {row['range_requests']:7d}"
            f" {row['whole_file_requests']:6d} {row['seconds']:6.1f}s"
        )
    out = RAW / "hub_fetch_bytes.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
