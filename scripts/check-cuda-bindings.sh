#!/usr/bin/env bash
# Checks the CUDA bindings our code uses against NVIDIA's real headers, and the SMs cuDNN ships against
# src/backend/cuda/support.rs. No GPU or driver is needed; it needs g++ and python3 (3.11+), and
# downloads about 2.5 GB of PyPI wheels (cuDNN is large): run it by hand or weekly, not on every CI run.
#     scripts/check-cuda-bindings.sh [--all]
# 1. Bindings (scripts/check-cuda-bindings.py bindings): every cudarc `sys` function, enum, struct and
#    type alias that src/ uses (found by grep, so the list stays current), for the CUDA feature Cargo.toml
#    selects by default, is compiled against the headers of the wheels pinned below: prototypes
#    parameter by parameter, enum sizes and values both ways, struct sizes, alignments and field offsets.
#    cuDNN's are checked against each release in CUDNN_VERSIONS. --all also checks every item of the
#    four modules (a report on cudarc; not fatal).
# 2. SMs (... sms): `cuobjdump --list-elf/--list-ptx` on each cuDNN release's libraries; for V100 to
#    B200-class SMs, whether libcudnn_ops has code that runs there, against KNOWN's Refuse rows.
# Exit status 1 on a mismatch not listed in scripts/cuda-bindings-known.txt, or a disagreement with
# KNOWN. Wheels are cached in target/wheels-bindings, unpacked into target/cuda-bindings.
#   CUDNN_VERSIONS="9.10.2.21 9.11.0.98 9.28.0.42"  cuDNN releases (nvidia-cudnn-cu12) to check
#   CUDA_FEATURE=cuda-12    this crate's feature (or a cudarc one, e.g. cuda-12090) whose bindings to check
#   PYTHON=python3          the python whose pip downloads the wheels
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="$root/target/wheels-bindings"
dest="$root/target/cuda-bindings"
py="${PYTHON:-python3}"
all=()
[ "${1:-}" = "--all" ] && all=(--all)
# CUDA 12.9 update 1, as scripts/cuda-wheels.sh pins NVRTC: cuda.h and the runtime headers cuDNN's and
# cuBLAS's include (cuda_runtime), crt/ (cuda_nvcc) and nv/target (cuda_cccl) that those include.
pins=(
  nvidia-cuda-runtime-cu12==12.9.79
  nvidia-cuda-nvrtc-cu12==12.9.86
  nvidia-cuda-nvcc-cu12==12.9.86
  nvidia-cuda-cccl-cu12==12.9.27
  nvidia-cublas-cu12==12.9.1.4
  # there is no cu12 cuobjdump wheel; 13.x lists the cubins of any SM
  nvidia-cuda-cuobjdump==13.2.51
)
# 9.10.2.21: the newest with Volta code, KNOWN's remedy; 9.11.0.98: the first without; then the newest
# checked by hand.
read -r -a cudnn_versions <<<"${CUDNN_VERSIONS:-9.10.2.21 9.11.0.98 9.28.0.42}"

mkdir -p "$cache" "$dest"
fetch() { # pip download one pinned wheel into the cache unless it is there
  local name="${1%%==*}" ver="${1##*==}"
  if ! ls "$cache/${name//-/_}-$ver-"*.whl >/dev/null 2>&1; then
    echo "downloading $1" >&2
    "$py" -m pip -q --disable-pip-version-check download --no-deps --only-binary=:all: -d "$cache" "$1" >&2
  fi
  ls "$cache/${name//-/_}-$ver-"*.whl | head -n1
}
unpack() { # unpack <wheel> <dir> <member-regex>: once, into dir
  [ -f "$2/.unpacked" ] && return 0
  rm -rf "$2.partial"
  "$py" - "$1" "$2.partial" "$3" <<'EOF'
import re, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for i in z.infolist():
    if re.search(sys.argv[3], i.filename):
        p = z.extract(i, sys.argv[2])
        if "/bin/" in i.filename:
            import os; os.chmod(p, 0o755)
EOF
  touch "$2.partial/.unpacked"
  rm -rf "$2"
  mv "$2.partial" "$2"
}

incs=()
for p in "${pins[@]}"; do
  w="$(fetch "$p")"
  d="$dest/${p%%==*}-${p##*==}"
  unpack "$w" "$d" '/include/|/bin/cuobjdump$'
  for i in "$d"/nvidia/*/include; do [ -d "$i" ] && incs+=(--include "$i"); done
done
cuobjdump="$(ls "$dest"/nvidia-cuda-cuobjdump-*/nvidia/*/bin/cuobjdump | head -n1)"

cudnn_dirs=()
for v in "${cudnn_versions[@]}"; do
  w="$(fetch "nvidia-cudnn-cu12==$v")"
  d="$dest/nvidia-cudnn-cu12-$v"
  unpack "$w" "$d" '/include/|/lib/libcudnn.*\.so'
  echo "$v" >"$d/nvidia/cudnn/VERSION"
  cudnn_dirs+=("$d/nvidia/cudnn")
done

status=0
echo "== bindings (headers: ${pins[*]}; cuDNN ${cudnn_versions[0]})"
"$py" "$root/scripts/check-cuda-bindings.py" bindings "${all[@]}" --cuda-feature "${CUDA_FEATURE:-cuda-12}" \
  --known "$root/scripts/cuda-bindings-known.txt" "${incs[@]}" --include "${cudnn_dirs[0]}/include" || status=1
for d in "${cudnn_dirs[@]:1}"; do
  echo
  echo "== cuDNN bindings against cuDNN $(cat "$d/VERSION")"
  "$py" "$root/scripts/check-cuda-bindings.py" bindings "${all[@]}" --module cudnn \
    --cuda-feature "${CUDA_FEATURE:-cuda-12}" --known "$root/scripts/cuda-bindings-known.txt" \
    "${incs[@]}" --include "$d/include" || status=1
done
echo
echo "== cuDNN device code (cuobjdump from ${pins[-1]}) against support.rs KNOWN"
"$py" "$root/scripts/check-cuda-bindings.py" sms --cuobjdump "$cuobjdump" "${cudnn_dirs[@]}" || status=1
echo
if [ "$status" = 0 ]; then echo "check-cuda-bindings: OK"; else echo "check-cuda-bindings: FAILED (see above)"; fi
exit "$status"
