#!/usr/bin/env bash
# Prints the path of a Python interpreter that has the reference packages of tests/reference/
# (pydicom, numpy, h5py, nibabel, scipy, highdicom, ...), creating target/pyref (a virtual environment) when the system Python
# lacks them. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/pyref"
need="import pydicom, numpy, h5py, tensorboard, matplotlib, nibabel, scipy, highdicom; assert pydicom.__version__.startswith('3.')"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$need" 2>/dev/null; then
  echo "$venv/bin/python"; exit 0
fi
mkdir -p "$root/target"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/tests/reference/requirements-ci.txt" >&2
"$venv/bin/python" -c "$need"
echo "$venv/bin/python"
