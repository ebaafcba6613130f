"""The behavioural probe (`csulora probe`'s library call) on the whole adapter family, beside the weight statistics.

One `probe()` call reads every adapter of the family against the aligned model, loaded once, on the probe's
own prompts (`Splits.probe_harmful` and `probe_benign`, outside every other split); a second call probes one
adapter alone, for the time and memory a CI job pays per adapter. Both run in a child process
(probe_process.py) so their wall time and peak memory are the probe's alone. The per-prompt margins are
cached in the work folder; the statistics for the first n prompts are read from them, since each prompt's
margin does not depend on the other prompts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from csulora_cli.probe.openings import REFUSAL_OPENINGS
from csulora_cli.probe.stats import summarize

from .family import SHAPES, AdapterSpec
from .model import USER_TURN
from .store import Store, folder_digest, key_of

PROBE_VERSION = 1
BATCH_SIZE = 32
REPO = Path(__file__).resolve().parents[3]

# The benchmark's chat format (model.USER_TURN: no system prompt) as a chat template: the alignment and
# every adapter were trained on it, and `probe` formats prompts with the model's chat template.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def probe_model(store: Store, aligned_folder: Path, aligned_key: str) -> Path:
    """The aligned model as `probe` reads it: its weights linked, its chat template the benchmark's."""
    folder = store.root / "models" / f"probe-{aligned_key}-{key_of(CHAT_TEMPLATE)[:8]}"
    if (folder / "model.safetensors").exists():
        return folder
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in aligned_folder.iterdir():
        if path.suffix == ".safetensors":
            (partial / path.name).symlink_to(path.resolve())
        elif path.name != "chat_template.jinja":
            shutil.copy(path, partial / path.name)
    config_path = partial / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config, indent=2))
    (partial / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    check_template(partial)
    try:
        partial.rename(folder)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # another run made the same folder first
    return folder


def check_template(folder: Path) -> None:
    from csulora_cli.inference.loading import load_tokenizer

    tokenizer = load_tokenizer(folder)
    written = tokenizer.apply_chat_template(
        [{"role": "user", "content": "PROMPT"}], tokenize=False, add_generation_prompt=True
    )
    if written != USER_TURN.format(prompt="PROMPT"):
        raise ValueError(f"the probe's chat template writes {written!r}, not the benchmark's turn")


def probe_in_process(model: Path, adapters: list[Path], harmful: list[str], benign: list[str]) -> dict:
    """One `probe()` call in a child process: every model's margins, its times and peak memory."""
    with tempfile.TemporaryDirectory(prefix="csulora-probe-") as scratch:
        scratch = Path(scratch)
        (scratch / "harmful.txt").write_text("\n".join(harmful) + "\n")
        asked = {
            "model": str(model),
            "adapters": [str(folder) for folder in adapters],
            "prompts": str(scratch / "harmful.txt"),
            "benign": None,
            "batch_size": BATCH_SIZE,
        }
        if benign:
            (scratch / "benign.txt").write_text("\n".join(benign) + "\n")
            asked["benign"] = str(scratch / "benign.txt")
        (scratch / "request.json").write_text(json.dumps(asked))
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "scripts.evidence.real.probe_process"]
            + [str(scratch / "request.json"), str(scratch / "result.json")],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"the probe process failed ({done.returncode}): {done.stderr[-2000:]}")
        result = json.loads((scratch / "result.json").read_text())
    return result | {
        "wall_s": wall,
        "load_average_before": load,
        "adapters_probed": len(adapters),
        "harmful_prompts": len(harmful),
        "benign_prompts": len(benign),
    }


def probe_statistics(
    harmful: list[float], benign: list[float] | None, bare_harmful: list[float], bare_benign: list[float] | None
) -> dict:
    """One adapter's probe statistics (docs/method.md section 10) from its margins and the bare model's."""
    summary = summarize(harmful, bare_harmful)
    record = {
        "prompts": summary.prompts,
        "unrefused_share": summary.unrefused_share,
        "unrefused_interval": summary.unrefused_interval.to_dict(),
        "mean_margin": summary.mean_margin,
        "shift": summary.shift,
        "shift_interval": summary.shift_interval.to_dict(),
        "over_refusal": None,
    }
    if benign:
        record["over_refusal"] = summarize(benign, bare_benign).refused_share
    return record


def adapter_probe(margins: dict, bare: dict, counts: list[int]) -> dict:
    """The statistics on every probe prompt, and on the first n of them for each n in `counts`."""
    record = probe_statistics(margins["harmful"], margins["benign"], bare["harmful"], bare["benign"])
    record["by_prompts"] = {
        str(n): {
            key: value
            for key, value in probe_statistics(margins["harmful"][:n], None, bare["harmful"][:n], None).items()
            if key in ("unrefused_share", "shift")
        }
        for n in counts
        if n <= len(margins["harmful"])
    }
    return record


def timing_adapter(specs: list[AdapterSpec]) -> AdapterSpec:
    """The adapter timed alone: a harmful-only one of the widest shape (the most LoRA layers to inject)."""
    return min(specs, key=lambda s: (s.task is not None, -len(SHAPES[s.shape].targets), s.seed, s.name))


def probe_family(
    store: Store,
    aligned_folder: Path,
    aligned_key: str,
    folders: dict[AdapterSpec, Path],
    harmful: list[str],
    benign: list[str],
    counts: list[int],
    time_one: bool = True,
) -> tuple[dict[AdapterSpec, dict], dict] | None:
    """Per adapter its probe statistics, and the timings; None when not computed and the store computes nothing."""
    if not folders or not harmful:
        return None
    specs = sorted(folders, key=lambda s: s.name)
    digests = [folder_digest(folders[spec]) for spec in specs]
    key = key_of(aligned_key, digests, harmful, benign, CHAT_TEMPLATE, REFUSAL_OPENINGS, BATCH_SIZE, PROBE_VERSION)

    def model() -> Path:
        return probe_model(store, aligned_folder, aligned_key)

    def every_adapter() -> dict:
        store.progress(f"probing {len(specs)} adapters on {len(harmful)} + {len(benign)} prompts (one process)")
        return probe_in_process(model(), [folders[spec] for spec in specs], harmful, benign) | {"digests": digests}

    family = store.json_step("probe", key, every_adapter)
    if family is None:
        return None
    timings = {"all_adapters": _timing(family)}
    if time_one:
        one = timing_adapter(specs)

        def one_adapter() -> dict:
            store.progress(f"probing {one.name} alone, for its time")
            return probe_in_process(model(), [folders[one]], harmful, benign)

        alone = store.json_step("probe", key_of(key, "alone", one.name), one_adapter)
        if alone is not None:
            timings["one_adapter"] = _timing(alone) | {"adapter": one.name}
    rows = {
        spec: adapter_probe(margins, family["bare"], counts)
        for spec, margins in zip(specs, family["adapters"], strict=True)
    }
    return rows, timings


def _timing(result: dict) -> dict:
    keys = ("adapters_probed", "harmful_prompts", "benign_prompts", "wall_s", "process_s", "probe_s")
    keys += ("peak_rss_mib", "cpu_count", "torch_threads", "load_average_before")
    return {key: result[key] for key in keys}
