"""Try every bad input docs/reliability.md lists and print the table of what csulora answers.

Each case builds its input in a temporary folder, runs the console script, and records the exit code
and the stderr line, so the table in the docs is output, not prose:

    python -m scripts.tools.reliability_table > /tmp/table.md
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from csulora_cli.testing.builders import build_demo
from scripts.paths import REPO

CSULORA = str(Path(sys.executable).parent / "csulora")


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/csulora-pwned",))


def cases(root: Path) -> list[tuple[str, Callable[[], list[str]], str]]:
    base, aligned, adapter = build_demo(root / "models")
    src = ["--base", str(base), "--aligned", str(aligned), "--rank", "8"]

    def variant(name: str, change: Callable[[Path], None]) -> Path:
        folder = root / name
        shutil.copytree(adapter, folder)
        change(folder)
        return folder

    def model_variant(name: str, change: Callable[[Path], None]) -> Path:
        folder = root / name
        shutil.copytree(aligned, folder)
        change(folder)
        return folder

    def truncate(path: Path, keep: int) -> None:
        path.write_bytes(path.read_bytes()[:keep])

    def nan_adapter(folder: Path) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(folder / "adapter_model.safetensors"))
        key = next(k for k in tensors if "lora_B" in k)
        tensors[key][0, 0] = float("nan")
        save_file(tensors, str(folder / "adapter_model.safetensors"))

    def nan_model(folder: Path) -> None:
        from safetensors.torch import load_file

        shard = sorted(folder.glob("model-*.safetensors"))[0]
        tensors = load_file(str(shard))
        key = next(k for k in tensors if "q_proj" in k)
        tensors[key][0, 0] = float("inf")
        save_file(tensors, str(shard), metadata={"format": "pt"})

    def reshape_model(folder: Path) -> None:
        from safetensors.torch import load_file

        for shard in folder.glob("model-*.safetensors"):
            tensors = load_file(str(shard))
            for key in tensors:
                if key.endswith("layers.0.self_attn.q_proj.weight"):
                    tensors[key] = tensors[key][:32].contiguous()
            save_file(tensors, str(shard), metadata={"format": "pt"})

    def wrong_shapes(folder: Path) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(folder / "adapter_model.safetensors"))
        key = next(k for k in tensors if "q_proj.lora_B" in k)
        tensors[key] = torch.zeros(10, tensors[key].shape[1])
        save_file(tensors, str(folder / "adapter_model.safetensors"))

    def evil_pickle(folder: Path) -> None:
        (folder / "adapter_model.safetensors").unlink()
        with open(folder / "adapter_model.bin", "wb") as handle:
            pickle.dump({"base_model.model.x.lora_A.weight": RunsCode()}, handle)

    def escaping_index(folder: Path) -> None:
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        key = next(iter(index["weight_map"]))
        index["weight_map"][key] = "../../etc/passwd"
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))

    def linked_token(folder: Path) -> None:
        token = root / "hf-token"
        token.write_text("hf_not_a_real_token")
        (folder / "token.txt").symlink_to(token)

    def base_model_named(name: str) -> Callable[[Path], None]:
        def change(folder: Path) -> None:
            config = json.loads((folder / "adapter_config.json").read_text())
            (folder / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": name}))

        return change

    existing = root / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    not_a_folder = root / "file.txt"
    not_a_folder.write_text("a file, not a folder")
    correct = [CSULORA, "correct"]
    return [
        (
            "nonexistent adapter path",
            lambda: [*correct, str(root / "nope"), *src, "--out", str(root / "o")],
            "test_errors.py::test_nonexistent_adapter",
        ),
        (
            "adapter without adapter_config.json",
            lambda: [
                *correct,
                str(variant("noconf", lambda f: (f / "adapter_config.json").unlink())),
                *src,
                "--out",
                str(root / "o"),
            ],
            "test_errors.py::test_adapter_without_config",
        ),
        (
            "malformed adapter_config.json",
            lambda: [
                *correct,
                str(variant("badconf", lambda f: (f / "adapter_config.json").write_text("{r: 8"))),
                *src,
                "--out",
                str(root / "o"),
            ],
            "test_errors.py::test_malformed_adapter_config",
        ),
        (
            "DoRA adapter",
            lambda: [
                *correct,
                str(
                    variant(
                        "dora",
                        lambda f: (f / "adapter_config.json").write_text(
                            json.dumps(json.loads((f / "adapter_config.json").read_text()) | {"use_dora": True})
                        ),
                    )
                ),
                *src,
                "--out",
                str(root / "o"),
            ],
            "test_errors.py::test_dora_adapter_refused, test_peft_compat.py",
        ),
        (
            "truncated adapter safetensors",
            lambda: [
                *correct,
                str(variant("trunc", lambda f: truncate(f / "adapter_model.safetensors", 100))),
                *src,
                "--out",
                str(root / "o"),
            ],
            "test_errors.py::test_truncated_adapter_weights, test_parsers_fuzz.py",
        ),
        (
            "garbage adapter safetensors (header length)",
            lambda: [
                *correct,
                str(variant("garbage", lambda f: (f / "adapter_model.safetensors").write_bytes(b"\xff" * 64))),
                *src,
                "--out",
                str(root / "o"),
            ],
            "test_sources.py::test_garbage_headers_fail_with_the_file_named, test_parsers_fuzz.py",
        ),
        (
            "malicious pickle in adapter_model.bin",
            lambda: [*correct, str(variant("evil", evil_pickle)), *src, "--out", str(root / "o")],
            "test_errors.py::test_malicious_pickle_is_refused, test_adapter.py",
        ),
        (
            "symbolic link in the adapter folder (to a token file)",
            lambda: [*correct, str(variant("linked", linked_token)), *src, "--out", str(root / "o")],
            "test_adapter_links.py::test_link_to_a_token_file_is_refused_and_not_published",
        ),
        (
            "aligned model from base_model_name_or_path not found",
            lambda: [
                *correct,
                str(variant("relbase", base_model_named("./aligned"))),
                "--base",
                str(base),
                "--rank",
                "8",
                "--out",
                str(root / "o"),
            ],
            "test_base_model_origin.py::test_relative_base_model_missing_from_this_directory",
        ),
        (
            "NaN in an adapter tensor",
            lambda: [*correct, str(variant("nan", nan_adapter)), *src, "--out", str(root / "o")],
            "test_errors.py::test_nan_in_adapter_tensor",
        ),
        (
            "Inf in a model weight",
            lambda: [
                *correct,
                str(adapter),
                "--base",
                str(base),
                "--aligned",
                str(model_variant("infmodel", nan_model)),
                "--out",
                str(root / "o"),
            ],
            "test_api.py::test_non_finite_model_weight_is_named",
        ),
        (
            "adapter shapes do not match the model",
            lambda: [*correct, str(variant("shapes", wrong_shapes)), *src, "--out", str(root / "o")],
            "test_errors.py::test_adapter_shapes_do_not_match_the_base",
        ),
        (
            "base and aligned differ in shape",
            lambda: [
                *correct,
                str(adapter),
                "--base",
                str(base),
                "--aligned",
                str(model_variant("reshaped", reshape_model)),
                "--out",
                str(root / "o"),
            ],
            "test_errors.py::test_base_and_aligned_shapes_differ",
        ),
        (
            "missing shard",
            lambda: [
                *correct,
                str(adapter),
                "--base",
                str(base),
                "--aligned",
                str(model_variant("noshard", lambda f: sorted(f.glob("model-*.safetensors"))[-1].unlink())),
                "--out",
                str(root / "o"),
            ],
            "test_errors.py::test_missing_shard, test_sources.py",
        ),
        (
            "truncated model shard",
            lambda: [
                *correct,
                str(adapter),
                "--base",
                str(base),
                "--aligned",
                str(model_variant("truncshard", lambda f: truncate(sorted(f.glob("model-*.safetensors"))[0], 5000))),
                "--out",
                str(root / "o"),
            ],
            "test_errors.py::test_truncated_model_shard",
        ),
        (
            "index naming a shard outside the folder (../)",
            lambda: [
                *correct,
                str(adapter),
                "--base",
                str(base),
                "--aligned",
                str(model_variant("escape", escaping_index)),
                "--out",
                str(root / "o"),
            ],
            "test_errors.py::test_index_cannot_escape_the_model_folder, test_sources.py",
        ),
        (
            "model folder without safetensors",
            lambda: [
                *correct,
                str(adapter),
                "--base",
                str(_folder(root / "empty-model")),
                "--aligned",
                str(aligned),
                "--out",
                str(root / "o"),
            ],
            "test_errors.py::test_base_folder_without_model_safetensors",
        ),
        (
            "negative --lambda",
            lambda: [*correct, str(adapter), *src, "--out", str(root / "o"), "--lambda", "-1"],
            "test_errors.py::test_bad_correct_values",
        ),
        (
            "--eps outside [0, 1]",
            lambda: [*correct, str(adapter), *src, "--out", str(root / "o"), "--eps", "1.5"],
            "test_errors.py::test_bad_correct_values",
        ),
        (
            "--energy outside (0, 1]",
            lambda: [*correct, str(adapter), *src, "--out", str(root / "o"), "--energy", "0"],
            "test_errors.py::test_bad_estimation_values",
        ),
        (
            "--rank < 1",
            lambda: [
                *correct,
                str(adapter),
                "--base",
                str(base),
                "--aligned",
                str(aligned),
                "--out",
                str(root / "o"),
                "--rank",
                "0",
            ],
            "test_errors.py::test_bad_estimation_values",
        ),
        (
            "unknown --method",
            lambda: [*correct, str(adapter), *src, "--out", str(root / "o"), "--method", "magic"],
            "test_errors.py::test_bad_correct_values",
        ),
        (
            "--device cuda without CUDA",
            lambda: [*correct, str(adapter), *src, "--out", str(root / "o"), "--device", "cuda"],
            "test_errors.py::test_cuda_without_cuda",
        ),
        (
            "existing output without --overwrite",
            lambda: [*correct, str(adapter), *src, "--out", str(existing)],
            "test_correct.py, test_atomic.py",
        ),
        (
            "destination whose parent is a file",
            lambda: [*correct, str(adapter), *src, "--out", str(not_a_folder / "o")],
            "test_errors.py::test_destination_that_cannot_be_created",
        ),
        (
            "unknown key in --config",
            lambda: [
                *correct,
                str(adapter),
                *src,
                "--out",
                str(root / "o"),
                "--config",
                str(_write(root / "bad.yaml", "bogus: 1\n")),
            ],
            "test_errors.py::test_unknown_config_key",
        ),
        ("missing --out", lambda: [*correct, str(adapter), *src], "test_errors.py::test_correct_needs_out"),
        (
            "invalid YAML in --config",
            lambda: [
                *correct,
                str(adapter),
                *src,
                "--out",
                str(root / "o"),
                "--config",
                str(_write(root / "broken.yaml", "rank: 8\nenergy: [0.9\nmethod: csulora\n")),
            ],
            "test_presets.py::test_invalid_yaml_is_a_usage_error_naming_the_line",
        ),
        (
            "--out onto the adapter itself, with --overwrite",
            lambda: [*correct, str(adapter), *src, "--out", str(adapter), "--overwrite"],
            "test_inputs_kept.py::test_correct_never_writes_onto_into_or_over_its_adapter",
        ),
        (
            "--out-dir the adapter's parent, with --overwrite",
            lambda: [*correct, str(adapter), *src, "--out-dir", str(adapter.parent), "--overwrite"],
            "test_inputs_kept.py::test_correct_never_writes_onto_into_or_over_its_adapter",
        ),
        (
            "estimate-subspace --out onto the adapter",
            lambda: [
                CSULORA,
                "estimate-subspace",
                str(base),
                str(aligned),
                "--adapter",
                str(adapter),
                "--out",
                str(adapter),
                "--overwrite",
            ],
            "test_inputs_kept.py::test_estimate_never_writes_a_subspace_over_an_input",
        ),
        (
            "base and aligned swapped in a gate",
            lambda: [
                CSULORA,
                "inspect",
                str(adapter),
                "--base",
                str(aligned),
                "--aligned",
                str(base),
                "--rank",
                "8",
                "--gate",
                "reversal",
                "--fail-below",
                "0",
            ],
            "test_inputs_kept.py::test_gate_on_a_swapped_subspace_is_refused_unless_confirmed",
        ),
        (
            "--gate without --fail-above or --fail-below",
            lambda: [CSULORA, "inspect", str(adapter), *src, "--gate", "reversal"],
            "test_batches.py::test_a_gate_without_a_threshold_is_refused_naming_both_flags",
        ),
        (
            "--dry-run with an --out that holds the adapter",
            lambda: [*correct, str(adapter), *src, "--out", str(adapter.parent), "--dry-run"],
            "test_batches.py::test_dry_run_refuses_what_the_run_refuses",
        ),
        (
            "--dry-run --overwrite over a folder csulora did not write",
            lambda: [*correct, str(adapter), *src, "--out", str(existing), "--overwrite", "--dry-run"],
            "test_batches.py::test_dry_run_refuses_what_the_run_refuses",
        ),
        (
            "a batch with one folder that is not an adapter",
            lambda: [
                *correct,
                str(adapter),
                str(variant("notadapter", lambda f: (f / "adapter_config.json").unlink())),
                *src,
                "--out-dir",
                str(root / "o"),
            ],
            "test_batches.py::test_one_bad_adapter_stops_the_batch_and_names_those_not_written",
        ),
        (
            "--out typed last, without its value",
            lambda: [*correct, str(adapter), *src, "--out"],
            "test_frictions.py::test_an_option_without_its_value_points_at_the_commands_help",
        ),
        (
            "--out --overwrite over a folder csulora did not write (a project)",
            lambda: [*correct, str(adapter), *src, "--out", str(_project(root)), "--overwrite"],
            "test_overwrite.py::test_the_current_folder_and_those_above_it_are_never_an_output",
        ),
        (
            "--out . (the current folder), with --overwrite",
            lambda: [*correct, str(adapter), *src, "--out", ".", "--overwrite"],
            "test_overwrite.py::test_the_current_folder_and_those_above_it_are_never_an_output",
        ),
        (
            "--aligned that the adapter's base_model_name_or_path does not name",
            lambda: [
                *correct,
                str(adapter),
                "--base",
                str(base),
                "--aligned",
                str(model_variant("another-aligned", lambda f: None)),
                "--rank",
                "8",
                "--out",
                str(root / "o"),
            ],
            "test_subspace_agreement.py::test_a_wrong_aligned_model_is_refused",
        ),
        (
            "verify of a subspace folder a job left half-filled",
            lambda: [CSULORA, "verify", str(_half_filled_subspace(root, base, aligned, adapter))],
            "test_subspace_agreement.py::test_verify_names_what_an_incomplete_subspace_folder_lacks",
        ),
        (
            "demo --keep into a folder that holds files",
            lambda: [CSULORA, "demo", "--keep", str(root / "models")],
            "test_inputs_kept.py::test_demo_keep_refuses_a_folder_that_holds_something",
        ),
    ]


def _project(root: Path) -> Path:
    """A user's project folder: what `--overwrite` must never replace."""
    project = root / "project"
    (project / "src").mkdir(parents=True, exist_ok=True)
    (project / "thesis.tex").write_text("years of work\n")
    return project


