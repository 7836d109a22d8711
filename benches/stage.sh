#!/usr/bin/env bash
# Staging throughput, one run: `medtrain stage` (1 rank, and 2 ranks under mpirun) against `cp`,
# `rsync` and `cp` + `b3sum --check` of the same shard set (the plan's files), from the same source
# directory to the same destination disk, alternating, 3 passes, median. Before every timed run the
# page cache is bypassed: the source shards are fsynced and evicted with posix_fadvise(DONTNEED)
# (benches/evict_cache.py; drop_caches is not writable in a container), checked with `fincore`, and the
# destination is removed. Every tool's copies are made durable inside its timing: stage fsyncs each file,
# the others are followed by `sync FILE...` (fsync of each copy).
# Validation first: bytes copied per node (`stage --json`) must equal the plan (`stage --dry-run --json`),
# for the one-node benchmark plan and for a two-node shard-local plan (MEDTRAIN_NODE_NAME per rank);
# the script fails otherwise.
#   benches/stage.sh [DEMO_DIR] [PASSES]
# DEMO_DIR holds catalog/, manifest.h5 and pack/ (scripts/quickstart.sh layout); when it has no
# manifest.h5, a 1.26 GB cohort in 64 MiB shards is made there from benches/stage_bench.toml.
# MEDTRAIN_BIN=/path/to/medtrain skips the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
demo="$(realpath -m "${1:-target/bench-stage/demo}")"
passes="${2:-3}"
config="$root/benches/stage_bench.toml"
if [ -n "${MEDTRAIN_BIN:-}" ]; then
  bin="$(realpath "$MEDTRAIN_BIN")"
else
  cargo build --release --locked --quiet
  bin="$root/target/release/medtrain"
fi
for tool in rsync b3sum fincore mpirun; do
  command -v "$tool" >/dev/null || { echo "stage.sh: $tool is missing (apt-get install -y rsync b3sum)" >&2; exit 2; }
done
if [ ! -f "$demo/manifest.h5" ]; then
  echo "making the benchmark cohort in $demo" >&2
  mkdir -p "$demo"
  "$bin" -q phantom --out "$demo/phantom" --config "$config" >/dev/null
  "$bin" -q pack "$demo/phantom/dicom" --out "$demo/pack" --key "$demo/site.key" --create-key --config "$config" >/dev/null
  "$bin" -q catalog build "$demo/pack" --out "$demo/catalog" >/dev/null
  "$bin" -q catalog labels import "$demo/phantom/truth/slices_by_instance.csv" --out "$demo/catalog" \
    --name nodule_slices --key "$demo/site.key" >/dev/null
  "$bin" -q catalog labels import "$demo/phantom/truth/series.csv" --out "$demo/catalog" \
    --name series_labels --key "$demo/site.key" --ignore Modality --ignore StudyInstanceUID >/dev/null
  "$bin" -q catalog split "$demo/catalog" "modality = 'CT'" --out "$demo/manifest.h5" \
    --ratios train=0.6,val=0.25,test=0.15 --stratify series_labels.nodule --seed 2026 >/dev/null
fi
mpi=(mpirun --oversubscribe --bind-to none)
if [ "$(id -u)" = 0 ]; then mpi+=(--allow-run-as-root); fi
# The destination sits next to the demo: the same file system as the source, as a worst case.
work="$(dirname "$demo")/stage-work"
rm -rf "$work"; mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
stage=("$bin" -q stage "$demo/catalog" "$demo/manifest.h5" --config "$config" --json)

# The plan: shard files and bytes per node.
"${stage[@]}" --local "$work/dst" --job-id plan --dry-run > "$work/plan.json"
python3 - "$work/plan.json" "$demo/pack" > "$work/files.txt" <<'PY'
import json, os, sys
plan = json.load(open(sys.argv[1]))
assert plan["status"] == "dry-run", plan["status"]
[node] = plan["nodes"]
for f in node["shards"]:
    print(os.path.join(sys.argv[2], f))
