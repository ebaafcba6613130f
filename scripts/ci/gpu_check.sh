#!/usr/bin/env bash
# Everything the CUDA issue asks of a GPU machine, in one command, within about 9 minutes:
#
#   1. what the machine is: nvidia-smi, disk, python;
#   2. a python with torch that sees CUDA, and csulora installed from this checkout;
#   3. torch's CUDA info;
#   4. the CUDA tests: pytest -q -m cuda tests/e2e/test_cuda.py (every method, --two-sided, the
#      estimator randomized and exact, and whole `correct` runs, on cuda against cpu);
#   5. the scale benchmark on the Llama-3-8B shape with --device cuda: estimation time against the time to
#      read the targeted tensors of both checkpoints once, peak GPU memory, peak host RSS. Its checkpoints
#      (~32 GB of bf16 shards, drawn on the GPU) go to $BENCH_DIR on the local disk.
#
# Usage, from the repository root:
#
#   scripts/ci/gpu_check.sh                         # on the GPU machine
#   GPU_CHECK_DRY_RUN=1 scripts/ci/gpu_check.sh     # anywhere: cpu device, tiny shape, no installs unless needed
#
# Environment (all optional):
#   OUT                  where every log and JSON goes (default ./gpu-out)
#   BENCH_DIR            the benchmark's checkpoints, on the local disk (default /tmp/csulora-bench; 8B needs ~40 GB)
#   PYTHON               a python to use as is (default: a venv at $VENV over the packages of the
#                        first python >= 3.11 on PATH, so a torch installed there is reused)
#   VENV                 (default /tmp/csulora-gpu-venv)
#   GPU_CHECK_BUDGET_S   the whole run's time budget in seconds (default 540); each step gets
#                        min(its share, what is left) and is stopped by `timeout` when it runs over
#   BENCH_SHAPE          (default 8b; tiny in a dry run)     BENCH_ADAPTERS (default 2)
#   BENCH_ARGS           more arguments for scripts/bench/scale.py, e.g. "--no-accuracy" or "--layers 8"
#   TORCH_SPEC           what to pip install when torch cannot see CUDA (default torch==2.13.0); may carry
#                        pip options, e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
#                        where pip's own configuration points at a CPU-only index
#
# Assumption: on the GPU machine pip can reach a package index (PyPI or a mirror set through pip's own
# configuration, PIP_INDEX_URL etc.). It is only used when the python at hand lacks a CUDA torch
# (`pip install $TORCH_SPEC`; the Linux x86_64 wheel on PyPI is the CUDA build) or lacks csulora and the
# test extras (`pip install -e '.[test]'`). Without an index those steps fail and the later steps say so.
#
# Exit status: 0 when every step passed, 1 otherwise; $OUT/steps.tsv lists each step's status and time.

set -uo pipefail

DRY_RUN="${GPU_CHECK_DRY_RUN:-0}"
OUT="${OUT:-./gpu-out}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-540}"
BENCH_DIR="${BENCH_DIR:-/tmp/csulora-bench}"
VENV="${VENV:-/tmp/csulora-gpu-venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
BENCH_ADAPTERS="${BENCH_ADAPTERS:-2}"
BENCH_ARGS="${BENCH_ARGS:-}"
if [ "$DRY_RUN" = 1 ]; then
    BENCH_SHAPE="${BENCH_SHAPE:-tiny}"
    DEVICE=cpu
else
    BENCH_SHAPE="${BENCH_SHAPE:-8b}"
    DEVICE=cuda
fi

cd "$(dirname "$0")/../.." || exit 1
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
: >"$OUT/steps.tsv"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
STARTED="$(now)"
DEADLINE="$(awk -v s="$STARTED" -v b="$BUDGET_S" 'BEGIN { printf "%.0f", s + b }')"
FAILED=0

