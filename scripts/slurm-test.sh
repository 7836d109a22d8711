#!/usr/bin/env bash
# The job scripts on a real Slurm: starts munged, slurmctld and slurmd from the OS packages for a
# single node (this machine, 2 CPUs) in a temporary directory, no systemd and no cgroups
# (proctrack/linuxproc, task/none), then
#   - packs a small phantom cohort with slurm/pack.sbatch on 2 ranks,
#   - trains it with slurm/train.sbatch on 2 ranks (sbatch --wait) and checks the job's exit code,
#     that MPI saw a world of 2, train-status.json "finished", a checkpoint, and the scratch cleaned,
#   - sends USR1 to a longer train.sbatch job (what --signal=B:USR1@300 does before the time limit) and
#     checks that the ranks checkpointed, the job requeued itself and the requeued job finished the
#     run from the checkpoint (same step count as an uninterrupted run); a cancelled job is not
#     requeued,
#   - runs slurm/scaling.sbatch on 2 ranks and checks its CSV row,
#   - checks that the scripts refuse to run outside a job,
# and tears the daemons down on exit. Runs as root (SlurmUser=root; CI runs as root).
# Usage: scripts/slurm-test.sh   (MEDTRAIN_BIN: the binary, else target/debug/medtrain;
#        MEDTRAIN_KEEP=1 keeps the temporary directory; SLURM_TEST_TIMEOUT: seconds per job, default 90)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${MEDTRAIN_BIN:-$root/target/debug/medtrain}"
job_timeout="${SLURM_TEST_TIMEOUT:-90}"

fail() {
  echo "slurm-test: FAIL: $*" >&2
  exit 1
}
for c in munged slurmctld slurmd sbatch sinfo srun scontrol scancel; do
  command -v "$c" >/dev/null 2>&1 || {
    echo "slurm-test: $c not found; install slurm-wlm and munge (scripts/install-deps.sh)" >&2
    exit 2
  }
