#!/usr/bin/env python3
"""The radiograph loader benchmark's data and Python peers (benches/loader.sh).

  write N OUT        N chest-radiograph-like DX files, 2048 x 2048, 12 bits stored in 16, MONOCHROME2
                     with a rescale and a window, one patient each (pydicom).
  pydicom DIR        a 2-process pool decoding every file with pydicom each epoch: Modality LUT
                     (rescale), VOI LUT (the window), 0.5-99.5 percentile clip and z-score, resize to
                     512 x 512 (aspect kept; these are square) with PIL's bilinear filter; float32
                     batches of 32 assembled in the parent, as a DataLoader with 2 workers does.
  cache DIR CACHE    the same from a pre-converted cache: stored values once as one uint16 numpy
                     memmap (the fastest common Python practice), then per epoch the same pipeline.

Prints one JSON line: images per second of each epoch.
"""
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np

SIZE = 2048
OUT = 512
BATCH = 32


def write(n, out):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(2026)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    for i in range(n):
        # Two dark lung fields in a bright body, plus noise: 12-bit stored values.
        lungs = np.exp(-(((x - 0.3) / 0.12) ** 2 + ((y - 0.5) / 0.3) ** 2)) + np.exp(
            -(((x - 0.7) / 0.12) ** 2 + ((y - 0.5) / 0.3) ** 2)
        )
        img = 3000 - 1800 * lungs + rng.normal(0, 30, (SIZE, SIZE))
        img = np.clip(img, 0, 4095).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray, presentation
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientID = f"BENCH{i:05d}"
        ds.PatientName = f"BENCH^{i}"
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.FrameOfReferenceUID = generate_uid()
        ds.StudyDate = "20260101"
        ds.Modality = "DX"
        ds.SeriesNumber = 1
        ds.InstanceNumber = 1
        ds.PatientOrientation = ["L", "F"]
        ds.ImagerPixelSpacing = [0.175, 0.175]
        ds.PixelSpacing = [0.175, 0.175]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = SIZE
        ds.Columns = SIZE
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleSlope = 1
        ds.RescaleIntercept = 0
        ds.RescaleType = "US"
        ds.WindowCenter = 2048
        ds.WindowWidth = 4096
        ds.PixelData = img.tobytes()
        ds.save_as(os.path.join(out, f"dx{i:05d}.dcm"), enforce_file_format=True)


def normalise(values):
    """Window (linear, DICOM's), percentile clip, z-score, resize: float32 (OUT, OUT)."""
    from PIL import Image

    lo, hi = np.percentile(values, [0.5, 99.5])
    v = np.clip(values, lo, hi)
    v = (v - v.mean()) / max(v.std(), 1e-6)
    return np.asarray(Image.fromarray(v.astype(np.float32), mode="F").resize((OUT, OUT), Image.BILINEAR))


def from_dicom(path):
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    v = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
    return normalise(v)


_cache = None


def from_cache(args):
    global _cache
    path, i = args
    if _cache is None:
        _cache = np.load(path, mmap_mode="r")
    stored = _cache[i].astype(np.float32)
    # The same Modality LUT (slope 1, intercept 0) and linear window (centre 2048, width 4096).
    v = np.clip((stored - (2048 - 0.5)) / (4096 - 1) + 0.5, 0, 1) * 4095
    return normalise(v)


def epochs(pool, fn, items, n_epochs=3):
    rates = []
    for _ in range(n_epochs):
        start = time.perf_counter()
        batch = []
        for image in pool.imap(fn, items, chunksize=1):
            batch.append(image)
            if len(batch) == BATCH:
                np.stack(batch)
                batch = []
        if batch:
            np.stack(batch)
        rates.append(len(items) / (time.perf_counter() - start))
    return rates


def main():
    what = sys.argv[1]
    if what == "write":
        write(int(sys.argv[2]), sys.argv[3])
        return
    files = sorted(os.path.join(sys.argv[2], f) for f in os.listdir(sys.argv[2]) if f.endswith(".dcm"))
    with mp.Pool(2) as pool:
        if what == "pydicom":
            rates = epochs(pool, from_dicom, files)
        elif what == "cache":
            import pydicom

            cache = sys.argv[3]
            if not os.path.exists(cache):
                arr = np.lib.format.open_memmap(cache + ".tmp", mode="w+", dtype=np.uint16, shape=(len(files), SIZE, SIZE))
                for i, f in enumerate(files):
                    arr[i] = pydicom.dcmread(f).pixel_array
                arr.flush()
                del arr
                os.replace(cache + ".tmp", cache)
            rates = epochs(pool, from_cache, [(cache, i) for i in range(len(files))])
        else:
            sys.exit(f"unknown mode {what}")
    print(json.dumps({"tool": what, "images_per_second": rates}))


if __name__ == "__main__":
    main()