# step NAME SHARE_S FUNCTION: run FUNCTION (below) in a child bash under `timeout`, with a limit of
# min(SHARE_S, time left), its output to the console and to $OUT/NAME.log; print and record its status
# and wall time. `timeout` signals its whole process group, so a step's python children stop with it.
step() {
    local name="$1" share="$2"
    shift 2
    local left limit rc t0
    left="$(awk -v d="$DEADLINE" -v n="$(now)" 'BEGIN { printf "%d", d - n }')"
    limit=$((share < left ? share : left))
    if [ "$limit" -lt 10 ]; then
        echo "== $name: skipped, ${left}s left of the ${BUDGET_S}s budget"
        printf '%s\tskipped: %ss left\t0\t%s\n' "$name" "$left" "$limit" >>"$OUT/steps.tsv"
        FAILED=1
        return 1
    fi
    echo
    echo "== $name (limit ${limit}s): $*"
    t0="$(now)"
    timeout --kill-after=15 "$limit" bash -c '"$@"' "$name" "$@" 2>&1 | tee "$OUT/$name.log"
    rc="${PIPESTATUS[0]}"
    local wall
    wall="$(elapsed "$t0")"
    local status=ok
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        status="timed out after ${limit}s"
    elif [ "$rc" != 0 ]; then
        status="failed (rc=$rc)"
    fi
    [ "$status" = ok ] || FAILED=1
    echo "== $name: $status, wall ${wall}s (total $(elapsed "$STARTED")s)"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$wall" "$limit" >>"$OUT/steps.tsv"
    return "$rc"
}

machine_info() {
    echo "date: $(date -u +%FT%TZ)  host: $(hostname)  dry run: $DRY_RUN  device: $DEVICE"
    echo "repo: $(pwd)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    else
        echo "nvidia-smi: not found"
        [ "$DRY_RUN" = 1 ] || return 1
    fi
    echo "cpus: $(nproc)"
    free -g 2>/dev/null || true
    mkdir -p "$BENCH_DIR"
    df -h "$BENCH_DIR" "$OUT"
    local free_gb
    free_gb="$(df -Pk "$BENCH_DIR" | awk 'NR == 2 { printf "%d", $4 / 1048576 }')"
    if [ "$BENCH_SHAPE" = 8b ] && [ "$free_gb" -lt 40 ]; then
        echo "warning: ${free_gb} GB free under $BENCH_DIR; the 8b pair needs ~32 GB plus caches and outputs"
    fi
    [ -x /usr/bin/time ] || echo "note: no /usr/bin/time; the benchmark takes peak RSS from the child's VmHWM"
    command -v python3 && python3 --version
}

# The python to use: $PYTHON as is, else (dry run) the repo's .venv, else a venv over the system packages
# (so a torch installed there is reused). Then torch with CUDA and csulora, installed only when missing.
# Runs in a child shell: the choice is handed back through $OUT/.python.
setup_python() {
    if [ -z "${PYTHON:-}" ]; then
        if [ "$DRY_RUN" = 1 ] && [ -x .venv/bin/python ]; then
            PYTHON=.venv/bin/python
        else
            if [ ! -x "$VENV/bin/python" ]; then
                local base="" candidate
                for candidate in python3 python3.13 python3.12 python3.11; do  # csulora needs >= 3.11
                    if command -v "$candidate" >/dev/null &&
                        "$candidate" -c "import sys; assert sys.version_info >= (3, 11)" 2>/dev/null; then
                        base="$candidate"
                        break
                    fi
                done
                [ -n "$base" ] || { echo "no python >= 3.11 found (set PYTHON)"; return 1; }
                "$base" -m venv --system-site-packages "$VENV" || return 1
            fi
            PYTHON="$VENV/bin/python"
        fi
    fi
    echo "python: $PYTHON ($("$PYTHON" --version 2>&1))"
    local pip=("$PYTHON" -m pip install --disable-pip-version-check --progress-bar off)
    if [ "$DRY_RUN" != 1 ]; then
        if ! "$PYTHON" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
            echo "torch with CUDA not importable: pip install $TORCH_SPEC"
            # shellcheck disable=SC2086  # TORCH_SPEC may carry pip options, e.g. "torch==2.13.0 --index-url URL"
            "${pip[@]}" $TORCH_SPEC || return 1
            "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'" || return 1
        fi
    fi
    if ! "$PYTHON" -c "import csulora_cli, pytest, hypothesis, typer, safetensors" 2>/dev/null ||
        [ ! -x "$(dirname "$PYTHON")/csulora" ]; then
        echo "csulora or its test extras missing: pip install -e '.[test]'"
        "${pip[@]}" -e '.[test]' || return 1
    fi
    "$PYTHON" -c "import csulora_cli, os; print('csulora_cli from', os.path.dirname(csulora_cli.__file__))" || return 1
    echo "$PYTHON" >"$OUT/.python"
}

