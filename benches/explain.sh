#!/usr/bin/env bash
# Grad-CAM milliseconds per map, medtrain vs PyTorch hook-based Grad-CAM on the same device, models
# and inputs, backward to the explained layer only, alternating in one run so both see the same load.
#   benches/explain.sh [threads] [reps] [cpu|cuda]
# MEDTRAIN_BIN picks the binary (default: a release build); PYTHON the peer's interpreter (default
# /usr/bin/python3, which has Debian's torch). On cuda, `bench explain` also checks every block
# output's map against the CPU reference.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAYON_NUM_THREADS="${1:-2}"
REPS="${2:-3}"
DEVICE="${3:-cpu}"
PYTHON="${PYTHON:-/usr/bin/python3}"
if [ -z "${MEDTRAIN_BIN:-}" ]; then
  cargo build --release --locked --quiet
  MEDTRAIN_BIN=target/release/medtrain
fi
export MEDTRAIN_MPI=never
for model in slice2d volume3d; do
  echo "== $model"
  "$MEDTRAIN_BIN" bench explain --model "$model" --reps "$REPS" --device "$DEVICE"
  "$PYTHON" benches/explain_torch.py "$model" "$REPS" "$DEVICE"
done
