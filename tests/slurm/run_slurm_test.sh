#!/usr/bin/env bash
# Runs the tiny configuration through a real one-node SLURM cluster with the shipped profile
# (profiles/slurm) and the official snakemake-executor-plugin-slurm, so that every non-local job is
# submitted with sbatch. Then checks the outputs and SLURM's job records (jobcomp/filetxt).
#
#   bash tests/slurm/run_slurm_test.sh          # by hand (root; installs slurm-wlm + munge via apt)
#
# The cluster is private to this run: its own munge key and socket, its own ports, state, spool,
# pid and log folders under a temporary directory; it touches no system-wide SLURM or munge setup.
# Every daemon it starts is stopped on exit (trap), and so is every process started under its
# SLURM_CONF (job steps), found by a marker in their environment, never by name.
#
# Environment: KAEPIPE_MNIST_ROOT (offline MNIST copy; default ../shared/data/mnist-offline, and without
# either the synthetic MNIST-format digits of tests/synthetic_mnist.py),
# KAEPIPE_VENV (default .venv), KAEPIPE_SLURM_KEEP=1 keeps the temporary directory,
# KAEPIPE_SLURM_TIMEOUT (seconds for the Snakemake run, default 900).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${KAEPIPE_VENV:-$REPO/.venv}"
MNIST="${KAEPIPE_MNIST_ROOT:-$REPO/../shared/data/mnist-offline}"
TIMEOUT="${KAEPIPE_SLURM_TIMEOUT:-900}"
T0=$(date +%s)

