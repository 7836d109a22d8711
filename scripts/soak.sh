#!/usr/bin/env bash
# Soak: trains the smoke configuration (configs/smoke.toml) with `mpirun -np 2` while this script
# SIGKILLs a random rank at random intervals and resumes with `--resume auto`, until the time is up.
# Every run that reaches its last step is compared with an undisturbed run of the same steps (every
# tensor of the final model and optimizer files, bitwise); resident memory (VmRSS) and open file
# descriptors of the ranks are sampled from /proc and must not grow across restarts or over time.
# Usage: scripts/soak.sh [minutes]   (default 10; the reference soak is `scripts/soak.sh 60`)
# Knobs: SOAK_PATIENTS (phantom size, default 8), SOAK_KILL_MIN/MAX (seconds between kills, 5/30),
# SOAK_SEED, MEDTRAIN_BIN (default target/release/medtrain if built, else target/debug/medtrain).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
minutes="${1:-10}"
patients="${SOAK_PATIENTS:-8}"
kill_min="${SOAK_KILL_MIN:-5}"
kill_max="${SOAK_KILL_MAX:-30}"
RANDOM="${SOAK_SEED:-2026}"
bin="${MEDTRAIN_BIN:-}"
if [ -z "$bin" ]; then
  if [ -x target/release/medtrain ]; then bin=target/release/medtrain; else bin=target/debug/medtrain; fi
