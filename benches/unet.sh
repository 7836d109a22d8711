#!/usr/bin/env bash
# Side-by-side 3D U-Net throughput: medtrain's CPU backend vs the same network in PyTorch with MONAI's
# loss and sliding-window inference, alternating in one run (A B A B) at the same thread count.
#   benches/unet.sh [threads] [passes] [repeats]     (peers: benches/peers-env.sh --torch)
set -euo pipefail
cd "$(dirname "$0")/.."
export RAYON_NUM_THREADS="${1:-2}"
PASSES="${2:-3}"
REPEATS="${3:-3}"
py="$(bash benches/peers-env.sh --torch)"
cargo bench --bench unet --no-run 2>/dev/null
lscpu | sed -n 's/^Model name: *//p'
for pass in $(seq 1 "$PASSES"); do
  for mode in train infer; do
    echo "== pass $pass, $mode, load $(cut -d' ' -f1 /proc/loadavg)"
    cargo bench --bench unet -q -- "$mode" "$REPEATS" 2>/dev/null
    "$py" benches/unet_torch.py "$mode" "$REPEATS"
  done
done
