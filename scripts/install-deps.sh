#!/usr/bin/env bash
# Installs the OS packages medtrain builds and tests against (Debian/Ubuntu), idempotently.
# Without root and sudo it prints the exact command to run instead.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config cmake clang libclang-dev   # C/C++ toolchain for CharLS and bindgen
  libhdf5-dev hdf5-tools                                # HDF5 library and h5dump
  libopenmpi-dev openmpi-bin                            # MPI (mpirun) for multi-rank runs
  dcmtk                                                 # dcmdump: independent DICOM reader in tests
  python3 python3-venv python3-pip                      # reference scripts (pydicom, h5py)
  slurm-wlm slurm-wlm-basic-plugins munge libpmix-dev   # single-node Slurm for scripts/slurm-test.sh
  orthanc orthanc-dicomweb curl                         # DICOMweb archive for the `pack --from` tests
)

# cargo-fuzz (scripts/fuzz.sh) needs a nightly toolchain; both installed once, when rustup is there.
# MEDTRAIN_SKIP_FUZZ_INSTALL=1 leaves them out (fuzz.sh then skips, with the reason).
install_fuzz_tools() {
  [ "${MEDTRAIN_SKIP_FUZZ_INSTALL:-0}" = "1" ] && return 0
  command -v rustup >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/rustup" ] || return 0
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! rustup toolchain list | grep -q '^nightly'; then
    echo "installing the nightly Rust toolchain (for cargo fuzz)" >&2
    rustup toolchain install nightly --profile minimal >&2 || echo "warning: nightly not installed" >&2
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked >&2 || echo "warning: cargo-fuzz not installed" >&2
  fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  install_fuzz_tools
  exit 0
fi
echo "installing OS packages: ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo"
else
  echo "missing OS packages; as root run:" >&2
  echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_fuzz_tools
