#!/usr/bin/env bash
# The README's Slurm array ("Splitting one estimation across machines"), run as written on a real,
# single-node Slurm started for the occasion:
#
#   1. installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing (apt-get);
#   2. starts munged, slurmctld and slurmd under a temporary folder (config, state, logs, PID files,
#      munge key and socket all there; free ports picked at start), so nothing system-wide is used;
#   3. builds a 32-block model pair and an adapter on all seven projections (tiny widths);
#   4. submits the array script extracted from README.md and waits for it by polling squeue;
#   5. checks the folder the tasks filled is byte for byte the folder of one single-process
#      `csulora estimate-subspace` with the same settings, and that `csulora correct` runs from it;
#   6. runs the array again into a fresh folder, cancels one task halfway through its blocks, checks the
#      folder is then incomplete (and `correct` refuses it), submits that task again and checks the
#      folder is again byte for byte the single-process one;
#   7. stops the daemons it started (by their PID files) and removes its temporary folder, on any exit.
#
# Usage, from the repository root, as root (slurmd runs jobs as root here): scripts/ci/slurm_e2e.sh
# `make test-slurm` builds .venv first and runs it.
#
# Environment (all optional):
#   VENV_BIN        where csulora and its python are (default .venv/bin)
#   SLURM_E2E_MEM   the --mem each task asks for, on sbatch's command line (default 1G): the README's
#                   request is for real models and may exceed this node's memory
#   SLURM_E2E_KEEP  1 keeps the temporary folder (logs, folders) for a look after a failure
#
# Exit status: 0 when every check passed; the last line gives the wall time.

set -euo pipefail

START_NS=$(date +%s%N)
cd "$(dirname "$0")/../.."
VENV_BIN=$(cd "${VENV_BIN:-.venv/bin}" && pwd)
TASK_MEM=${SLURM_E2E_MEM:-1G}
KEEP=${SLURM_E2E_KEEP:-0}
# Every temporary folder of this script starts with this, so a rerun can find what a killed run left.
TMP_PREFIX="${TMPDIR:-/tmp}/csulora-slurm-e2e."
PACKAGES=(slurmctld slurmd slurm-client munge)

