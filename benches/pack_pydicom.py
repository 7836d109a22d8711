"""The peer baseline for `medtrain pack`: the same work done the usual Python way, with pydicom +
numpy + h5py and a pool of worker processes. Per CT series: read every file, order slices by
position along the normal, decode, apply the rescale, map padding to -1024 HU, round and clamp to
int16, and write one contiguous HDF5 dataset; fsync the file at the end (medtrain fsyncs each shard
before publishing it, so both pay for durable output). Prints a JSON line with series, bytes and seconds.

Usage: python pack_pydicom.py DICOM_ROOT OUT.h5 [--workers N]
"""
import argparse
import json
import os
import time
from collections import defaultdict
from multiprocessing import Pool

import h5py
import numpy as np
import pydicom


def header(path):
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None
    if getattr(ds, "Modality", "") != "CT" or "ImagePositionPatient" not in ds:
        return None
    return str(ds.SeriesInstanceUID), path


def pack_series(paths):
    slices = [pydicom.dcmread(p) for p in paths]
    return str(slices[0].SeriesInstanceUID), to_volume(slices)


def to_volume(slices):
    """One CT series (pydicom data sets, any order) as an int16 HU volume along the normal."""
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal)))
    volume = np.empty((len(slices), slices[0].Rows, slices[0].Columns), dtype=np.int16)
    for i, ds in enumerate(slices):
        stored = ds.pixel_array
        hu = stored.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1)) + float(
            getattr(ds, "RescaleIntercept", 0))
        pad = getattr(ds, "PixelPaddingValue", None)
        if pad is not None:
            if ds.PixelRepresentation == 1 and pad >= 32768:
                pad -= 65536
            hu[stored == pad] = -1024
        volume[i] = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    return volume


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    start = time.perf_counter()
    files = [os.path.join(d, f) for d, _, fs in os.walk(args.root) for f in fs]
    with Pool(args.workers) as pool:
        series = defaultdict(list)
        for found in pool.imap_unordered(header, files, chunksize=64):
            if found:
                series[found[0]].append(found[1])
        nbytes = 0
        with h5py.File(args.out, "w") as h5:
            for i, (uid, volume) in enumerate(pool.imap_unordered(pack_series, list(series.values()))):
                h5.create_dataset(f"volumes/{i:06d}", data=volume)
                nbytes += volume.nbytes
        # The same durability as medtrain, which fsyncs each shard before publishing it.
        fd = os.open(args.out, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    seconds = time.perf_counter() - start
    print(json.dumps({"series": len(series), "bytes": nbytes, "seconds": seconds}))


if __name__ == "__main__":
    main()
