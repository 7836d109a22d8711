#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a fixed time; fails on any crash, hang
# (-timeout) or out-of-memory (-rss_limit_mb). The CI budget is the default (20 s per target, 8
# targets, plus the build: under 10 minutes on 2 cores with a warm fuzz/target); a long campaign is
# the same command with a bigger number, e.g. `scripts/fuzz.sh 3600` (an hour per target).
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]
# Without nightly Rust or cargo-fuzz it prints why and exits 0; MEDTRAIN_REQUIRE_FUZZ=1 makes that
# a failure. Findings are written to fuzz/artifacts/<target>/ (reproduce: cargo +nightly fuzz run
# <target> <file>).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/lib.sh
ensure_cargo
seconds="${1:-20}"
# A fixed seed makes a run explore a prefix of one fixed sequence of inputs (how long a prefix depends on
# the machine), so CI is repeatable; a campaign sets MEDTRAIN_FUZZ_SEED to explore elsewhere.
seed="${MEDTRAIN_FUZZ_SEED:-1}"
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

bash scripts/fuzz-seeds.sh
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
status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/run.log"
  set +e
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -seed="$seed" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -n1)
  if [ $rc -ne 0 ]; then
    status=1
    summary+=("$t: FAILED (exit $rc, ${execs:-?} executions) — see fuzz/$log and fuzz/artifacts/$t/")
    tail -n 40 "$log" >&2
  else
    summary+=("$t: ok, ${execs:-?} executions in ${seconds} s")
  fi
done
echo "fuzz: build $((built - started)) s, run $(( $(date +%s) - built )) s" >&2
printf 'fuzz: %s\n' "${summary[@]}" >&2
exit $status
