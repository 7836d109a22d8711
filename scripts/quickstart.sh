#!/usr/bin/env bash
# The main job end to end on the embedded default: a generated phantom cohort written as real
# DICOM → pack into de-identified HDF5 shards → a verified summary of the pack.
# Usage: scripts/quickstart.sh [OUT_DIR]   (default: ./demo)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-$root/demo}")"
cd "$root"
bash scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || {
  echo "cargo not found: install Rust 1.80 or newer (https://rustup.rs) and re-run" >&2; exit 1; }
cargo build --release --locked --quiet
bin="$root/target/release/medtrain"
mkdir -p "$out"
set -x
"$bin" phantom --out "$out/phantom" --config configs/smoke.toml
"$bin" pack "$out/phantom/dicom" --out "$out/pack" --key "$out/site.key" --create-key --config configs/smoke.toml
"$bin" inspect "$out/pack" --verify
