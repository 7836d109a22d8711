"""Writes one small CR/DX image or MR series with pydicom and computes, with pydicom and numpy alone,
the floats training must produce from it.

    write_radiograph.py OUT_DIR VARIANT [--low 0.5 --high 99.5]
    write_radiograph.py --file DICOM_FILE [--low 0.5 --high 99.5]   (an existing file, e.g. pydicom's)

Variants:
    mono1-window   CR, MONOCHROME1, 12 bits stored in 16, RescaleSlope/Intercept, a window
    voi-lut        DX, MONOCHROME2, a VOI LUT Sequence (and a window the LUT wins over)
    modality-lut   CR, MONOCHROME2, a Modality LUT Sequence, a window
    window-only    DX, MONOCHROME2, 12 bits stored in 16, a window and nothing else
    mr             MR, three signed slices with a rescale (normalised per series)

Radiographs: `apply_modality_lut`, `apply_voi_lut` (first window or LUT, LUT preferred), MONOCHROME1
inverted (v -> min + max - v), then per image numpy's percentiles (low, high), clip and z-score
(population std). MR: `apply_modality_lut`, then the same over the whole series. Prints JSON
{"images": [[floats of image 0, row major], ...]} in stored order (MR: ascending z)."""
import argparse
import json
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SOP_CLASS = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
}
ROWS, COLS = 10, 7


def base(modality, series, study):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = "WR-PATIENT"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = generate_uid()
    ds.StudyDate = "20200102"
    ds.Modality = modality
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.2, 0.2]
    return ds


def radiograph(variant, series, study):
    modality = "CR" if variant in ("mono1-window", "modality-lut") else "DX"
    ds = base(modality, series, study)
    ds.PatientOrientation = ["P", "F"]
    ds.BurnedInAnnotation = "NO"
    i = np.arange(ROWS * COLS).reshape(ROWS, COLS)
    pixels = ((i * 613 + 97) % 4096).astype(np.uint16)
    pixels[0, 0], pixels[0, 1] = 0, 4095
    if variant in ("mono1-window", "window-only"):
        ds.BitsStored, ds.HighBit = 12, 11
    if variant == "mono1-window":
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.RescaleSlope, ds.RescaleIntercept = 2, -100
        ds.WindowCenter, ds.WindowWidth = [3000, 2000], [3000, 1000]
    elif variant == "window-only":
        ds.WindowCenter, ds.WindowWidth = 1800, 1500
    elif variant == "voi-lut":
        ds.WindowCenter, ds.WindowWidth = 100, 10
        item = Dataset()
        item.add_new(0x00283002, "US", [2048, 500, 16])
        # A non-linear (gamma) LUT over 500..2547, flat beyond.
        item.add_new(0x00283006, "US", [int(65535 * (k / 2047) ** 0.5) for k in range(2048)])
        ds.VOILUTSequence = Sequence([item])
    elif variant == "modality-lut":
        item = Dataset()
        item.add_new(0x00283002, "US", [4096, 0, 16])
        item.ModalityLUTType = "US"
        item.add_new(0x00283006, "US", [int(4095 * (k / 4095) ** 2) for k in range(4096)])
        ds.ModalityLUTSequence = Sequence([item])
        ds.WindowCenter, ds.WindowWidth = 1200, 2400
    else:
        raise SystemExit(f"unknown variant {variant}")
    ds.PixelData = pixels.tobytes()
    return [ds]


def mr(series, study):
    out = []
    for k in range(3):
        ds = base("MR", series, study)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.InstanceNumber = 3 - k
        ds.PixelRepresentation = 1
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 3.0
        ds.RescaleSlope, ds.RescaleIntercept = 1.5, 7
        i = np.arange(ROWS * COLS).reshape(ROWS, COLS)
        ds.PixelData = ((i * 37 + k * 211) % 900 - 300).astype(np.int16).tobytes()
        out.append(ds)
    return out


def normalise(values, low, high):
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.percentile(v, [low, high])
    c = np.clip(v, lo, hi)
    std = c.std()
    return (c - c.mean()) / (std if std > 0 else 1.0)


def reference(paths, low, high):
    datasets = [pydicom.dcmread(p) for p in paths]
    if datasets[0].Modality == "MR":
        if "ImagePositionPatient" in datasets[0]:
            datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        values = [apply_modality_lut(d.pixel_array, d).astype(np.float64) for d in datasets]
        z = normalise(np.stack(values), low, high)
        return [img.ravel().tolist() for img in z]
    images = []
    for d in datasets:
        v = apply_voi_lut(apply_modality_lut(d.pixel_array, d), d).astype(np.float64)
        if d.PhotometricInterpretation == "MONOCHROME1":
            v = v.min() + v.max() - v
        images.append(normalise(v, low, high).ravel().tolist())
    return images


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out", nargs="?")
    p.add_argument("variant", nargs="?")
    p.add_argument("--file")
    p.add_argument("--low", type=float, default=0.5)
    p.add_argument("--high", type=float, default=99.5)
    a = p.parse_args()
    if a.file:
        json.dump({"images": reference([a.file], a.low, a.high)}, sys.stdout)
        return
    os.makedirs(a.out, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    datasets = mr(series, study) if a.variant == "mr" else radiograph(a.variant, series, study)
    paths = []
    for k, ds in enumerate(datasets):
        path = os.path.join(a.out, f"image{k:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    json.dump({"images": reference(paths, a.low, a.high)}, sys.stdout)


if __name__ == "__main__":
    main()
