"""python -m scripts.evidence.real.probe_process REQUEST.json RESULT.json

One `csulora_cli.pipeline.commands.probe.probe` call in a process of its own, so that its wall time and
peak memory (RSS) are the probe's alone, the model's load included, as a CI job running `csulora probe`
would see them. The result holds numbers only: every model's per-prompt margins, the times, the memory.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    request_path, result_path = (Path(arg) for arg in argv)
    asked = json.loads(request_path.read_text())

    import torch

    from csulora_cli.pipeline.commands.probe import probe
    from csulora_cli.pipeline.types.probe import ProbeRequest

    result = probe(
        ProbeRequest(
            adapters=tuple(asked["adapters"]),
            model=Path(asked["model"]),
            prompts=asked["prompts"],
            benign=asked.get("benign"),
            device="cpu",
            dtype="float32",
            batch_size=asked["batch_size"],
        )
    )

    def margins(adapter) -> dict:
        return {
            "harmful": list(adapter.harmful.summary.margins),
            "benign": None if adapter.benign is None else list(adapter.benign.summary.margins),
        }

    record = {
        "bare": margins(result.bare),
        "adapters": [margins(adapter) for adapter in result.adapters],
        "probe_s": result.seconds,
        "process_s": time.perf_counter() - started,
        # Linux reports the peak resident set in KiB.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    partial = result_path.with_name(result_path.name + ".partial")
    partial.write_text(json.dumps(record))
    partial.rename(result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
