#!/usr/bin/env python3
"""Reference decodes of pydicom's own test files, for tests/decode_conformance.rs.

Run by hand (not in CI), after scripts/fetch-test-data.sh and
`python3 -m pip install -r tests/reference/requirements.txt`:

    python3 tests/reference/pydicom_decode.py target/test-data/pydicom/data/test_files \
        > tests/reference/pydicom_decode.json

Files pydicom cannot decode with these plugins but DCMTK can (12-bit JPEG Extended) get a
`dcmtk_reference` from `dcmdjpeg`, so our 12-bit decoder is checked on them too.

For every file under the directory it tries `ds.pixel_array` (pydicom 3 defaults: YBR converted to RGB
where pydicom does so) and records the outcome. Lossless arrays are identified by the sha256 of their
C-contiguous little-endian bytes; lossy ones also get a strided subsample and the mean, because another
JPEG decoder may round differently. Non-identity modality LUT results are recorded the same way, as
float64.
"""
import hashlib
import math
import shutil
import subprocess
import tempfile
import json
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut
from pydicom.uid import UID

MAX_SUBSAMPLE = 512  # values per lossy array: enough to catch a wrong decode, small enough for git
MAX_LUT_SUBSAMPLE = 64  # modality LUT outputs are compared by hash; these values only help diagnose


def sha256_le(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def subsample(arr: np.ndarray, limit: int = MAX_SUBSAMPLE) -> dict:
    flat = np.ascontiguousarray(arr).reshape(-1)
    stride = max(1, -(-flat.size // limit))  # ceil division
    # A stride sharing a factor with the row length would only visit a few columns.
    row = int(np.prod(arr.shape[-2:])) if arr.ndim >= 3 and arr.shape[-1] in (3, 4) else int(arr.shape[-1])
    while math.gcd(stride, row) != 1:
        stride += 1
    values = flat[::stride]
    return {
        "stride": int(stride),
        "values": [v.item() for v in values],
        "mean": float(flat.astype(np.float64).mean()) if flat.size else 0.0,
    }


def is_lossy(tsyntax: UID, ds) -> bool:
    if tsyntax is None:
        return False
    if tsyntax.is_compressed and not tsyntax.is_encapsulated:
        return False  # deflate
    # JPEG-LS near-lossless with NEAR=0 is still lossy by syntax; treat the syntax as the contract.
    lossless = {
        "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.201",
    }
    return tsyntax.is_encapsulated and str(tsyntax) not in lossless


JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"


def dcmtk_reference(path: Path) -> dict | None:
    """A second opinion for 12-bit JPEG that pylibjpeg cannot decode: DCMTK's dcmdjpeg (IJG libjpeg)."""
    if shutil.which("dcmdjpeg") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "decompressed.dcm"
        done = subprocess.run(["dcmdjpeg", str(path), str(out)], capture_output=True)
        if done.returncode != 0:
            return None
        arr = pydicom.dcmread(out).pixel_array
    return {"tool": "dcmdjpeg", "shape": list(arr.shape), "dtype": arr.dtype.name, "subsample": subsample(arr)}


def describe(path: Path, root: Path) -> dict:
    entry = {"file": path.relative_to(root).as_posix()}
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001 - the class name is the record
        entry.update(transfer_syntax=None, decodable=False, error=type(exc).__name__)
        return entry
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    entry["transfer_syntax"] = str(tsyntax) if tsyntax else None
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        entry.update(decodable=False, error=type(exc).__name__)
        dcmtk = dcmtk_reference(path) if str(tsyntax) == JPEG_EXTENDED else None
        if dcmtk is not None:
            entry["dcmtk_reference"] = dcmtk
        return entry
    lossy = is_lossy(tsyntax, ds)
    entry.update(
        decodable=True,
        shape=list(arr.shape),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
        photometric=str(ds.get("PhotometricInterpretation", "")),
        dtype=arr.dtype.name,
        sha256=sha256_le(arr),
        lossy=lossy,
    )
    if lossy:
        entry["subsample"] = subsample(arr)
    try:
        rescaled = apply_modality_lut(arr, ds)
    except Exception as exc:  # noqa: BLE001
        entry["modality_lut_error"] = type(exc).__name__
        return entry
    if rescaled is not arr and not np.array_equal(rescaled, arr):
        as_f64 = rescaled.astype(np.float64)
        entry["modality_lut"] = {"sha256_f64": sha256_le(as_f64), **subsample(as_f64, MAX_LUT_SUBSAMPLE)}
    return entry


def main() -> None:
    root = Path(sys.argv[1])
    files = sorted(p for p in root.rglob("*") if p.is_file())
    entries = [describe(p, root) for p in files]
    out = {
        "pydicom": pydicom.__version__,
        "numpy": np.__version__,
        "max_subsample": MAX_SUBSAMPLE,
        "files": entries,
    }
    json.dump(out, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
