#!/usr/bin/env bash
# Prints a directory holding NVIDIA's NVRTC and ptxas from their PyPI wheels (nvidia/cuda_nvrtc/lib,
# nvidia/cuda_nvcc/bin), installing them into target/cuda-wheels when missing. The real-NVRTC tests
# (backend::cuda::compile) compile every kernel with them; no GPU or driver is needed. Downloads are
# cached in target/wheels (about 130 MB), so a CI cache of target/wheels avoids PyPI. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/target/cuda-wheels"
cache="$root/target/wheels"
py="${PYTHON:-python3}"
# NVRTC and ptxas of the same release: ptxas must read the PTX ISA this NVRTC writes.
pins=(nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86)
stamp="$dest/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${pins[*]}" ]; then
  echo "$dest"; exit 0
fi
pipq=(-m pip -q --disable-pip-version-check)
install() {
  "$py" "${pipq[@]}" install --no-deps --no-index --find-links "$cache" --target "$dest.partial" "${pins[@]}" >&2
}
rm -rf "$dest.partial"
mkdir -p "$cache"
if ! install 2>/dev/null; then
  "$py" "${pipq[@]}" download --no-deps --only-binary=:all: -d "$cache" "${pins[@]}" >&2
  rm -rf "$dest.partial"
  install
fi
echo "${pins[*]}" > "$dest.partial/.installed"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "$dest"
