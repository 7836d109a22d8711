#!/usr/bin/env bash
# The test command: installs what the tests need (idempotently), then runs every test.
# Only GPU tests may skip (they print why); MEDTRAIN_REQUIRE_GPU=1 turns such a skip into a failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install-deps.sh
. scripts/lib.sh
ensure_cargo
MEDTRAIN_PYTHON="$(bash scripts/python-env.sh)"
export MEDTRAIN_PYTHON
MEDTRAIN_PYDICOM_DATA="$(PYTHON="$MEDTRAIN_PYTHON" bash scripts/fetch-test-data.sh)"
export MEDTRAIN_PYDICOM_DATA
# NVIDIA's NVRTC and ptxas wheels: the kernels are compiled by the real NVRTC without a GPU
# (backend::cuda::compile); with them installed, a skip of those tests is a failure.
MEDTRAIN_CUDA_WHEELS="$(PYTHON="$MEDTRAIN_PYTHON" bash scripts/cuda-wheels.sh)"
# The CUDA libraries are resolved in MEDTRAIN_CUDA_LIB_DIRS first (backend::cuda::libs).
MEDTRAIN_CUDA_LIB_DIRS="$MEDTRAIN_CUDA_WHEELS/nvidia/cuda_nvrtc/lib${MEDTRAIN_CUDA_LIB_DIRS:+:$MEDTRAIN_CUDA_LIB_DIRS}"
export MEDTRAIN_CUDA_WHEELS MEDTRAIN_CUDA_LIB_DIRS MEDTRAIN_REQUIRE_NVRTC=1
# OpenMPI refuses to run as root without these (CI containers run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Library unit tests, then the one integration test crate (the binary and doc tests hold none).
log="$root/target/test.log"
set -o pipefail
cargo test --locked --lib --test integration "$@" 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
# Fuzz targets for their CI budget (seconds per target); skipped with the reason without nightly or
# cargo-fuzz unless MEDTRAIN_REQUIRE_FUZZ=1. The gate replays fuzz/regressions/ and runs a fixed
# number of inputs per target (MEDTRAIN_FUZZ_RUNS=N for all; 0 leaves fuzzing out).
if [ "${MEDTRAIN_FUZZ_RUNS:-}" != "0" ]; then
  bash scripts/fuzz.sh
fi
