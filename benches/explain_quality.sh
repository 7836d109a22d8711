#!/usr/bin/env bash
# Explanation quality of the quick start, run after run: each run makes a new site key, so a new
# patient-level split and a newly trained model; the method and layer are chosen on val and scored on
# test (pointing game, 5 mm margin). Prints one row per run and keeps every run's outputs.
#   benches/explain_quality.sh OUT_ROOT [runs] [config]
# e.g. benches/explain_quality.sh /tmp/eq 3                                  (the quick start, 160 patients)
#      benches/explain_quality.sh /tmp/eq400 1 benches/explain_quality.toml  (400 patients)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(realpath -m "${1:?usage: benches/explain_quality.sh OUT_ROOT [runs] [config]}")
mkdir -p "$root"
runs=${2:-3}
export MEDTRAIN_CONFIG=${3:-configs/smoke.toml}
if [ -z "${MEDTRAIN_BIN:-}" ]; then
  cargo build --release --locked --quiet
  export MEDTRAIN_BIN=$PWD/target/release/medtrain
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "| run | config | series AUC (test) | chosen on val | val hit rate | test hits | test hit rate [95% CI] | median peak-to-lesion mm | sanity | seconds |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for i in $(seq 1 "$runs"); do
  out=$root/run$i
  rm -rf "$out"
  start=$SECONDS
  bash scripts/quickstart.sh "$out" >"$out.log" 2>&1 || { echo "| $i | failed, see $out.log |"; continue; }
  python3 - "$out" "$MEDTRAIN_CONFIG" $((SECONDS - start)) <<'PY'
import json, sys
out, config, secs = sys.argv[1], sys.argv[2], sys.argv[3]
q = json.load(open(f"{out}/explain/quality.json"))
e = json.load(open(f"{out}/eval/eval.json"))
auc = e["series"]["auc"]["estimate"]
best = q["best"]
val = next(r for r in q["validation"] if r["method"] == q["method"] and r["layer"] == q["best_layer"])
lo, hi = best["hit_rate_ci"]
print(f"| {out.rsplit('/', 1)[-1]} | {config} | {auc:.3f} | {q['method']} at {q['best_layer']} | {val['hit_rate']:.3f} | "
      f"{best['hits']}/{best['series']} | {best['hit_rate']:.3f} [{lo:.2f}, {hi:.2f}] | {best['median_distance_mm']:.1f} | "
      f"{'passed' if q['sanity']['passed'] else 'FAILED'} | {secs} |")
PY
done
