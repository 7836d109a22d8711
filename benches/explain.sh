#!/usr/bin/env bash
# Grad-CAM milliseconds per map, medtrain CPU vs PyTorch hook-based Grad-CAM on CPU, same models and
# inputs, backward to the explained layer only, alternating in one run so both see the same load.
#   benches/explain.sh [threads] [reps]
set -euo pipefail
cd "$(dirname "$0")/.."
export RAYON_NUM_THREADS="${1:-2}"
REPS="${2:-3}"
cargo bench --bench explain --no-run 2>/dev/null
for model in slice2d volume3d; do
  echo "== $model"
  cargo bench --bench explain -q -- "$model" "$REPS" 2>/dev/null
  /usr/bin/python3 benches/explain_torch.py "$model" "$REPS"
done
