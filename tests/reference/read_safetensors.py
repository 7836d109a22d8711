#!/usr/bin/env python3
"""Reads a safetensors file with numpy alone (header parsed by hand) and prints it as JSON:
{"metadata": {...}, "tensors": {name: {"dtype", "shape", "values": [...]}}}.

An independent reader of medtrain's checkpoints: it checks the layout rules of the format itself
(8-byte little-endian header length, JSON header, offsets that tile the data region without gaps
or overlaps, byte counts that match dtype and shape) and exits 1 when one is broken.
    python3 tests/reference/read_safetensors.py FILE
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4", "F16": "<f2", "U8": "u1"}


def main(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = data[8 + n:]
    metadata = header.pop("__metadata__", {})
    out, spans = {}, []
    for name, info in header.items():
        dtype = np.dtype(DTYPES[info["dtype"]])
        begin, end = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if end - begin != count * dtype.itemsize:
            sys.exit(f"{name}: {end - begin} bytes for shape {info['shape']} of {info['dtype']}")
        spans.append((begin, end, name))
        values = np.frombuffer(body[begin:end], dtype=dtype).reshape(info["shape"])
        out[name] = {"dtype": info["dtype"], "shape": info["shape"],
                     "values": [v.item() for v in values.reshape(-1)]}
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            sys.exit(f"{name}: data starts at {begin}, expected {position} (gap or overlap)")
        position = end
    if position != len(body):
        sys.exit(f"data region is {len(body)} bytes, tensors cover {position}")
    json.dump({"metadata": metadata, "tensors": out}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