PY
mapfile -t files < "$work/files.txt"
planned=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['nodes'][0]['bytes_planned'])" "$work/plan.json")
ondisk=$(stat -c %s "${files[@]}" | awk '{s+=$1} END {print s}')
if [ "$planned" != "$ondisk" ]; then
  echo "stage.sh: the plan says $planned bytes, its files hold $ondisk" >&2; exit 1
fi

evict() { python3 "$root/benches/evict_cache.py" "$@" >/dev/null; }
resident() { fincore --bytes --noheadings --raw -o RES "$@" | awk '{s+=$1} END {print s+0}'; }
cold() { # evict the sources, check that nothing of them is cached, clear the destination
  rm -rf "$work/dst"; mkdir -p "$work/dst"
  evict "${files[@]}"
  local r; r=$(resident "${files[@]}")
  if [ "$r" -gt 0 ]; then echo "stage.sh: $r bytes of the source still cached after eviction" >&2; exit 1; fi
}
now() { date +%s.%N; }

# Does eviction work? A read right after eviction must be much slower than a second one.
cold
t0=$(now); cat "${files[@]}" > /dev/null; t1=$(now); cat "${files[@]}" > /dev/null; t2=$(now)
echo "source read after eviction: $(python3 -c "print(f'{$ondisk/1e6/($t1-$t0):.0f}')") MB/s; read again" \
  "(page cache): $(python3 -c "print(f'{$ondisk/1e6/($t2-$t1):.0f}')") MB/s"

check_bytes() { # plan.json stage.json label: every node copied exactly its plan, nothing skipped
  python3 - "$@" <<'PY'
import json, sys
plan, got, label = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
assert got["status"] == "staged", f"{label}: status {got['status']}"
byname = {n["name"]: n for n in plan["nodes"]}
assert len(got["nodes"]) == len(plan["nodes"]), f"{label}: node count differs from the plan"
for n in got["nodes"]:
    p = byname[n["name"]]
    ok = (n["bytes_copied"] == p["bytes_planned"] == n["bytes_planned"] and n["bytes_skipped"] == 0
          and n["shards_copied"] == len(p["shards"]) and n["shards"] == p["shards"] and not n["failed"])
    if not ok:
        sys.exit(f"{label}: node {n['name']} copied {n['bytes_copied']} bytes ({n['shards_copied']} shards), "
                 f"skipped {n['bytes_skipped']}; the plan says {p['bytes_planned']} ({len(p['shards'])} shards)")
    print(f"{label}: node {n['name']}: {len(p['shards'])} shards, {n['bytes_copied']} bytes copied = planned")
PY
}

# Validation: a two-node shard-local plan (two ranks named as two nodes, each with its own disk
# directory): each node copies exactly its planned, disjoint share.
sed 's/^mode = "global"/mode = "shard-local"/' "$config" > "$work/shard-local.toml"
two=("$bin" -q stage "$demo/catalog" "$demo/manifest.h5" --config "$work/shard-local.toml" --job-id two --json)
for phase in plan copy; do
  extra=(); [ "$phase" = plan ] && extra=(--dry-run)
  "${mpi[@]}" -np 1 -x MEDTRAIN_NODE_NAME=node-a "${two[@]}" --local "$work/dst/a" "${extra[@]}" \
    : -np 1 -x MEDTRAIN_NODE_NAME=node-b "${two[@]}" --local "$work/dst/b" "${extra[@]}" > "$work/two-$phase.json"
done
check_bytes "$work/two-plan.json" "$work/two-copy.json" "2-node shard-local"

