#!/usr/bin/env bash
# Side-by-side training-step throughput: medtrain's CPU backend vs PyTorch CPU, same models, batch and
# thread count, alternating in one run so both see the same machine load.
#   benches/cpu_train.sh [threads] [passes] [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
export RAYON_NUM_THREADS="${1:-2}"
PASSES="${2:-3}"
STEPS="${3:-3}"
cargo bench --bench cpu_train --no-run 2>/dev/null
for pass in $(seq 1 "$PASSES"); do
  for model in resnet18_2d resnet3d; do
    echo "== pass $pass, $model"
    cargo bench --bench cpu_train -q -- "$model" "$STEPS" 2>/dev/null
    /usr/bin/python3 benches/cpu_train_torch.py "$model" "$STEPS"
  done
done