torch_info() {
    "$PYTHON" - <<'EOF'
import json
import torch

info = {
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "cuda_available": torch.cuda.is_available(),
    "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    "float32_matmul_precision": torch.get_float32_matmul_precision(),
}
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(0)
    info |= {
        "device_count": torch.cuda.device_count(),
        "device": properties.name,
        "capability": list(torch.cuda.get_device_capability(0)),
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "cudnn": torch.backends.cudnn.version(),
    }
print(json.dumps(info, indent=2))
EOF
}

cuda_tests() {
    local junit="$OUT/pytest-cuda.xml"
    if [ "$DRY_RUN" = 1 ]; then
        CSULORA_TEST_DEVICE=cpu "$PYTHON" -m pytest -q -m cuda tests/e2e/test_cuda.py --junitxml "$junit"
    else
        "$PYTHON" -m pytest -q -m cuda tests/e2e/test_cuda.py --junitxml "$junit"
    fi
}

bench() {
    # Drawing the 8B weights on the CPU would take minutes (torch's seeded CPU randn runs on one thread);
    # drawn on the GPU, writing the shards sets the pace. --estimate times estimate-subspace alone.
    # shellcheck disable=SC2086  # BENCH_ARGS is split on purpose
    "$PYTHON" scripts/bench/scale.py --shape "$BENCH_SHAPE" --device "$DEVICE" --generate-device "$DEVICE" \
        --adapters "$BENCH_ADAPTERS" --no-reference --estimate --verbose \
        --workdir "$BENCH_DIR" --json-out "$OUT/bench_scale.json" $BENCH_ARGS
}

export DRY_RUN OUT BENCH_DIR VENV TORCH_SPEC BENCH_ADAPTERS BENCH_ARGS BENCH_SHAPE DEVICE
export -f machine_info setup_python torch_info cuda_tests bench
rm -f "$OUT/.python"

step machine 30 machine_info
if step setup 240 setup_python && [ -s "$OUT/.python" ]; then
    PYTHON="$(cat "$OUT/.python")"
    export PYTHON
    step torch 60 torch_info
    step tests 150 cuda_tests
    step bench 600 bench
else
    echo "no usable python: tests and benchmark skipped"
    printf 'tests, bench\tskipped: no usable python\t0\t0\n' >>"$OUT/steps.tsv"
    FAILED=1
fi

echo
echo "== summary (total $(elapsed "$STARTED")s of a ${BUDGET_S}s budget; files under $OUT)"
column -t -s $'\t' "$OUT/steps.tsv" 2>/dev/null || cat "$OUT/steps.tsv"
if [ -f "$OUT/bench_scale.json" ] && [ -n "${PYTHON:-}" ]; then
    "$PYTHON" - "$OUT/bench_scale.json" <<'EOF' | tee "$OUT/summary.txt"
import json
import sys

for r in json.load(open(sys.argv[1]))["results"]:
    read = r.get("read_both_once_s")
    print(f"{r['shape']} on {r['device']}" + (f": read both checkpoints once {read:.1f} s" if read else ""))
    for name in ("cold", "warm", "batch_warm", "estimate"):
        run = r.get(name)
        if not run:
            continue
        line = f"  {name}: wall {run['wall_s']:.1f} s, peak host RSS {run['peak_rss_mb']:.0f} MB"
        if "in_process_s" in run:
            line += f", inside the CLI {run['in_process_s']:.1f} s"
            if read:
                line += f" = {run['in_process_s'] / read:.2f}x the read (goal <= 1.5x)"
        if "peak_gpu_allocated_mb" in run:
            line += f", peak GPU {run['peak_gpu_allocated_mb']:.0f} MB allocated"
            line += f" ({run['peak_gpu_reserved_mb']:.0f} MB reserved)"
        print(line)
    if r.get("accuracy"):
        worst = max(row["max_principal_angle_deg"] for row in r["accuracy"])
        print(f"  randomized vs exact (layer 0): largest principal angle {worst:.3f} deg")
EOF
fi
exit "$FAILED"