def _half_filled_subspace(root: Path, base: Path, aligned: Path, adapter: Path) -> Path:
    """A subspace folder whose job stopped before its last basis (its record says it did not finish)."""
    folder = root / "half-filled"
    made = [CSULORA, "estimate-subspace", str(base), str(aligned), "--adapter", str(adapter), "--rank", "8"]
    environment = {"CSULORA_CACHE": str(root / "c"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    subprocess.run([*made, "--out", str(folder), "--quiet"], check=True, env=environment)
    sorted((folder / "bases").iterdir())[-1].unlink()
    (record,) = (folder / "jobs").iterdir()
    record.write_text(json.dumps(json.loads(record.read_text()) | {"finished": False}))
    return folder


def _folder(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        rows = []
        for name, command, test in cases(root):
            result = subprocess.run(
                command(),
                capture_output=True,
                text=True,
                cwd=root,  # a case that names the current folder names this temporary one
                # PYTHONPATH: the console script runs this checkout's code, whatever the environment installed.
                env={"CSULORA_CACHE": str(root / "c"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
            )
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            message = lines[-1] if lines else ""
            message = message.replace(str(root), "…")
            traceback = "Traceback" in result.stderr
            wrote = (root / "o").exists()
            rows.append((name, message, result.returncode, len(lines), traceback, wrote, test))
            shutil.rmtree(root / "o", ignore_errors=True)
        print(
            "| bad input | stderr (temporary paths shortened to …) | exit | lines | traceback | output written | test |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, message, code, lines, traceback, wrote, test in rows:
            message = message.replace("|", "\\|")
            print(
                f"| {name} | `{message}` | {code} | {lines} | {'yes' if traceback else 'no'} | "
                f"{'yes' if wrote else 'no'} | {test} |"
            )


if __name__ == "__main__":
    main()