fi
[ -x "$bin" ] || { echo "soak: build medtrain first (cargo build --release)" >&2; exit 1; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
work="${SOAK_DIR:-$(mktemp -d /tmp/medtrain-soak-XXXXXX)}"
mkdir -p "$work"
log="$work/soak.log"
say() { echo "soak: $*" | tee -a "$log" >&2; }
say "binary $bin, work dir $work, $minutes min, kills every ${kill_min}-${kill_max} s"

# The cohort: the smoke phantom, smaller (SOAK_PATIENTS), packed, catalogued, labelled and split.
m() { "$bin" --quiet "$@"; }
if [ ! -f "$work/manifest.h5" ]; then
  m phantom --out "$work/phantom" --config configs/smoke.toml --patients "$patients" --no-radiographs >/dev/null
  m pack "$work/phantom/dicom" --out "$work/pack" --key "$work/site.key" --create-key >/dev/null
  m catalog build "$work/pack" --out "$work/catalog" >/dev/null
  m catalog labels import "$work/phantom/truth/slices_by_instance.csv" --out "$work/catalog" \
    --name nodule_slices --key "$work/site.key" >/dev/null
  m catalog split "$work/catalog" "modality = 'CT'" --out "$work/manifest.h5" \
    --ratios train=0.6,val=0.2,test=0.2 --seed 7 >/dev/null
fi
cfg="$work/soak.toml"
# The smoke configuration; a checkpoint every 5 steps so that kills land between and inside them.
sed -e 's/^eval_every = 1/eval_every = 0\ncheckpoint_every = 5\nthreads = 1/' configs/smoke.toml >"$cfg"

train() { # out-dir [extra args...]; run in the background (`train … &`): mpirun replaces the subshell
  local out="$1"; shift
  exec mpirun --allow-run-as-root --oversubscribe -np 2 "$bin" --quiet train "$work/catalog" \
    "$work/manifest.h5" --out "$out" --config "$cfg" "$@"
}

# Samples "seconds-since-start rank-pid VmRSS-kB open-fds" of every rank of mpirun $1 each second.
sample() {
  local mpirun_pid="$1" tag="$2" t0
  t0=$(date +%s)
  while kill -0 "$mpirun_pid" 2>/dev/null; do
    for pid in $(pgrep -P "$mpirun_pid" -f medtrain || true); do
      rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
      fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
      [ -n "$rss" ] && echo "$tag $(( $(date +%s) - t0 )) $pid $rss $fds" >>"$work/samples.txt"
    done
    sleep 1
  done
}

# Every tensor of the final checkpoint's model and optimizer files, hashed (safetensors: an 8-byte
# header length, a JSON header with data offsets, the data).
weights_hash() {
  python3 - "$1" <<'PY'
import hashlib, json, os, struct, sys
ck = os.path.join(sys.argv[1], "checkpoints")
dirs = sorted(d for d in os.listdir(ck) if d.startswith("step-") and "." not in d)
h = hashlib.sha256()
for f in ("model.safetensors", "optimizer.safetensors"):
    b = open(os.path.join(ck, dirs[-1], f), "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    for name in sorted(k for k in header if k != "__metadata__"):
        s, e = header[name]["data_offsets"]
        h.update(name.encode()); h.update(b[8 + n + s:8 + n + e])
print(dirs[-1], h.hexdigest())
PY
}

status_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$1/train-status.json" 2>/dev/null || echo none; }

# The undisturbed reference.
if [ ! -f "$work/reference/train-status.json" ]; then
  start=$(date +%s)
  train "$work/reference" & pid=$!
  sample "$pid" reference & wait "$pid"
  say "undisturbed run: $(( $(date +%s) - start )) s"
fi
want="$(weights_hash "$work/reference")"
say "reference final weights: $want"

deadline=$(( $(date +%s) + minutes * 60 ))
cycle=0 kills=0 starts=0 mismatches=0 compared=0
out="$work/run-$cycle"
while :; do
  now=$(date +%s)
  train "$out" --resume auto >>"$log" 2>&1 & pid=$!
  starts=$((starts + 1))
  sample "$pid" "start-$starts" &
  if [ "$now" -lt "$deadline" ]; then
    delay=$(( kill_min + RANDOM % (kill_max - kill_min + 1) ))
    end=$(( $(date +%s) + delay ))
    while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      ranks=($(pgrep -P "$pid" -f medtrain || true))
      if [ ${#ranks[@]} -gt 0 ]; then
        victim=${ranks[$((RANDOM % ${#ranks[@]}))]}
        kill -KILL "$victim" 2>/dev/null && kills=$((kills + 1))
        say "cycle $cycle: SIGKILL rank pid $victim after $delay s"
      fi
    fi
  fi
  wait "$pid" || true
  wait
  if [ "$(status_of "$out")" = finished ]; then
    got="$(weights_hash "$out")"
    compared=$((compared + 1))
    if [ "$got" = "$want" ]; then
      say "cycle $cycle finished: final weights equal the undisturbed run"
    else
      mismatches=$((mismatches + 1))
      say "cycle $cycle finished: FINAL WEIGHTS DIFFER: $got vs $want"
    fi
    [ "$(date +%s)" -ge "$deadline" ] && break
    cycle=$((cycle + 1))
    out="$work/run-$cycle"
  fi
done

# Memory and descriptors: the peak of each process (one per start and rank) must not trend upwards,
# and within the long undisturbed run the last third must not exceed the middle third.
python3 - "$work/samples.txt" "$log" <<'PY'
import collections, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
peak = collections.OrderedDict()
series = collections.defaultdict(list)
for tag, t, pid, rss, fds in rows:
    k = (tag, pid)
    r, f = peak.get(k, (0, 0))
    peak[k] = (max(r, int(rss)), max(f, int(fds)))
    series[k].append((int(t), int(rss), int(fds)))
vals = list(peak.values())
half = max(1, len(vals) // 2)
early_rss = statistics.median(v[0] for v in vals[:half])
late_rss = statistics.median(v[0] for v in vals[half:]) if len(vals) > 1 else early_rss
early_fd = max(v[1] for v in vals[:half])
late_fd = max(v[1] for v in vals[half:]) if len(vals) > 1 else early_fd
ok = late_rss <= 1.10 * early_rss and late_fd <= early_fd
long = [s for (tag, _), s in series.items() if tag == "reference"]
drift = []
for s in long:
    n = len(s)
    if n >= 9:
        mid = max(r for _, r, _ in s[n // 3: 2 * n // 3])
        last = max(r for _, r, _ in s[2 * n // 3:])
        drift.append(last / mid)
        ok = ok and last <= 1.10 * mid
msg = (f"processes sampled {len(vals)}: peak RSS median early {early_rss/1024:.1f} MiB, late "
       f"{late_rss/1024:.1f} MiB; open fds max early {early_fd}, late {late_fd}; RSS last/middle third "
       f"of the undisturbed run {', '.join(f'{d:.3f}' for d in drift) or 'n/a'}: "
       + ("no growth" if ok else "GROWTH"))
print(msg)
open(sys.argv[2], "a").write("soak: " + msg + "\n")
sys.exit(0 if ok else 1)
PY
res=$?
say "starts $starts, kills $kills, finished runs compared $compared, mismatches $mismatches"
[ "$mismatches" -eq 0 ] && [ "$compared" -gt 0 ] && [ $res -eq 0 ] || { say "FAILED"; exit 1; }
say "passed"
