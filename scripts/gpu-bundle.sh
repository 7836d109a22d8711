#!/usr/bin/env bash
# Makes gpu-bundle/ (and gpu-bundle.tar.gz): everything scripts/gpu-check.sh needs on a GPU node
# without Rust or MPI — the stripped release binary, the non-system shared libraries it links (HDF5,
# OpenMPI, libaec, ...; the CUDA libraries are loaded at run time from the node), the check script,
# the PyTorch peers, and the quick start with its config (run end to end on the GPU). Extra arguments go to cargo, e.g. for a CUDA 11 cluster:
#     scripts/gpu-bundle.sh --no-default-features --features cuda-11
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
ensure_cargo

cargo build --release --locked ${CARGO_JOBS:+-j "$CARGO_JOBS"} "$@"
BIN=target/release/medtrain
BUNDLE=$ROOT/gpu-bundle
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/lib" "$BUNDLE/benches" "$BUNDLE/tests/reference" "$BUNDLE/scripts" "$BUNDLE/configs"
cp "$BIN" "$BUNDLE/medtrain"
strip "$BUNDLE/medtrain"
cp scripts/gpu-check.sh "$BUNDLE/gpu-check.sh"
cp benches/gpu_torch.py benches/explain_torch.py "$BUNDLE/benches/"
cp tests/reference/torch_resnet.py "$BUNDLE/tests/reference/"
cp scripts/quickstart.sh "$BUNDLE/scripts/"
cp configs/smoke.toml "$BUNDLE/configs/"
chmod +x "$BUNDLE/gpu-check.sh"

# Every library the loader resolves, except the loader itself and the C runtime every node has.
# The copies keep their soname, so LD_LIBRARY_PATH=lib finds them.
is_system_lib() {
  case "$1" in
    linux-vdso.so* | ld-linux*.so* | libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | \
      libresolv.so.* | libutil.so.*) return 0 ;;
    *) return 1 ;;
  esac
}
missing=0
while read -r name arrow path _; do
  [ "$arrow" = "=>" ] || continue
  is_system_lib "$name" && continue
  if [ "$path" = "not" ] || [ ! -e "$path" ]; then
    echo "error: $BIN needs $name, which the loader cannot find here" >&2
    missing=1
    continue
  fi
  cp -L "$path" "$BUNDLE/lib/$name"
  strip --strip-unneeded "$BUNDLE/lib/$name" 2>/dev/null || true
done < <(ldd "$BIN")
[ "$missing" = 0 ] || exit 1

{
  echo "medtrain $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) with $(rustc --version 2>/dev/null)"
  echo "cargo arguments: ${*:-(default features: cuda-12)}"
  echo "libraries: $(cd "$BUNDLE/lib" && ls | tr '\n' ' ')"
} >"$BUNDLE/VERSION"

tar -C "$ROOT" -czf "$ROOT/gpu-bundle.tar.gz" gpu-bundle
echo "gpu-bundle/: $(du -sh "$BUNDLE" | cut -f1) ($(ls "$BUNDLE/lib" | wc -l) libraries); gpu-bundle.tar.gz: $(du -sh "$ROOT/gpu-bundle.tar.gz" | cut -f1)"
echo "on the GPU node: tar xzf gpu-bundle.tar.gz && bash gpu-bundle/gpu-check.sh results/"
