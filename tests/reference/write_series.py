"""Writes one small single-frame series with pydicom and reads it back with pydicom alone.

    write_series.py OUT_DIR --modality CT|MR --slices N [--no-orientation] [--slopes 1,2,1]
                    [--intercepts 0,0,0] [--signed] [--rows 8] [--cols 6] [--burned-in YES|NO]

Slices are axial (ImageOrientationPatient 1\\0\\0\\0\\1\\0, unless --no-orientation leaves the tag out)
at z = 2.5 mm × index, written in reverse InstanceNumber order so that an order taken from file
names or instance numbers would be wrong. Prints JSON: for each slice in ascending z, the file, the
RescaleSlope/Intercept pydicom reads, and pydicom's `apply_modality_lut` of its pixels (row major);
and `rescale_differs`, whether pydicom reads different rescale values on different slices."""
import argparse
import json
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
}


def floats(text, n, default):
    if text is None:
        return [default] * n
    values = [float(v) for v in text.split(",")]
    assert len(values) == n, f"{len(values)} values for {n} slices"
    return values


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--modality", default="CT")
    p.add_argument("--slices", type=int, default=1)
    p.add_argument("--no-orientation", action="store_true")
    p.add_argument("--slopes")
    p.add_argument("--intercepts")
    p.add_argument("--signed", action="store_true")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("--burned-in", help="BurnedInAnnotation of every slice (YES or NO)")
    a = p.parse_args()
    n = a.slices
    default_intercept = -1024.0 if a.modality == "CT" else 0.0
    slopes = floats(a.slopes, n, 1.0)
    intercepts = floats(a.intercepts, n, default_intercept)
    os.makedirs(a.out, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    written = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS[a.modality]
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = SOP_CLASS[a.modality]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientID = "WS-PATIENT"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyDate = "20200102"
        ds.Modality = a.modality
        ds.InstanceNumber = n - k
        ds.Rows, ds.Columns = a.rows, a.cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if a.signed else 0
        ds.PixelSpacing = [0.7, 0.8]
        ds.SliceThickness = 2.5
        ds.ImagePositionPatient = [-10.0, -20.0, 2.5 * k]
        if not a.no_orientation:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        if a.burned_in:
            ds.BurnedInAnnotation = a.burned_in
        ds.RescaleSlope = slopes[k]
        ds.RescaleIntercept = intercepts[k]
        i = np.arange(a.rows * a.cols).reshape(a.rows, a.cols)
        if a.signed:
            pixels = ((i * 37 + k * 11) % 400 - 200).astype(np.int16)
        else:
            pixels = ((i * 37 + k * 11) % 2000).astype(np.uint16)
        ds.PixelData = pixels.tobytes()
        path = os.path.join(a.out, f"slice{k:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        written.append(path)

    out = []
    for path in written:
        ds = pydicom.dcmread(path)
        z = float(ds.ImagePositionPatient[2])
        values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
        out.append({
            "file": path,
            "z": z,
            "slope": float(ds.RescaleSlope),
            "intercept": float(ds.RescaleIntercept),
            "has_orientation": "ImageOrientationPatient" in ds,
            "values": values.ravel().tolist(),
        })
    out.sort(key=lambda s: s["z"])
    rescales = {(s["slope"], s["intercept"]) for s in out}
    json.dump({"slices": out, "rescale_differs": len(rescales) > 1}, sys.stdout)


if __name__ == "__main__":
    main()
