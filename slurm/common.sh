# Shared by the job scripts in slurm/ (sourced, not run). Loads the site settings, finds the medtrain
# binary, prints where the job runs, and wraps srun so every rank gets its GPU.

# The site settings: $MEDTRAIN_SITE_ENV if set (it must exist), else site.env next to this file.
mt_load_site() {
  local env_file="${MEDTRAIN_SITE_ENV:-$MT_SLURM_DIR/site.env}"
  if [ -n "${MEDTRAIN_SITE_ENV:-}" ] && [ ! -r "$env_file" ]; then
    echo "$MT_SCRIPT: MEDTRAIN_SITE_ENV=$env_file is not a readable file" >&2
    exit 2
  fi
  if [ -r "$env_file" ]; then
    # shellcheck disable=SC1090
    . "$env_file"
    echo "$MT_SCRIPT: site settings from $env_file"
  else
    echo "$MT_SCRIPT: no site settings ($env_file missing); using defaults"
  fi
  MEDTRAIN_GPUS_PER_NODE="${MEDTRAIN_GPUS_PER_NODE:-0}"
  MEDTRAIN_SRUN_MPI="${MEDTRAIN_SRUN_MPI:-pmix}"
  case "$MEDTRAIN_GPUS_PER_NODE" in
    '' | *[!0-9]*)
      echo "$MT_SCRIPT: MEDTRAIN_GPUS_PER_NODE=$MEDTRAIN_GPUS_PER_NODE is not a whole number" >&2
      exit 2
      ;;
  esac
  export MEDTRAIN_GPUS_PER_NODE MEDTRAIN_SRUN_MPI
  if [ -n "${MEDTRAIN_MODULES:-}" ]; then
    if ! command -v module >/dev/null 2>&1; then
      echo "$MT_SCRIPT: MEDTRAIN_MODULES is set but the 'module' command is missing" >&2
      exit 2
    fi
    # shellcheck disable=SC2086
    module load $MEDTRAIN_MODULES || {
      echo "$MT_SCRIPT: module load $MEDTRAIN_MODULES failed" >&2
      exit 2
    }
  fi
  MT_BIN="${MEDTRAIN_BIN:-medtrain}"
  if ! command -v "$MT_BIN" >/dev/null 2>&1; then
    echo "$MT_SCRIPT: medtrain binary '$MT_BIN' not found (set MEDTRAIN_BIN or load its module)" >&2
    exit 2
  fi
  MT_BIN="$(command -v "$MT_BIN")"
  # Compute threads per rank follow the allocation when it says how many CPUs a task has.
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ] && [ -z "${RAYON_NUM_THREADS:-}" ]; then
    export RAYON_NUM_THREADS="$SLURM_CPUS_PER_TASK"
  fi
}

# Job id, nodes and tasks, one host per line.
mt_print_hosts() {
  echo "$MT_SCRIPT: job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NUM_NODES:-1}" \
    "node(s), ${SLURM_NTASKS:-?} task(s); binary $MT_BIN"
  local h
  for h in $(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname -s)}" 2>/dev/null || hostname -s); do
    echo "  host $h"
  done
}

# srun arguments for one rank per GPU on `nodes` nodes (the allocation's tasks when the nodes have no GPUs).
mt_rank_layout() {
  local nodes="${1:-${SLURM_JOB_NUM_NODES:-1}}"
  if [ "$MEDTRAIN_GPUS_PER_NODE" -gt 0 ]; then
    echo "--nodes=$nodes --ntasks=$((nodes * MEDTRAIN_GPUS_PER_NODE)) --ntasks-per-node=$MEDTRAIN_GPUS_PER_NODE"
  elif [ -z "${SLURM_NTASKS:-}" ]; then
    # No task count given to sbatch: srun's default, one task per node.
    echo "--nodes=$nodes --ntasks=$nodes --ntasks-per-node=1"
  elif [ "$nodes" = "${SLURM_JOB_NUM_NODES:-1}" ]; then
    echo "--nodes=$nodes --ntasks=$SLURM_NTASKS"
  else
    # A part of the allocation: as many tasks per node as the job has.
    local per_node=$((SLURM_NTASKS / ${SLURM_JOB_NUM_NODES:-1}))
    [ "$per_node" -gt 0 ] || per_node=1
    echo "--nodes=$nodes --ntasks=$((nodes * per_node)) --ntasks-per-node=$per_node"
  fi
}

# Runs in every task: binds the rank to one GPU by its local rank unless Slurm already gave the task
# exactly one, then becomes the command.
# shellcheck disable=SC2016
MT_RANK_WRAPPER='
if [ "${MEDTRAIN_GPUS_PER_NODE:-0}" -gt 0 ]; then
  IFS=, read -r -a devs <<< "${CUDA_VISIBLE_DEVICES:-}"
  if [ "${#devs[@]}" -eq 0 ]; then
    export CUDA_VISIBLE_DEVICES="${SLURM_LOCALID:-0}"
  elif [ "${#devs[@]}" -gt 1 ]; then
    export CUDA_VISIBLE_DEVICES="${devs[$(( ${SLURM_LOCALID:-0} % ${#devs[@]} ))]}"
  fi
fi
echo "task ${SLURM_PROCID:-0}/${SLURM_NTASKS:-1} on $(hostname -s): local ${SLURM_LOCALID:-0}, GPU ${CUDA_VISIBLE_DEVICES:-none}" >&2
exec "$@"'

# The srun command line, with the site's PMI plug-in and the GPU binding, in the array MT_CMD:
# mt_srun_cmd [SRUN OPTIONS...] -- COMMAND...
mt_srun_cmd() {
  MT_CMD=(srun --mpi="$MEDTRAIN_SRUN_MPI" --kill-on-bad-exit=1)
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    MT_CMD+=("$1")
    shift
  done
  shift
  MT_CMD+=(bash -c "$MT_RANK_WRAPPER" medtrain-rank "$@")
}

# Runs that srun in the foreground: mt_srun [SRUN OPTIONS...] -- COMMAND...
mt_srun() {
  mt_srun_cmd "$@"
  "${MT_CMD[@]}"
}

# The "status" of a run's train-status.json ("finished", "interrupted", "max-steps"), empty if none.
mt_train_status() {
  local f="$1/train-status.json"
  [ -r "$f" ] || return 0
  sed -n 's/^  "status": "\([^"]*\)",\{0,1\}$/\1/p' "$f" | head -n 1
}

# A top-level number or string of a pretty-printed JSON object (two-space indent), empty if missing.
mt_json_field() {
  sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$1" | head -n 1
}
