#!/usr/bin/env bash
# Radiograph loader benchmark, one run, A B A B: 2048 x 2048 u16 DX radiographs → 512 x 512
# normalised float batches of 32 (window, 0.5–99.5 percentile clip, z-score, aspect-kept resize),
# with `medtrain bench loader` (memory-mapped shards, 2 threads per rank) against two Python peers
# (benches/loader_peers.py), each a 2-process pool per job: pydicom decoding every file each epoch, and
# a pre-converted uint16 numpy memmap cache. At 1 job and at 4 jobs reading at once (4 MPI ranks;
# 4 Python jobs). Warm page cache for all. Prints a Markdown table for BENCHMARKS.md.
# Usage: benches/loader.sh [WORK_DIR]   (MEDTRAIN_BENCH_IMAGES: radiographs, default 64)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(realpath -m "${1:-$root/target/bench-loader}")"
py="$(bash "$root/scripts/python-env.sh")"
n="${MEDTRAIN_BENCH_IMAGES:-64}"
if [ -z "${MEDTRAIN_BIN:-}" ]; then
  cargo build --release --locked --quiet --manifest-path "$root/Cargo.toml"
  bin="$root/target/release/medtrain"
else
  bin="$MEDTRAIN_BIN"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$work"
if [ ! -f "$work/catalog/.done" ]; then
  rm -rf "$work/dicom" "$work/pack" "$work/catalog" "$work/cache.npy"
  "$py" "$root/benches/loader_peers.py" write "$n" "$work/dicom"
  "$bin" -q pack "$work/dicom" --out "$work/pack" --key "$work/site.key" --create-key >/dev/null
  "$bin" -q catalog build "$work/pack" --out "$work/catalog" >/dev/null
  # A label per patient: training configs need one, the loader reads it beside the pixels.
  python3 -c "import sys; print('PatientID,y'); [print(f'BENCH{i:05d},{i % 2}') for i in range(int(sys.argv[1]))]" \
    "$n" > "$work/labels.csv"
  "$bin" -q catalog labels import "$work/labels.csv" --out "$work/catalog" --name bench \
    --key "$work/site.key" >/dev/null
  "$bin" -q catalog split "$work/catalog" "modality = 'DX'" --out "$work/manifest.h5" \
    --ratios train=1.0 --seed 1 >/dev/null
  touch "$work/catalog/.done"
fi
cat > "$work/loader.toml" <<'TOML'
[data]
mode = "slice"
size = [512, 512]
fit = true
windows = [[0.0, 1.0]]
labels = ["bench.y"]

[train]
batch_size = 32
threads = 2
TOML
cat "$work/dicom"/*.dcm "$work/pack"/*/* > /dev/null 2>&1 || true
steady() { python3 -c 'import json,sys,statistics; r=json.load(sys.stdin)["images_per_second"]; print(statistics.median(r[1:] or r))'; }
medtrain_run() { # ranks
  if [ "$1" = 1 ]; then
    "$bin" -q bench loader "$work/catalog" "$work/manifest.h5" --config "$work/loader.toml" --json | steady
  else
    mpirun --oversubscribe -n "$1" "$bin" -q bench loader "$work/catalog" "$work/manifest.h5" \
      --config "$work/loader.toml" --json | steady
  fi
}
python_run() { # mode jobs
  local pids=() k
  for k in $(seq 1 "$2"); do
    "$py" "$root/benches/loader_peers.py" "$1" "$work/dicom" "$work/cache.npy" > "$work/py-$k.json" &
    pids+=($!)
  done
  wait "${pids[@]}"
  for k in $(seq 1 "$2"); do steady < "$work/py-$k.json"; done | python3 -c 'import sys; print(sum(float(l) for l in sys.stdin))'
}
"$py" "$root/benches/loader_peers.py" cache "$work/dicom" "$work/cache.npy" > /dev/null   # build the cache once
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| jobs reading at once | run | medtrain (images/s) | pydicom pool | numpy memmap pool |"
echo "|---|---|---|---|---|"
for jobs in 1 4; do
  for run in 1 2 3; do
    m=$(medtrain_run "$jobs"); p=$(python_run pydicom "$jobs"); c=$(python_run cache "$jobs")
    printf '| %s | %s | %.1f | %.1f | %.1f |\n' "$jobs" "$run" "$m" "$p" "$c"
  done
done
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
