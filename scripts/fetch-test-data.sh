#!/usr/bin/env bash
# Fetch pydicom's own test files (shipped inside its wheel) for the decode conformance test.
# Idempotent: does nothing when the files are already there. Prints the test-files directory.
set -euo pipefail

PYDICOM_VERSION="3.0.2"
crate_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${crate_dir}/target/test-data"
files_dir="${data_dir}/pydicom/data/test_files"
python="${PYTHON:-python3}"

if [ -f "${files_dir}/CT_small.dcm" ]; then
    echo "${files_dir}"
    exit 0
fi

mkdir -p "${data_dir}"
wheel="$(ls "${data_dir}"/pydicom-"${PYDICOM_VERSION}"-*.whl 2>/dev/null | head -n1 || true)"
if [ -z "${wheel}" ]; then
    "${python}" -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "${data_dir}" "pydicom==${PYDICOM_VERSION}" >&2 \
        || { echo "error: could not download pydicom==${PYDICOM_VERSION} with ${python} -m pip" >&2; exit 1; }
    wheel="$(ls "${data_dir}"/pydicom-"${PYDICOM_VERSION}"-*.whl | head -n1)"
fi

# A wheel is a zip archive; Python's zipfile avoids depending on an unzip binary.
"${python}" - "${wheel}" "${data_dir}" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf:
    members = [m for m in zf.namelist() if m.startswith("pydicom/data/test_files/")]
    zf.extractall(dest, members)
PY

if [ ! -f "${files_dir}/CT_small.dcm" ]; then
    echo "error: ${wheel} did not contain pydicom/data/test_files/CT_small.dcm" >&2
    exit 1
fi
echo "${files_dir}"
