#!/usr/bin/env bash
# GPU check, run ON a GPU node from the bundle made by scripts/gpu-bundle.sh (no Rust, no MPI needed).
#     bash gpu-bundle/gpu-check.sh [--quick] [--lib-dir DIR]... [results-dir]
# Full profile: the start-up self-test, CPU-vs-GPU parity of every layer (first with MEDTRAIN_CUDA_SYNC=1,
# so a failing kernel is named where it fails), a 20-step loss curve against the CPU run, medtrain's step
# throughput (ResNet-18 2D at batch 64 and 256, 3D CNN at batch 8) and PyTorch eager on the same GPU,
# Grad-CAM maps on the GPU against the CPU and milliseconds per map beside PyTorch's hook-based Grad-CAM,
# and the quick start end to end on the GPU (train, eval, explain --evaluate; explain of the same model on
# the CPU after it, to compare).
# --quick (a ~5-minute loan): the self-test, parity (synchronous pass, then the normal one) and the
# 20-step curve only, each step limited to 120 s.
# Everything goes to ONE file, <dir>/gpu-check.json (dir = the argument, else $OUT, else
# ./gpu-check-results), with a short gpu-check.md beside it; the exact CUDA library files and versions
# used are recorded there (the self-test's report). Each command's exit code is recorded and the check
# goes on. Without a GPU the check says so, records why, and exits 3 without running the GPU steps.
# Libraries: the bundle's lib/, the --lib-dir directories (pip or conda locations, e.g.
# .../site-packages/nvidia/cudnn/lib), then the node's own loader path (LD_LIBRARY_PATH, ldconfig);
# medtrain resolves the exact files of its CUDA major from these (README: "CUDA versions").
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
QUICK=0
LIB_DIRS=()
RESULTS=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --lib-dir)
      [ $# -ge 2 ] || { echo "gpu-check: --lib-dir needs a directory" >&2; exit 2; }
      [ -d "$2" ] || { echo "gpu-check: --lib-dir $2 is not a directory" >&2; exit 2; }
      LIB_DIRS+=("$(cd "$2" && pwd)")
      shift ;;
    --lib-dir=*) LIB_DIRS+=("${1#--lib-dir=}") ;;
    -h | --help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$RESULTS" ] || { echo "gpu-check: one results directory only" >&2; exit 2; }
      RESULTS=$1 ;;
  esac
  shift
done
RESULTS=${RESULTS:-${OUT:-$PWD/gpu-check-results}}
mkdir -p "$RESULTS/gpu-check-logs"
RESULTS=$(cd "$RESULTS" && pwd)
LOGS=$RESULTS/gpu-check-logs
JSON=$RESULTS/gpu-check.json
MD=$RESULTS/gpu-check.md
if [ "$QUICK" = 1 ]; then STEP_TIMEOUT=${GPU_CHECK_TIMEOUT:-120}; else STEP_TIMEOUT=${GPU_CHECK_TIMEOUT:-1800}; fi

# The binary and the torch peer: from the bundle, or from a checkout when rehearsing (MEDTRAIN_BIN).
BIN=${MEDTRAIN_BIN:-$HERE/medtrain}
TORCH_PEER=$HERE/benches/gpu_torch.py
[ -f "$TORCH_PEER" ] || TORCH_PEER=$HERE/../benches/gpu_torch.py
EXPLAIN_PEER=$(dirname "$TORCH_PEER")/explain_torch.py
QUICKSTART=$HERE/scripts/quickstart.sh
[ -f "$QUICKSTART" ] || QUICKSTART=$HERE/quickstart.sh
# The quick start's data (phantom, pack, catalog, run) stay out of the results; its reports are copied.
E2E=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/medtrain-gpu-check}/quickstart
PYTHON=${PYTHON:-python3}