done
[ "$(id -u)" = 0 ] || {
  echo "slurm-test: needs root (the test cluster runs with SlurmUser=root)" >&2
  exit 2
}
[ -x "$bin" ] || {
  echo "slurm-test: medtrain binary $bin not found (build it or set MEDTRAIN_BIN)" >&2
  exit 2
}
bin="$(realpath "$bin")"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/medtrain-slurm.XXXXXX")"
chmod 0755 "$tmp"
pids=()
teardown() {
  local rc=$?
  set +e
  if [ -n "${SLURM_CONF:-}" ] && [ -r "$SLURM_CONF" ]; then
    scancel --full --quiet "--user=$(id -un)" 2>/dev/null
  fi
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null; done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do wait "${pids[$i]}" 2>/dev/null; done
  if [ "$rc" != 0 ]; then
    for f in "$tmp"/log/*.log "$tmp"/jobs/*.out; do
      [ -r "$f" ] && { echo "== $f (tail)"; tail -n 40 "$f"; }
    done >&2
  fi
  if [ "${MEDTRAIN_KEEP:-0}" = 1 ]; then
    echo "slurm-test: kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM
mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool" "$tmp/log" "$tmp/jobs" "$tmp/scratch" "$tmp/nodetmp"
chmod 0700 "$tmp/munge"

# Two free TCP ports on localhost for slurmctld and slurmd.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=()
p=$((20000 + $$ % 20000))
while [ ${#ports[@]} -lt 2 ]; do
  port_free "$p" && ports+=("$p")
  p=$((p + 1))
done

start=$SECONDS
# MUNGE: a fresh key and a private socket.
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$tmp/munge/munge.key"
munged --foreground --force --socket="$tmp/munge/munge.socket" --key-file="$tmp/munge/munge.key" \
  --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/log/munged.log" --seed-file="$tmp/munge/seed" \
  >"$tmp/log/munged.out" 2>&1 &
pids+=($!)

host="$(hostname -s)"
# Job ids (and so PMIx namespaces) that differ from an earlier run's leftovers in shared /tmp.
first_job=$((1000 + (RANDOM * 32768 + RANDOM) % 1000000))
cat >"$tmp/slurm.conf" <<CONF
ClusterName=medtrain-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/munge.socket,cred_expire=5
StateSaveLocation=$tmp/state
TmpFS=$tmp/nodetmp
FirstJobId=$first_job
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# A requeued job may start again after cred_expire; schedule it without the default 30-60 s wait.
SchedulerParameters=bf_interval=1,sched_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$tmp/slurm.conf"
# Jobs inherit this environment: their temporary files (Open MPI's session directory) stay in $tmp.
export TMPDIR="$tmp/nodetmp"
for i in $(seq 50); do [ -S "$tmp/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$tmp/munge/munge.socket" ] || fail "munged did not start"
slurmctld -D -i >"$tmp/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -N "$host" >"$tmp/log/slurmd.out" 2>&1 &
pids+=($!)
state=""
for i in $(seq 60); do
  state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || fail "node $host not idle after 30 s (state '$state')"
echo "slurm-test: single-node Slurm up on $host (ports ${ports[*]}) in $((SECONDS - start)) s"

# Submits a job and waits for it: job_wait NAME SBATCH_ARGS... ; sets $job_rc and $job_out.
job_wait() {
  local name="$1"
  shift
  job_out="$tmp/jobs/$name.out"
  job_rc=0
  timeout "$job_timeout" sbatch --wait --chdir="$tmp" --output="$job_out" --job-name="$name" "$@" ||
    job_rc=$?
  [ "$job_rc" != 124 ] || fail "$name: no result within $job_timeout s"
  echo "slurm-test: $name exited with $job_rc ($((SECONDS - start)) s)"
}

# The cohort: phantom DICOM, then packed under Slurm by pack.sbatch on 2 ranks.
w="$tmp/work"
mkdir -p "$w"
"$bin" --quiet phantom --out "$w/phantom" --patients 10 --size 32 --slices 12 --no-radiographs
job_wait pack --ntasks=2 "$root/slurm/pack.sbatch" - "$w/pack" "$w/phantom/dicom" -- \
  --key "$w/site.key" --create-key
[ "$job_rc" = 0 ] || fail "pack.sbatch exited with $job_rc"
"$bin" --quiet catalog build "$w/pack" --out "$w/catalog"
"$bin" --quiet catalog labels import "$w/phantom/truth/slices_by_instance.csv" --out "$w/catalog" \
  --name nodule_slices --key "$w/site.key"
"$bin" --quiet catalog split "$w/catalog" "modality = 'CT'" --out "$w/manifest.h5" \
  --ratios train=0.6,val=0.2,test=0.2 --seed 7
cat >"$w/tiny.toml" <<'TOML'
[model]
widths = [4, 8]
blocks = [1, 1]
stem_kernel = 3
stem_stride = 1
stem_pool = false

[data]
mode = "slice25d"
context = 1
size = [32, 32]
labels = ["nodule_slices.nodule"]

[train]
epochs = 1
batch_size = 4
lr = 0.01
warmup_steps = 2
seed = 11
threads = 1
eval_every = 1

[eval]
bootstrap = 50
TOML

# Stage + train on 2 ranks.
export MEDTRAIN_BIN="$bin" MEDTRAIN_LOCAL_ROOT="$tmp/scratch"
job_wait train --ntasks=2 "$root/slurm/train.sbatch" "$w/tiny.toml" "$w/catalog" "$w/manifest.h5" \
  "$w/run" --json
[ "$job_rc" = 0 ] || fail "train.sbatch exited with $job_rc"
grep -q "^train.sbatch: job .* on 1 node(s), 2 task(s)" "$job_out" || fail "train.sbatch did not print its hosts"
grep -q "^  host $host\$" "$job_out" || fail "train.sbatch did not list host $host"
sizes="$(grep -ao '"world_size": [0-9]*' "$job_out" | sort | uniq -c | awk '{ print $1 "x" $3 }' | xargs)"
[ "$sizes" = "1x2" ] || fail "expected one outcome with world_size 2 (MPI across both ranks), got '$sizes'"
status="$(sed -n 's/^  "status": "\(.*\)",$/\1/p' "$w/run/train-status.json")"
[ "$status" = finished ] || fail "train-status.json says '$status', expected 'finished'"
ls "$w"/run/checkpoints/*/ >/dev/null 2>&1 || fail "no checkpoint under $w/run/checkpoints"
if grep -q "staging to" "$job_out"; then
  [ ! -e "$tmp/scratch/medtrain-$(sed -n 's/^train.sbatch: job \([0-9]*\) .*/\1/p' "$job_out" | head -n 1)" ] ||
    fail "staging directory left behind in $tmp/scratch"
  echo "slurm-test: staged, trained, scratch cleaned"
else
  echo "slurm-test: this medtrain has no 'stage' verb; trained from the archive (staging not exercised)"
fi
[ -z "$(ls -A "$tmp/scratch")" ] || fail "scratch not empty: $(ls -A "$tmp/scratch")"

# Submits train.sbatch for a 6-epoch run, sends SIGNAL to the batch shell (CANCEL: scancels the job) once
# training runs, and waits for the job to end: signal_job NAME SIGNAL RUN_DIR; sets $job_out, $jid, $job_state, $job_restarts.
signal_job() {
  job_out="$tmp/jobs/$1.out"
  jid="$(sbatch --parsable --chdir="$tmp" --output="$job_out" --job-name="$1" --ntasks=2 \
    "$root/slurm/train.sbatch" "$w/tiny.toml" "$w/catalog" "$w/manifest.h5" "$3" --epochs 6)"
  local i
  for i in $(seq $((job_timeout * 10))); do
    grep -q "training ranks=2" "$job_out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "training ranks=2" "$job_out" || fail "$1: training did not start within $job_timeout s"
  if [ "$2" = CANCEL ]; then scancel "$jid"; else scancel --batch --signal="$2" "$jid"; fi
  for i in $(seq $((job_timeout * 2))); do
    job_state="$(scontrol show job "$jid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')"
    job_restarts="$(scontrol show job "$jid" 2>/dev/null | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')"
    case "$job_state" in COMPLETED | FAILED | CANCELLED | TIMEOUT) break ;; esac
    sleep 0.5
  done
  echo "slurm-test: $1 job $jid ended $job_state after $job_restarts restart(s) ($((SECONDS - start)) s)"
}
run_field() { sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$1/train-status.json"; }

# Time limit and requeue: USR1 to the batch shell (what --signal=B:USR1@300 sends) once training runs;
# the ranks checkpoint, the script requeues the job, and the requeued job resumes (--resume auto).
signal_job requeue USR1 "$w/requeue"
[ "$job_state" = COMPLETED ] || fail "requeue job ended $job_state"
[ "$job_restarts" = 1 ] || fail "requeue job restarted $job_restarts times, expected 1"
grep -q "got SIGUSR1" "$job_out" || fail "requeue: the batch script did not see USR1"
grep -q "status 'interrupted'" "$job_out" || fail "requeue: the first run did not stop as interrupted"
grep -q "requeueing job $jid" "$job_out" || fail "requeue: the script did not requeue"
grep -q "^train.sbatch: job $jid (restart 1)" "$job_out" || fail "requeue: no second run"
grep -q "resumed checkpoint=" "$job_out" || fail "requeue: the second run did not resume from a checkpoint"
[ "$(run_field "$w/requeue" status)" = finished ] || fail "requeue: $(cat "$w/requeue/train-status.json")"
# 72 training slices, global batch 8 (2 ranks x 4): 9 steps an epoch, as an uninterrupted run takes.
steps="$(run_field "$w/requeue" global_step)"
[ "$steps" = 54 ] || fail "requeue: $steps steps after the resumed run, expected 6 x 9 = 54"

# A cancelled job stays cancelled: no requeue of an interrupted run.
signal_job cancel CANCEL "$w/cancel"
[ "$job_state" = CANCELLED ] || fail "cancel: job ended $job_state"
[ "$job_restarts" = 0 ] || fail "cancel: the job was requeued ($job_restarts restarts)"
! grep -q "requeueing" "$job_out" || fail "cancel: the script requeued a cancelled job"
# The exit trap cleans the scratch of the requeued and the cancelled job too (within KillWait).
for i in $(seq 20); do [ -z "$(ls -A "$tmp/scratch")" ] && break; sleep 0.5; done
[ -z "$(ls -A "$tmp/scratch")" ] || fail "scratch not empty after requeue and cancel: $(ls -A "$tmp/scratch")"

# The scaling benchmark on 2 ranks: one CSV row.
MEDTRAIN_SCALING_STEPS=2 MEDTRAIN_BENCH_BYTES=1MB job_wait scaling --ntasks=2 "$root/slurm/scaling.sbatch" \
  "$w/tiny.toml" "$w/catalog" "$w/manifest.h5" "$w/scaling.csv"
[ "$job_rc" = 0 ] || fail "scaling.sbatch exited with $job_rc"
[ "$(wc -l <"$w/scaling.csv")" = 2 ] || fail "scaling.csv: expected a header and one row"
row="$(tail -n 1 "$w/scaling.csv")"
IFS=, read -r -a f <<<"$row"
# nodes,ranks,steps,world_size ... bench_world_size
[ "${f[2]}" = 1 ] && [ "${f[3]}" = 2 ] && [ "${f[4]}" = 2 ] && [ "${f[5]}" = 2 ] && [ "${f[13]}" = 2 ] ||
  fail "scaling.csv row: $row"
echo "slurm-test: scaling row $row"

# Outside a job every script refuses with exit status 2.
for s in pack train scaling; do
  rc=0
  env -u SLURM_JOB_ID bash "$root/slurm/$s.sbatch" a b c d >"$tmp/jobs/outside.txt" 2>&1 || rc=$?
  [ "$rc" = 2 ] && grep -q "not inside a Slurm job" "$tmp/jobs/outside.txt" ||
    fail "$s.sbatch outside a job: exit $rc, $(cat "$tmp/jobs/outside.txt")"
done
echo "slurm-test: ok in $((SECONDS - start)) s"
