#!/usr/bin/env bash
# Builds the peers' Python environment for the side-by-side benchmarks, once, in target/peers: what a
# user would pick today, from PyPI. Prints the interpreter's path. Idempotent; never used by CI.
#   benches/peers-env.sh            DuckDB, pandas, h5py, numpy, pydicom (catalog and pack peers)
#   benches/peers-env.sh --torch    adds PyTorch 2.x, torchvision (--no-deps), MONAI and scipy (about 3 GB)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/peers"
base=(duckdb pandas h5py numpy "pydicom==3.0.2")
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
"$venv/bin/python" -c "import duckdb, pandas, h5py, numpy, pydicom" 2>/dev/null || "${pip[@]}" install "${base[@]}" >&2
if [ "${1:-}" = "--torch" ]; then
  "$venv/bin/python" -c "import torch, torchvision, monai, PIL, scipy" 2>/dev/null || {
    "${pip[@]}" install torch >&2
    "${pip[@]}" install --no-deps torchvision >&2
    # torchvision imports PIL at start-up (its datasets), even for models alone.
    "${pip[@]}" install pillow >&2
    "${pip[@]}" install monai >&2
    # MONAI's surface-distance metrics (HausdorffDistanceMetric) need scipy.
    "${pip[@]}" install scipy >&2
  }
fi
echo "$venv/bin/python"