# The timed runs. Each prints its seconds; stage runs also check their bytes against the plan.
run_stage() { # ranks
  local ranks=$1 t0 t1
  cold; t0=$(now)
  if [ "$ranks" = 1 ]; then
    "${stage[@]}" --local "$work/dst" --job-id bench > "$work/run.json"
  else
    "${mpi[@]}" -np "$ranks" "${stage[@]}" --local "$work/dst" --job-id bench > "$work/run.json"
  fi
  t1=$(now)
  check_bytes "$work/plan.json" "$work/run.json" "stage $ranks rank(s)" >&2
  echo "$t0 $t1"
}
run_cp() {
  local t0 t1; cold; t0=$(now)
  cp "${files[@]}" "$work/dst/"; sync "$work/dst"/*.h5
  t1=$(now); echo "$t0 $t1"
}
run_rsync() {
  local t0 t1; cold; t0=$(now)
  rsync --whole-file "${files[@]}" "$work/dst/"; sync "$work/dst"/*.h5
  t1=$(now); echo "$t0 $t1"
}
run_cp_b3sum() {
  local t0 t1; cold; t0=$(now)
  cp "${files[@]}" "$work/dst/"; sync "$work/dst"/*.h5
  (cd "$work/dst" && for f in "${files[@]}"; do cat "$f.blake3"; done | b3sum --num-threads 1 --check --quiet)
  t1=$(now); echo "$t0 $t1"
}
: > "$work/raw.txt"
for pass in $(seq 1 "$passes"); do
  for tool in "stage 1 rank" cp "stage 2 ranks" rsync "cp + b3sum --check"; do
    case "$tool" in
      "stage 1 rank") run_stage 1 > "$work/t" ;;
      "stage 2 ranks") run_stage 2 > "$work/t" ;;
      cp) run_cp > "$work/t" ;;
      rsync) run_rsync > "$work/t" ;;
      *) run_cp_b3sum > "$work/t" ;;
    esac
    read -r t0 t1 < "$work/t"
    copied=$(find "$work/dst" -type f -name '*.h5' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    if [ "$copied" != "$planned" ]; then
      echo "stage.sh: $tool left $copied bytes in the destination, the plan has $planned" >&2; exit 1
    fi
    echo "$pass|$tool|$t0|$t1" >> "$work/raw.txt"
  done
done

# Hashing cost alone: a rerun of stage over its own verified copies re-hashes every file (page cache
# warm: the copies were just written), and b3sum on one thread over the same bytes.
run_stage 1 > /dev/null
t0=$(now); "${stage[@]}" --local "$work/dst" --job-id bench > "$work/rehash.json"; t1=$(now)
python3 -c "import json,sys;n=json.load(open(sys.argv[1]))['nodes'][0];assert n['shards_skipped']==len(n['shards']),n" \
  "$work/rehash.json"
t2=$(now); (cd "$work/dst/medtrain-bench" && for f in "${files[@]}"; do cat "$f.blake3"; done \
  | b3sum --num-threads 1 --check --quiet); t3=$(now)

python3 - "$work/raw.txt" "$planned" "${#files[@]}" "$t0" "$t1" "$t2" "$t3" <<'PY'
import statistics, sys
raw, planned, nfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rehash, b3 = float(sys.argv[5]) - float(sys.argv[4]), float(sys.argv[7]) - float(sys.argv[6])
runs = {}
for line in open(raw):
    p, tool, t0, t1 = line.strip().split("|")
    runs.setdefault(tool, []).append(float(t1) - float(t0))
cp = statistics.median(runs["cp"])
print(f"{nfiles} shards, {planned/1e6:.0f} MB, page cache bypassed (fsync + POSIX_FADV_DONTNEED) before every run")
print("| tool | seconds per pass | median s | MB/s | × cp |")
print("|---|---|---:|---:|---:|")
for tool, secs in runs.items():
    m = statistics.median(secs)
    per = ", ".join(f"{s:.2f}" for s in secs)
    print(f"| {tool} | {per} | {m:.2f} | {planned/1e6/m:.0f} | {cp/m:.2f} |")
print(f"hashing alone (page cache warm): stage rerun re-verifying every copy {rehash:.2f} s "
      f"({planned/1e6/rehash:.0f} MB/s incl. planning), b3sum --num-threads 1 {b3:.2f} s ({planned/1e6/b3:.0f} MB/s)")
PY