log() { printf '[slurm-test %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, and slurmd launches jobs as their owner)"
[ -x "$VENV/bin/python" ] || die "no virtual environment at $VENV (run 'make setup' first)"
if [ -f "$MNIST/t10k-images-idx3-ubyte.gz" ]; then
  MNIST="$(cd "$MNIST" && pwd)"
elif [ -n "${KAEPIPE_MNIST_ROOT:-}" ]; then
  die "KAEPIPE_MNIST_ROOT=$KAEPIPE_MNIST_ROOT holds no MNIST IDX files"
else
  MNIST=""  # written below, once the temporary directory exists
fi

# ---------------------------------------------------------------- software
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
fi
if ! "$VENV/bin/python" -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
  log "installing snakemake-executor-plugin-slurm into $VENV (pip, the 'slurm' extra)"
  "$VENV/bin/python" -m pip install -q "snakemake-executor-plugin-slurm>=2.8,<3"
fi
log "$(slurmctld -V), $(munged -V 2>&1 | head -1), plugin $("$VENV/bin/python" -c \
  'import importlib.metadata as m; print(m.version("snakemake-executor-plugin-slurm"))')"

# ---------------------------------------------------------------- the private cluster
T="$(mktemp -d /tmp/kaepipe-slurm.XXXXXX)"
chmod 755 "$T"
mkdir -p "$T"/{etc,munge,state,spool,run,log,work}
if [ -z "$MNIST" ]; then
  MNIST="$T/mnist"
  ( cd "$REPO" && "$VENV/bin/python" -m tests.synthetic_mnist "$MNIST" ) >/dev/null
  log "no offline MNIST copy: synthetic MNIST-format digits in $MNIST"
fi
chmod 711 "$T/munge"
MARK="KAEPIPE_SLURM_TEST_RUN=$T"      # every daemon we start carries this in its environment
PIDS=()                               # the daemons we started, in start order

cleanup() {
  local rc=$?
  set +e
  if [ -n "${SLURM_CONF:-}" ] && [ -n "${CTLD_PID:-}" ] && kill -0 "$CTLD_PID" 2>/dev/null; then
    # cancel whatever is left of our jobs, then give slurmd a moment to end their steps
    squeue -h -o %i 2>/dev/null | xargs -r scancel >/dev/null 2>&1
    for _ in $(seq 20); do [ -z "$(squeue -h -t PD,R,CG -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  # daemons in reverse start order, by the pid we recorded when we started them
  local i
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do kill "${PIDS[i]}" 2>/dev/null; done
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
    for _ in $(seq 50); do kill -0 "${PIDS[i]}" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "${PIDS[i]}" 2>/dev/null; then kill -9 "${PIDS[i]}"; fi
    wait "${PIDS[i]}" 2>/dev/null
  done
  # anything else started under our cluster (slurmstepd, job steps): found by our marker, by pid
  local p
  for p in $(grep -lsz -F -x "$MARK" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
    [ "$p" != "$$" ] && kill -9 "$p" 2>/dev/null
  done
  if [ "$rc" != 0 ]; then
    log "--- slurmctld log (tail)"; tail -n 30 "$T/log/slurmctld.log" 2>/dev/null
    log "--- slurmd log (tail)"; tail -n 30 "$T/log/slurmd.log" 2>/dev/null
  fi
  if [ "${KAEPIPE_SLURM_KEEP:-0}" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
  log "cluster stopped (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CTLD_PORT=$(free_port); SLURMD_PORT=$(free_port)
[ "$CTLD_PORT" != "$SLURMD_PORT" ] || SLURMD_PORT=$(free_port)
NODE="$(hostname -s)"
NCPU="$(nproc)"
MEM_MB="$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')"

# munge: its own key, socket, pid, log and seed file
mungekey --create --keyfile="$T/munge/munge.key" 2>/dev/null \
  || dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$T/munge/munge.key"
env "$MARK" munged -F --force --socket="$T/munge/munge.socket" --key-file="$T/munge/munge.key" \
  --pid-file="$T/munge/munged.pid" --log-file="$T/log/munged.log" --seed-file="$T/munge/munged.seed" \
  >"$T/log/munged.out" 2>&1 &
MUNGE_PID=$!; PIDS+=("$MUNGE_PID")
for _ in $(seq 50); do [ -S "$T/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$T/munge/munge.socket" ] || die "munged did not start: $(cat "$T/log/munged.log" 2>/dev/null)"

cat > "$T/etc/slurm.conf" <<EOF
# One-node test cluster for kaepipe (tests/slurm/run_slurm_test.sh); nothing here is system-wide.
ClusterName=kaepipetest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge/munge.socket
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no accounting database: completed jobs go to a text file
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$T/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
# finished jobs stay visible to squeue for 10 minutes (the plugin polls squeue, see below)
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
# the node has no GPU: one 'gpu' GRES (gres.conf) stands in for one, so --gpus=1 jobs are
# accepted and SLURM runs at most one of them at a time
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
# slurmd drops a GPU without a device file; /dev/null stands in (task/none: nothing is confined)
cat > "$T/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null
EOF
export SLURM_CONF="$T/etc/slurm.conf"

env "$MARK" slurmctld -D -i -f "$SLURM_CONF" >"$T/log/slurmctld.out" 2>&1 &
CTLD_PID=$!; PIDS+=("$CTLD_PID")
env "$MARK" slurmd -D -N "$NODE" -f "$SLURM_CONF" >"$T/log/slurmd.out" 2>&1 &
SLURMD_PID=$!; PIDS+=("$SLURMD_PID")

for _ in $(seq 60); do
  state="$(sinfo -h -N -o %T 2>/dev/null | head -1)"
  [ "$state" = idle ] && break
  kill -0 "$CTLD_PID" 2>/dev/null || die "slurmctld exited"
  kill -0 "$SLURMD_PID" 2>/dev/null || die "slurmd exited"
  sleep 0.5
done
[ "$state" = idle ] || die "node not idle after 30 s (state '$state')"
log "cluster up: node $NODE, $NCPU CPUs, $MEM_MB MB, 1 stand-in gpu; ports $CTLD_PORT/$SLURMD_PORT; $T"

# ---------------------------------------------------------------- the pipeline through SLURM
# The test overlay takes set-resources from the shipped profile with cpus_per_gpu/cpus_per_task
# capped at half this node's CPUs, so that two GPU jobs would fit by CPUs and only the one stand-in
# GPU keeps them apart (a later --profile replaces a top-level key whole, so it repeats every rule).
"$VENV/bin/python" - "$REPO/profiles/slurm/profile.yaml" "$NCPU" > "$T/etc/cpus-overlay.yaml" <<'EOF'
import sys, yaml
profile = yaml.safe_load(open(sys.argv[1]))
cap = max(1, int(sys.argv[2]) // 2)
out = {}
for rule, res in (profile.get("set-resources") or {}).items():
    out[rule] = {k: (min(v, cap) if k in ("cpus_per_gpu", "cpus_per_task") else v) for k, v in res.items()}
yaml.safe_dump({"set-resources": out}, sys.stdout, sort_keys=False)
EOF
mkdir -p "$T/etc/cpus-overlay" && mv "$T/etc/cpus-overlay.yaml" "$T/etc/cpus-overlay/profile.yaml"

# The job step plugin (snakemake-executor-plugin-slurm-jobstep) removes every SLURM_* variable,
# SLURM_CONF included, before its nested `srun`; real clusters have /etc/slurm/slurm.conf or
# configless DNS records, this private one only SLURM_CONF. A shim first on the jobs' PATH puts it back.
mkdir -p "$T/bin"
printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$SLURM_CONF" "$(command -v srun)" > "$T/bin/srun"
chmod +x "$T/bin/srun"

WORK="$T/work"
TARGETS=(${KAEPIPE_SLURM_TARGETS:-results/tables/accuracy.csv})
log "snakemake --profile profiles/slurm (+ tests/slurm/profile) -> ${TARGETS[*]}"
set +e
( cd "$WORK" && env "$MARK" PATH="$T/bin:$VENV/bin:$PATH" timeout "$TIMEOUT" "$VENV/bin/snakemake" \
    -s "$REPO/Snakefile" --directory "$WORK" \
    --profile "$REPO/profiles/slurm" --profile "$REPO/tests/slurm/profile" --profile "$T/etc/cpus-overlay" \
    "${TARGETS[@]}" \
    --configfile "$REPO/config.yaml" "$REPO/tests/config/tiny.yaml" "$REPO/tests/slurm/slurm_test.yaml" \
    --config mnist_root="$MNIST" ) > "$T/snakemake.log" 2>&1
SMK_RC=$?
set -e
if [ "$SMK_RC" != 0 ]; then
  tail -n 80 "$T/snakemake.log"
  for f in $(find "$WORK/.snakemake/slurm_logs" -name '*.log' 2>/dev/null); do echo "== $f"; tail -n 20 "$f"; done
  die "snakemake exited $SMK_RC"
fi
log "snakemake finished"

# ---------------------------------------------------------------- checks
# slurmctld still holds the finished jobs (MinJobAge): their requests (TresPerJob, Comment) are there,
# the jobcomp file has states, exit codes and times (gres/gpu would need slurmdbd in Tres).
scontrol -o show job > "$T/scontrol_jobs.txt"
"$VENV/bin/python" "$REPO/tests/slurm/check_slurm_run.py" --work "$WORK" --jobcomp "$T/jobcomp.txt" \
  --scontrol "$T/scontrol_jobs.txt" --snakemake-log "$T/snakemake.log"
log "PASS in $(( $(date +%s) - T0 )) s"