# ---- libraries: the bundle's own, the --lib-dir directories, then the node's loader path ----
# No search of the file system: a library the loader does not know is given with --lib-dir.
LIBPATH=$HERE/lib
CUDA_LIB_DIRS=$(IFS=:; printf '%s' "${LIB_DIRS[*]:-}")
export LD_LIBRARY_PATH=$LIBPATH${CUDA_LIB_DIRS:+:$CUDA_LIB_DIRS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export MEDTRAIN_CUDA_LIB_DIRS=$CUDA_LIB_DIRS${MEDTRAIN_CUDA_LIB_DIRS:+:$MEDTRAIN_CUDA_LIB_DIRS}
LOADER_CUDA=$(ldconfig -p 2>/dev/null | grep -E 'lib(cuda|cudnn|cublas|cublasLt|nvrtc)\.so' || true)
# A single process: no MPI initialisation at all.
export MEDTRAIN_MPI=never

# ---- JSON helpers (no jq or python required) ----
json_str() { # stdin → one JSON string literal
  LC_ALL=C awk 'BEGIN { ORS = ""; print "\"" }
    { gsub(/\\/, "&&"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r");
      gsub(/[\001-\010\013\014\016-\037\177]/, "?"); if (NR > 1) print "\\n"; print }
    END { print "\"" }'
}
is_json() { # file: is it one valid JSON value? (needs python3; without it, embed as text)
  command -v "$PYTHON" >/dev/null 2>&1 && "$PYTHON" -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null
}

RECORDS=()
FAILED=()
SUMMARY=()
run_step() { # <name> <command...>: runs it, records exit code, time, stdout (as JSON when it is JSON)
  local name=$1
  shift
  local out=$LOGS/$name.out err=$LOGS/$name.err start end code
  echo "== $name: $*" >&2
  start=$(date +%s.%N)
  timeout "$STEP_TIMEOUT" "$@" >"$out" 2>"$err"
  code=$?
  end=$(date +%s.%N)
  echo "   exit $code" >&2
  [ "$code" = 0 ] || FAILED+=("$name")
  SUMMARY+=("| $name | $code | $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') |")
  local stdout
  if [ -s "$out" ] && is_json "$out"; then stdout=$(cat "$out"); else stdout=$(json_str <"$out"); fi
  RECORDS+=("{\"name\": $(printf '%s' "$name" | json_str), \"command\": $(printf '%s ' "$@" | json_str),
   \"exit_code\": $code, \"timed_out\": $([ "$code" = 124 ] && echo true || echo false),
   \"seconds\": $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }'),
   \"stdout\": $stdout, \"stderr_tail\": $(tail -c 4000 "$err" | json_str)}")
}

# ---- the checks ----
# Is there a GPU at all? The self-test opens it the way every medtrain job does; "CUDA is not
# available" (no driver, no device, a missing library) means there is nothing to check here.
GPU_PRESENT=true
NO_GPU_REASON=
run_step selftest "$BIN" bench selftest --device cuda --json
if grep -q 'CUDA is not available' "$LOGS/selftest.err" "$LOGS/selftest.out" 2>/dev/null ||
  ! [ -x "$BIN" ]; then
  GPU_PRESENT=false
  NO_GPU_REASON=$(grep -ho 'CUDA is not available.*' "$LOGS/selftest.err" "$LOGS/selftest.out" 2>/dev/null | head -1)
  [ -x "$BIN" ] || NO_GPU_REASON="no medtrain binary at $BIN"
  echo "gpu-check: NO GPU PRESENT: ${NO_GPU_REASON:-unknown reason}; nothing was checked on a GPU" >&2
fi
if [ "$GPU_PRESENT" = true ]; then
  run_step nvidia-smi-query nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm \
    --format=csv
  [ "$QUICK" = 1 ] || run_step nvidia-smi nvidia-smi
  [ "$QUICK" = 1 ] || run_step ldd ldd "$BIN"
  run_step version "$BIN" --version
  # First pass synchronous: an asynchronous kernel failure is reported by the op that caused it.
  run_step parity-sync env MEDTRAIN_CUDA_SYNC=1 CUDA_LAUNCH_BLOCKING=1 "$BIN" bench parity --device cuda --json
  run_step parity "$BIN" bench parity --device cuda --json
  run_step curve "$BIN" bench curve --steps 20 --json
fi
if [ "$GPU_PRESENT" = true ] && [ "$QUICK" = 0 ]; then
  run_step step-resnet18-2d-b64 "$BIN" bench step --device cuda --model resnet18-2d --batch 64
  run_step step-resnet18-2d-b256 "$BIN" bench step --device cuda --model resnet18-2d --batch 256
  run_step step-resnet3d-b8 "$BIN" bench step --device cuda --model resnet3d --batch 8
  run_step torch-eager "$PYTHON" "$TORCH_PEER"
  run_step explain-maps "$BIN" bench explain --device cuda --model all --reps 5 --json
  run_step explain-torch-slice2d "$PYTHON" "$EXPLAIN_PEER" slice2d 5 cuda
  run_step explain-torch-volume3d "$PYTHON" "$EXPLAIN_PEER" volume3d 5 cuda
fi
if [ "$GPU_PRESENT" = true ] && [ "$QUICK" = 0 ] && [ "${GPU_CHECK_QUICKSTART:-1}" = 1 ]; then
  rm -rf "$E2E"
  run_step quickstart-cuda env MEDTRAIN_BIN="$BIN" MEDTRAIN_DEVICE=cuda MEDTRAIN_RANKS=1 bash "$QUICKSTART" "$E2E"
  run_step explain-quality-cuda cat "$E2E/explain/quality.json"
  run_step explain-quality-cpu-same-model "$BIN" explain "$E2E/run" test --out "$E2E/explain-cpu" --evaluate \
    --truth "$E2E/phantom/truth/lesions.csv" --key "$E2E/site.key" --layer blocks --device cpu --json
  mkdir -p "$RESULTS/quickstart"
  for f in run/report.md run/metrics.jsonl run/train-status.json eval/eval.md explain/report.md \
    explain/quality.md explain/quality.json explain-cpu/quality.json; do
    [ -f "$E2E/$f" ] && cp "$E2E/$f" "$RESULTS/quickstart/${f//\//-}"
  done
  cp "$E2E"/explain/*.png "$RESULTS/quickstart/" 2>/dev/null || true
fi

# ---- one results file ----
{
  echo "{"
  echo " \"check\": \"medtrain gpu-check\","
  echo " \"host\": $(hostname | json_str),"
  echo " \"date_utc\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo " \"bundle\": $(cat "$HERE/VERSION" 2>/dev/null | json_str),"
  echo " \"binary\": $(printf '%s' "$BIN" | json_str),"
  echo " \"profile\": \"$([ "$QUICK" = 1 ] && echo quick || echo full)\","
  echo " \"gpu_present\": $GPU_PRESENT,"
  echo " \"no_gpu_reason\": $(printf '%s' "$NO_GPU_REASON" | json_str),"
  echo " \"cuda_library_dirs\": $(printf '%s' "$CUDA_LIB_DIRS" | json_str),"
  echo " \"loader_cuda_libraries\": $(printf '%s' "$LOADER_CUDA" | json_str),"
  echo " \"ld_library_path\": $(printf '%s' "$LD_LIBRARY_PATH" | json_str),"
  printf ' "failed": ['
  for i in "${!FAILED[@]}"; do
    [ "$i" -gt 0 ] && printf ', '
    printf '%s' "${FAILED[$i]}" | json_str
  done
  echo "],"
  echo " \"steps\": ["
  for i in "${!RECORDS[@]}"; do
    [ "$i" -gt 0 ] && echo "  ,"
    echo "  ${RECORDS[$i]}"
  done
  echo " ]"
  echo "}"
} >"$JSON"
echo "results: $JSON" >&2
if is_json "$JSON"; then echo "results file is valid JSON" >&2; else echo "warning: could not validate $JSON" >&2; fi

# ---- a short markdown summary beside it ----
{
  echo "# medtrain gpu-check ($([ "$QUICK" = 1 ] && echo quick || echo full)), $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo
  if [ "$GPU_PRESENT" = false ]; then
    echo "**No GPU present**: ${NO_GPU_REASON:-unknown reason}. Nothing was checked on a GPU."
    echo
  fi
  echo "| step | exit | seconds |"
  echo "|---|---|---|"
  printf '%s\n' "${SUMMARY[@]}"
  echo
  echo "Library directories given: ${CUDA_LIB_DIRS:-none}; the files and versions used are in \`gpu-check.json\` (step \`selftest\`, \`facts\`)."
} >"$MD"
echo "summary: $MD" >&2

if [ "$GPU_PRESENT" = false ]; then
  echo "gpu-check: no GPU present; exit 3" >&2
  exit 3
fi
# Exit status: 0 only when every step succeeded (the results file is written either way).
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "failed steps: ${FAILED[*]}" >&2
  exit 1
fi
