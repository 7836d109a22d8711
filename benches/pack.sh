#!/usr/bin/env bash
# Side-by-side pack benchmark, one run: medtrain pack vs the pydicom + numpy + h5py pipeline
# (benches/pack_pydicom.py) on the same phantom cohorts, the same 2 cores, warm page cache for both
# (each input tree is read once before timing). Prints a Markdown table for BENCHMARKS.md.
# Usage: benches/pack.sh [WORK_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(realpath -m "${1:-$root/target/bench-pack}")"
py="$(bash "$root/scripts/python-env.sh")"
cargo build --release --locked --quiet --manifest-path "$root/Cargo.toml"
bin="$root/target/release/medtrain"
threads="${RAYON_NUM_THREADS:-2}"
export RAYON_NUM_THREADS="$threads"
rm -rf "$work"; mkdir -p "$work"
cat > "$work/ct512.toml" <<'TOML'
[phantom]
patients = 8
size = 512
slices = 120
radiographs = false
TOML
cat > "$work/default.toml" <<'TOML'
[phantom]
radiographs = false
TOML
"$bin" -q phantom --out "$work/default" --config "$work/default.toml" >/dev/null
"$bin" -q phantom --out "$work/ct512" --config "$work/ct512.toml" >/dev/null
echo "| cohort | tool | series | MB | seconds | series/s | MB/s |"
echo "|---|---|---|---|---|---|---|"
for cohort in default ct512; do
  dicom="$work/$cohort/dicom"
  find "$dicom" -type f -exec cat {} + > /dev/null
  for run in 1 2 3; do
    rm -rf "$work/$cohort-pack" "$work/$cohort-py.h5"
    m=$("$bin" -q pack "$dicom" --out "$work/$cohort-pack" --key "$work/site.key" --create-key --json)
    p=$("$py" "$root/benches/pack_pydicom.py" "$dicom" "$work/$cohort-py.h5" --workers "$threads")
    echo "$cohort $run $m" | tr -d '\n' | python3 -c "
import json,sys
line=sys.stdin.read(); cohort, run, js = line.split(' ', 2)
m=json.loads(js); print(cohort, run, 'medtrain', m['items_packed'], m['pixel_bytes_written'], m['seconds'])" >> "$work/raw.txt"
    echo "$cohort $run $p" | python3 -c "
import json,sys
cohort, run, js = sys.stdin.read().split(' ', 2)
p=json.loads(js); print(cohort, run, 'pydicom+h5py', p['series'], p['bytes'], p['seconds'])" >> "$work/raw.txt"
  done
done
python3 - "$work/raw.txt" <<'PY'
import sys, statistics
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    cohort, run, tool, series, nbytes, sec = line.split()
    rows[(cohort, tool)].append((int(series), int(nbytes), float(sec)))
for (cohort, tool), runs in sorted(rows.items()):
    sec = statistics.median(r[2] for r in runs)
    series, nbytes = runs[0][0], runs[0][1]
    print(f"| {cohort} | {tool} | {series} | {nbytes/1e6:.0f} | {sec:.2f} | {series/sec:.1f} | {nbytes/1e6/sec:.0f} |")
PY
