"""Reads a medtrain shard with h5py alone (no medtrain code) and prints, per series, the pixel
dataset's file offset as HDF5 reports it and the SHA-256 of its bytes (C order, little endian)."""
import hashlib
import json
import sys

import h5py
import numpy as np

with h5py.File(sys.argv[1], "r") as f:
    # Text attributes are UTF-8 byte arrays (medtrain h5text), not variable-length strings.
    fmt = bytes(f.attrs["format"]).decode()
    assert fmt == "medtrain-shard", fmt
    series = f["series"]
    rows = []
    for i in range(series["series_key"].shape[0]):
        name = series["dataset"][i].decode()
        ds = f[name]
        data = np.ascontiguousarray(ds[()])
        data = data.astype(data.dtype.newbyteorder("<"), copy=False)
        rows.append({
            "series_key": series["series_key"][i].decode(),
            "offset": int(ds.id.get_offset()),
            "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        })
json.dump(rows, sys.stdout)
