#!/usr/bin/env bash
# Fuzzing in two modes; both build the cargo-fuzz targets in fuzz/ and fail on any crash, hang
# (-timeout) or out-of-memory (-rss_limit_mb).
#
#   scripts/fuzz.sh [RUNS] [target...]            the CI gate (scripts/test.sh runs it): a function of
#       the commit. Every reproducer in fuzz/regressions/ (<target>-*.gz) is replayed through its
#       target, then each target runs a fixed number of inputs (its row in runs_for below, about 20 s
#       each on a 2-core machine; RUNS or MEDTRAIN_FUZZ_RUNS sets one number for all) with libFuzzer
#       seed 1 from a fresh copy of the fixed seed corpora (scripts/fuzz-seeds.sh: committed text seeds and
#       binary seeds made with a fixed site key, byte for byte the same on every machine). A count of
#       inputs, not a time budget: the same commit gives the same verdict on a fast or a slow machine.
#   scripts/fuzz.sh --campaign SECONDS [target...]  exploratory fuzzing: fresh binary seeds made with a
#       new random site key, a random libFuzzer seed, SECONDS per target, a corpus kept across runs in
#       fuzz/corpus/. Findings land in fuzz/artifacts/<target>/; triage each into a regression
#       (gzip it into fuzz/regressions/<target>-<what>.gz with a test) before fixing.
#
# Without nightly Rust or cargo-fuzz it prints why and exits 0; MEDTRAIN_REQUIRE_FUZZ=1 makes that a
# failure. Reproduce a finding: (cd fuzz && cargo +nightly fuzz run <target> <file>).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/lib.sh
ensure_cargo
campaign=0
if [ "${1:-}" = "--campaign" ]; then
  campaign=1
  shift
  budget="${1:?--campaign SECONDS [target...]}"
else
  budget="${1:-${MEDTRAIN_FUZZ_RUNS:-}}"
fi
shift || true
skip() {
  if [ "${MEDTRAIN_REQUIRE_FUZZ:-0}" = "1" ]; then
    echo "fuzz: FAILED: $1 (MEDTRAIN_REQUIRE_FUZZ=1)" >&2
    exit 1
  fi
  echo "fuzz: SKIPPED: $1 (set MEDTRAIN_REQUIRE_FUZZ=1 to fail instead)" >&2
  exit 0
}
rustup toolchain list 2>/dev/null | grep -q '^nightly' || skip "no nightly toolchain (rustup toolchain install nightly)"
cargo fuzz --version >/dev/null 2>&1 || skip "cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"

if [ $campaign = 1 ]; then
  seeds="$root/fuzz/corpus"
  MEDTRAIN_FUZZ_FRESH_KEY=1 bash scripts/fuzz-seeds.sh "$seeds"
  seed="${MEDTRAIN_FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
else
  seeds="$root/target/fuzz-seeds"
  bash scripts/fuzz-seeds.sh "$seeds"
  seed=1
fi
cd fuzz
started=$(date +%s)
cargo +nightly fuzz build -O
built=$(date +%s)
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
# HDF5 keeps the file-locking environment of the product (see pack::reader).
export HDF5_USE_FILE_LOCKING=FALSE
# libhdf5's own small leaks on damaged files are suppressed (fuzz/lsan.supp says why); ours are not.
# The same library's bad reads on damaged attribute messages (fuzz/asan.supp says why).
export ASAN_OPTIONS="suppressions=$root/fuzz/asan.supp${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$root/fuzz/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
limits=(-rss_limit_mb=2048 -timeout=20)
# The CI gate's inputs per target: 17–53 s each, about 4 minutes in all, on the 2-core development
# machine (RELIABILITY.md).
runs_for() {
  case "$1" in
    catalog_query) echo 1200000 ;;
    label_csv) echo 500000 ;;
    config_toml) echo 170000 ;;
    pack_index) echo 100000 ;;
    manifest) echo 57000 ;;
    checkpoint_load) echo 16000 ;;
    hdf5_shard) echo 8000 ;;
    dicom_decode) echo 30000 ;;
    nifti_label_map) echo 100000 ;;
    *) echo 2000 ;;
  esac
}
status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "artifacts/$t"
  log="artifacts/$t/run.log"
  # Replay of the committed reproducers of this target: each input runs once.
  replay="$(mktemp -d)"
  for f in regressions/"$t"-*.gz; do
    [ -e "$f" ] && gzip -dc "$f" >"$replay/$(basename "${f%.gz}")"
  done
  if compgen -G "$replay/*" >/dev/null; then
    set +e
    cargo +nightly fuzz run -O "$t" "$replay"/* -- "${limits[@]}" >"artifacts/$t/replay.log" 2>&1
    rc=$?
    set -e
    n=$(find "$replay" -type f | wc -l)
    if [ $rc -ne 0 ]; then
      status=1
      summary+=("$t: FAILED replaying $n reproducer(s) of fuzz/regressions (exit $rc) — see fuzz/artifacts/$t/replay.log")
      tail -n 40 "artifacts/$t/replay.log" >&2
    else
      summary+=("$t: $n reproducer(s) of fuzz/regressions replay clean")
    fi
  fi
  rm -rf "$replay"
  if [ $campaign = 1 ]; then
    corpus="corpus/$t"
    stop=(-max_total_time="$budget")
  else
    # A fresh copy each run: libFuzzer adds what it finds to its corpus directory.
    corpus="$(mktemp -d)"
    cp -r "$seeds/$t/." "$corpus/" 2>/dev/null || true
    stop=(-runs="${budget:-$(runs_for "$t")}")
  fi
  mkdir -p "$corpus"
  set +e
  cargo +nightly fuzz run -O "$t" "$corpus" -- "${stop[@]}" -seed="$seed" "${limits[@]}" \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  [ $campaign = 1 ] || rm -rf "$corpus"
  execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -n1)
  secs=$(awk '/Done [0-9]+ runs in/ { print $(NF-1) }' "$log" | tail -n1)
  if [ $rc -ne 0 ]; then
    status=1
    summary+=("$t: FAILED (exit $rc, ${execs:-?} executions, seed $seed) — see fuzz/$log and fuzz/artifacts/$t/")
    tail -n 40 "$log" >&2
  else
    summary+=("$t: ok, ${execs:-?} executions${secs:+ in $secs s}, seed $seed")
  fi
done
echo "fuzz: build $((built - started)) s, run $(( $(date +%s) - built )) s" >&2
printf 'fuzz: %s\n' "${summary[@]}" >&2
exit $status
