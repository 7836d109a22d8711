#!/usr/bin/env bash
# Catalog benchmark (not a timed test): writes a metadata-only cohort, builds the catalog, imports
# the labels, times the planning queries in medtrain, then the same queries on DuckDB and SQLite.
# Usage: benches/catalog_bench.sh WORK_DIR [SERIES] [MEAN_SLICES]   (defaults: 90000 x 200 = 18 M)
# Needs a release build (cargo build --release; MEDTRAIN_BIN names another binary) and the peers'
# Python (benches/peers-env.sh: h5py, numpy, pandas, duckdb; PYTHON names another interpreter).
set -euo pipefail
work=${1:?work directory}
series=${2:-90000}
slices=${3:-200}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${MEDTRAIN_BIN:-$root/target/release/medtrain}")
python=${PYTHON:-$(bash "$root/benches/peers-env.sh")}
peers=$(cd "$(dirname "$0")" && pwd)/catalog_peers.py
mkdir -p "$work" && cd "$work"
rm -rf cat
[ -f pack/index.json ] || "$bin" catalog synth --out pack --key site.key --series "$series" --slices "$slices"
/usr/bin/time -f "build: %e s wall, %M KiB max RSS" "$bin" catalog build pack --out cat
/usr/bin/time -f "labels (slices): %e s wall, %M KiB max RSS" \
  "$bin" catalog labels import pack/slices_by_instance.csv --out cat --name inst --key site.key
/usr/bin/time -f "labels (patients): %e s wall, %M KiB max RSS" \
  "$bin" catalog labels import pack/patients.csv --out cat --name pt --key site.key \
  --event-within death_5y=Death,FollowUpDays,1826
"$bin" catalog bench cat --repeat 30 > medtrain-bench.json
grep -E '"(open_ms|peak_rss_mib|slices)"' medtrain-bench.json
"$python" "$peers" pack site.key medtrain-bench.json 10