# Seconds since START_NS, with one decimal.
elapsed() { awk -v start="$START_NS" -v now="$(date +%s%N)" 'BEGIN { printf "%.1f", (now - start) / 1e9 }'; }
# Each line says when, in seconds since the start: the times of the steps, measured by every run.
say() { printf 'slurm e2e [%5s s] %s\n' "$(elapsed)" "$*"; }
fail() {
    say "FAILED: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------------
# Daemons are stopped only through PID files under a folder of this script, and only when the process
# named there still runs with that folder on its command line (a PID may have been reused since).
stop_daemons_of() {
    local dir=$1 name pid cmdline pids=()
    for name in slurmd slurmctld munged; do
        [ -f "$dir/run/$name.pid" ] || continue
        pid=$(cat "$dir/run/$name.pid" 2>/dev/null) || continue
        [[ $pid =~ ^[0-9]+$ ]] || continue
        { cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline"); } 2>/dev/null || continue
        [[ $cmdline == *"$dir/"* ]] && pids+=("$pid")
    done
    # All at once (each takes a second or two to shut down), then SIGKILL what is left after 10 s.
    if [ ${#pids[@]} -gt 0 ]; then
        kill "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "${pids[@]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "${pids[@]}" 2>/dev/null || true
    fi
    # What may outlive them when a run was killed mid-array: slurmstepd, job scripts and their csulora.
    # Every process a run starts works inside its folder (the daemons in log/, jobs in jobs/), so they
    # are found by their working directory.
    local proc cwd
    for proc in /proc/[0-9]*; do
        cwd=$(readlink "$proc/cwd" 2>/dev/null) || continue
        if [[ $cwd == "$dir" || $cwd == "$dir/"* ]]; then
            kill -9 "${proc#/proc/}" 2>/dev/null || true
        fi
    done
}

# A run killed without its EXIT trap (SIGKILL, a lost machine) leaves its folder and daemons behind:
# clean those whose script is gone (its owner.pid no longer runs), never those of a run still going.
for stale in "$TMP_PREFIX"*; do
    [ -d "$stale" ] || continue
    owner=$(cat "$stale/owner.pid" 2>/dev/null || echo "")
    if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then
        continue
    fi
    say "removing what an earlier run left: $stale"
    stop_daemons_of "$stale"
    rm -rf "$stale"
done

TMP=$(mktemp -d "${TMP_PREFIX}XXXXXX")
echo $$ >"$TMP/owner.pid"
# munged runs as the munge user, which must be able to reach its own folder inside this one.
chmod 0755 "$TMP"
mkdir -p "$TMP"/{run,log,state,spool,jobs,models}
SUBMITTED=()
CREATED_POLICY_RC=0

cleanup() {
    local status=$?
    set +e
    if [ "$status" != 0 ] && [ ${#SUBMITTED[@]} -gt 0 ] && [ -n "${SLURM_CONF:-}" ]; then
        # Jobs still queued or running on a failure: cancel them before their slurmd goes away.
        scancel "${SUBMITTED[@]}" 2>/dev/null
        for _ in $(seq 50); do
            [ -z "$(squeue -h -o %i -j "$(IFS=,; echo "${SUBMITTED[*]}")" 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
    stop_daemons_of "$TMP"
    say "daemons stopped"
    [ "$CREATED_POLICY_RC" = 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ "$status" != 0 ]; then
        # Whatever explains the failure, before the folder goes (SLURM_E2E_KEEP=1 keeps it all).
        for log in "$TMP"/log/*.log "$TMP"/munge/munged.log "$TMP"/jobs/*.out; do
            [ -s "$log" ] || continue
            echo "--- $log (last 5 lines)" >&2
            tail -n 5 "$log" >&2
        done
    fi
    if [ "$KEEP" = 1 ]; then
        say "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    # The wall time of the whole run, installs and the daemons' stop included.
    if [ "$status" = 0 ]; then
        say "passed; wall time $(elapsed) s"
    else
        say "failed; wall time $(elapsed) s"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || fail "needs root (to install packages and start slurmd, which runs the jobs)"
[ -x "$VENV_BIN/csulora" ] || fail "no csulora in $VENV_BIN (run make install, or set VENV_BIN)"
PYTHON=$VENV_BIN/python

# ---------------------------------------------------------------------------------------------------
# 1. Packages.
missing=()
for binary in slurmctld slurmd sbatch munged; do
    command -v "$binary" >/dev/null || missing+=("$binary")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get to install them"
    say "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    # Package scripts must not start system-wide daemons: this script starts its own, privately.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        CREATED_POLICY_RC=1
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" \
            >"$TMP/log/apt.log" 2>&1
    }
    # Stale package lists are the usual reason an install fails: refresh them once and try again.
    apt_install || { apt-get update -q >>"$TMP/log/apt.log" 2>&1 && apt_install; } || fail "apt-get install failed"
    if [ "$CREATED_POLICY_RC" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        CREATED_POLICY_RC=0
    fi
    say "installed"
fi

# ---------------------------------------------------------------------------------------------------
# 2. The cluster: one node, this machine, everything under $TMP.
read -r CTLD_PORT SLURMD_PORT < <("$PYTHON" - <<'EOF'
# Two ports free now: bound together so they differ, then released for the daemons.
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
EOF
)
HOST=$(hostname -s)
# The node's memory as slurmd will measure it, rounded down a little so slurmd never finds less.
MEMORY_MB=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.95) }' /proc/meminfo)

# munged's folder: its own, reachable by all (clients connect to the socket in it); the key is munge's only.
mkdir -p "$TMP/munge"
chown munge:munge "$TMP/munge"
chmod 0755 "$TMP/munge"
head -c 1024 /dev/urandom >"$TMP/munge/munge.key"
chown munge:munge "$TMP/munge/munge.key"
chmod 0400 "$TMP/munge/munge.key"
MUNGE_SOCKET=$TMP/munge/munge.socket

export SLURM_CONF=$TMP/slurm.conf
cat >"$SLURM_CONF" <<EOF
# Single-node Slurm for scripts/ci/slurm_e2e.sh: no systemd, no cgroups, no accounting.
ClusterName=csulora-e2e
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CryptoType=crypto/munge
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool
SlurmctldPidFile=$TMP/run/slurmctld.pid
SlurmdPidFile=$TMP/run/slurmd.pid
SlurmctldLogFile=$TMP/log/slurmctld.log
SlurmdLogFile=$TMP/log/slurmd.log
# Processes tracked by their parent PIDs and tasks launched as they are: no cgroups needed.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
# Jobs start when submitted (no backfill cycle to wait for); one CPU per task, several tasks per node.
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
# A cancelled task gets SIGTERM, then SIGKILL after this many seconds.
KillWait=5
# Finished jobs stay known to scontrol for this long: their states are checked after the array ends.
MinJobAge=600
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=e2e Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

say "starting munged, slurmctld, slurmd (ports $CTLD_PORT, $SLURMD_PORT)"
runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$TMP/munge/munge.key" \
    --pid-file="$TMP/munge/munged.pid" --log-file="$TMP/munge/munged.log" --seed-file="$TMP/munge/munge.seed"
# munged writes its PID file in its own folder (only munge may write there); stop_daemons_of reads run/.
for _ in $(seq 50); do
    [ -s "$TMP/munge/munged.pid" ] && break
    sleep 0.1
done
cp "$TMP/munge/munged.pid" "$TMP/run/munged.pid" || fail "munged did not start"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
# Ready when the node is idle.
for _ in $(seq 300); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.1
done
[ "$state" = idle ] || fail "the node did not become idle (sinfo: '${state:-no answer}')"
say "cluster up"

# ---------------------------------------------------------------------------------------------------
# 3. The model pair and adapter: 32 blocks as in the README's example, tiny widths.
MODELS=$TMP/models
"$PYTHON" - "$MODELS" <<'EOF'
import sys
from pathlib import Path

from csulora_cli.testing.builders import (
    TinyLlama,
    make_adapter_factors,
    make_model_pair,
    write_adapter,
    write_checkpoint,
)

root = Path(sys.argv[1])
# 32 blocks so that the README's `--array=0-3`, 8 blocks per task, covers the model exactly.
shape = TinyLlama(layers=32, hidden=32, intermediate=64, kv_hidden=16, vocab=64)
base, aligned = make_model_pair(shape, seed=0)
write_checkpoint(root / "base", base)
write_checkpoint(root / "aligned", aligned)
targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
factors = make_adapter_factors(shape, targets, rank=4)
config = {"r": 4, "lora_alpha": 8, "target_modules": list(targets), "base_model_name_or_path": str(root / "aligned")}
write_adapter(root / "adapter", factors, config)
EOF
EXPECTED_BASES=224 # 32 blocks x 7 projections

# ---------------------------------------------------------------------------------------------------
# 4. The README's array script, extracted as written: the indented block that starts with #!/bin/bash
# under "Splitting one estimation across machines".
ARRAY_SCRIPT=$TMP/estimate.sh
awk '
    /^#### Splitting one estimation across machines/ { section = 1; next }
    section && /^#/ { exit }
    section && !inside && $0 == "    #!/bin/bash" { inside = 1 }
    inside && !/^    / { exit }
    inside { print substr($0, 5) }
' README.md >"$ARRAY_SCRIPT"
grep -q '^#SBATCH --array' "$ARRAY_SCRIPT" || fail "no Slurm array script found in README.md"
grep -q 'csulora estimate-subspace' "$ARRAY_SCRIPT" || fail "the README's array script runs no estimate-subspace"
bash -n "$ARRAY_SCRIPT" || fail "the README's array script is not valid bash"

# What the test sets, and only that: the four paths (the README reads them from the environment, which
# sbatch passes on) and the memory each task asks for (sbatch's command line overrides #SBATCH lines).
export BASE=$MODELS/base ALIGNED=$MODELS/aligned ADAPTER=$MODELS/adapter
export PATH=$VENV_BIN:$PATH

# Submit the array (extra sbatch options first); sets JOB to its id. Not run in $(...): SUBMITTED
# must keep the id, for the cleanup to cancel what is still queued after a failure.
submit() {
    JOB=$(cd "$TMP/jobs" && sbatch --parsable --mem="$TASK_MEM" "$@" "$ARRAY_SCRIPT") || fail "sbatch failed"
    JOB=${JOB%%;*}
    SUBMITTED+=("$JOB")
}

# Poll squeue until the job has left the queue (`sbatch --wait` polls slowly).
wait_for() {
    local job=$1 deadline=$((SECONDS + 180))
    while [ -n "$(squeue -h -o %i -j "$job" 2>/dev/null)" ]; do
        [ $SECONDS -lt $deadline ] || fail "job $job still queued or running after 180 s"
        sleep 0.2
    done
}

# The state of every array task of a job, "task=STATE" sorted by task.
task_states() {
    scontrol -o show job "$1" | sed -nE 's/.*ArrayTaskId=([0-9]+) .*JobState=([A-Z_]+) .*/\1=\2/p' | sort -n
}

# Compare two subspace folders file by file: same names, same bytes. The job records (jobs/) say how
# each folder was filled (one job, or one per array task), so they are compared by `csulora verify` instead.
subspace_files() { (cd "$1" && find . -type f -not -path './jobs/*' | sort); }
same_folders() {
    local expected=$1 actual=$2 count=0 name
    diff <(subspace_files "$expected") <(subspace_files "$actual") >&2 ||
        fail "$actual and $expected hold different files"
    while read -r name; do
        cmp -s "$expected/$name" "$actual/$name" || fail "$actual/$name differs from the single-process run"
        count=$((count + 1))
    done < <(subspace_files "$expected")
    echo "$count"
}

count_bases() { find "$1/bases" -name '*.safetensors' 2>/dev/null | wc -l; }

# Each folder gets its own basis cache, so every basis of each run is computed by that run.
export SUBSPACE=$TMP/subspace-array CSULORA_CACHE=$TMP/cache-array
submit
job=$JOB
say "array $job submitted: $(grep '^#SBATCH' "$ARRAY_SCRIPT" | tr '\n' ' ')(--mem=$TASK_MEM)"
wait_for "$job"
states=$(task_states "$job" | tr '\n' ' ')
[ "$states" = "0=COMPLETED 1=COMPLETED 2=COMPLETED 3=COMPLETED " ] || fail "array $job ended as: $states"
say "array done: $(count_bases "$SUBSPACE") bases"

# ---------------------------------------------------------------------------------------------------
# 5. The same estimation in one process, with the same settings, into another folder.
SINGLE=$TMP/subspace-single
CSULORA_CACHE=$TMP/cache-single csulora estimate-subspace "$BASE" "$ALIGNED" --adapter "$ADAPTER" \
    --device auto --out "$SINGLE" --quiet >"$TMP/log/single.log" 2>&1 || fail "single-process estimate failed"
[ "$(count_bases "$SINGLE")" = "$EXPECTED_BASES" ] || fail "single-process run wrote $(count_bases "$SINGLE") bases"
# The folder holds subspace.json (sources and estimation parameters, no layer range, no time) and one
# basis file per module (tensors and a record of fingerprint, energies, checksum, version): all of it
# must match, the manifest included.
files=$(same_folders "$SINGLE" "$SUBSPACE")
say "array folder = single-process folder, byte for byte ($files files)"
# Every task recorded what it was asked for and finished: the folder is complete.
csulora verify "$SUBSPACE" >"$TMP/log/verify.log" 2>&1 || fail "csulora verify: $(tail -1 "$TMP/log/verify.log")"
say "csulora verify: every module the array's tasks were asked for is there"

csulora correct "$ADAPTER" --subspace "$SUBSPACE" --out "$TMP/adapter-safe" --quiet >"$TMP/log/correct.log" 2>&1 ||
    fail "csulora correct from the array's folder failed (see $TMP/log/correct.log)"
[ -s "$TMP/adapter-safe/adapter_model.safetensors" ] || fail "csulora correct wrote no adapter"
say "csulora correct from the array's folder: ok"

# ---------------------------------------------------------------------------------------------------
# 6. A task cancelled halfway, then submitted again. The victim runs a test-only stand-in for csulora,
# first on PATH: the real CLI, but pausing after each basis it writes, so it can be caught mid-task.
VICTIM=1
mkdir -p "$TMP/slow-bin"
cat >"$TMP/slow-bin/csulora" <<EOF
#!$PYTHON
# Test-only: csulora, pausing after each basis written into the folder in array task \$SLURM_E2E_SLOW_TASK.
import os
import sys
import time

import csulora_cli.pipeline.commands.estimate as estimate

write = estimate.add_to_subspace_folder


def write_then_pause(*args, **kwargs):
    write(*args, **kwargs)
    time.sleep(0.5)


if os.environ.get("SLURM_ARRAY_TASK_ID") == os.environ.get("SLURM_E2E_SLOW_TASK"):
    estimate.add_to_subspace_folder = write_then_pause
from csulora_cli.cli import main

sys.exit(main())
EOF
chmod +x "$TMP/slow-bin/csulora"

export SUBSPACE=$TMP/subspace-killed CSULORA_CACHE=$TMP/cache-killed
PATH=$TMP/slow-bin:$PATH SLURM_E2E_SLOW_TASK=$VICTIM submit
job=$JOB
# Blocks 8-15 are task 1's (8 per task): cancel it once it has written 3 of its 56 bases.
deadline=$((SECONDS + 120))
until [ "$(find "$SUBSPACE/bases" -name 'model.layers.[89].*' -o -name 'model.layers.1[0-5].*' 2>/dev/null |
    wc -l)" -ge 3 ]; do
    [ $SECONDS -lt $deadline ] || fail "task ${job}_$VICTIM wrote no bases within 120 s"
    sleep 0.1
done
[ "$(squeue -h -o %T -j "${job}_$VICTIM")" = RUNNING ] || fail "task ${job}_$VICTIM is not running"
scancel "${job}_$VICTIM"
wait_for "$job"
states=$(task_states "$job" | tr '\n' ' ')
[ "$states" = "0=COMPLETED 1=CANCELLED 2=COMPLETED 3=COMPLETED " ] || fail "array $job ended as: $states"
partial=$(count_bases "$SUBSPACE")
[ "$partial" -lt "$EXPECTED_BASES" ] || fail "the cancelled task wrote all its bases before it was stopped"
say "task ${job}_$VICTIM cancelled halfway: the folder holds $partial of $EXPECTED_BASES bases"
if csulora correct "$ADAPTER" --subspace "$SUBSPACE" --dry-run --quiet >"$TMP/log/correct-partial.log" 2>&1; then
    fail "csulora correct accepted a folder missing bases"
fi
# It must fail on a module of the cancelled task's blocks, not for some other reason.
grep -qE 'model\.layers\.([89]|1[0-5])\.' "$TMP/log/correct-partial.log" ||
    fail "correct failed on the partial folder for another reason: $(tail -n 1 "$TMP/log/correct-partial.log")"
# The cancelled task's record says it did not finish: verify names the folder incomplete.
if csulora verify "$SUBSPACE" >"$TMP/log/verify-partial.log" 2>&1; then
    fail "csulora verify passed a folder a cancelled task left half-filled"
fi
grep -q "incomplete subspace folder" "$TMP/log/verify-partial.log" ||
    fail "verify failed on the partial folder for another reason: $(tail -n 1 "$TMP/log/verify-partial.log")"

submit --array="$VICTIM"
job=$JOB
wait_for "$job"
states=$(task_states "$job" | tr '\n' ' ')
[ "$states" = "$VICTIM=COMPLETED " ] || fail "resubmitted task $job ended as: $states"
files=$(same_folders "$SINGLE" "$SUBSPACE")
say "task resubmitted: folder = single-process folder, byte for byte ($files files)"
csulora verify "$SUBSPACE" >"$TMP/log/verify-resubmitted.log" 2>&1 ||
    fail "csulora verify after the resubmitted task: $(tail -1 "$TMP/log/verify-resubmitted.log")"
