#!/usr/bin/env python3
"""Independent read-back of phantom DICOM with pydicom + numpy (no medtrain code involved).

    phantom_pydicom_check.py ct SERIES_DIR OUT.json
        Reads every *.dcm of one CT series, sorts the slices by position along the slice normal
        (ImageOrientationPatient cross product, dotted with ImagePositionPatient), applies
        RescaleSlope/Intercept and maps PixelPaddingValue to -1024 HU, and writes the volume and
        the tags the Rust test checks.
    phantom_pydicom_check.py radiograph FILE OUT.json
        Reads one CR/DX file and writes its kind, photometric interpretation and pixel summary.
Every element value is validated (pydicom's RAISE mode): a malformed tag fails the run.
"""
import json
import pathlib
import sys

import numpy as np
import pydicom
from pydicom import config

AIR_HU = -1024

# Malformed values (a DS longer than 16 characters, a bad DA or AS, ...) are errors, not warnings.
config.settings.reading_validation_mode = config.RAISE


def strict_read(path):
    """Reads a file and converts every element's value, so that validation sees each one."""
    ds = pydicom.dcmread(path)
    for element in list(ds.file_meta) + list(ds.iterall()):
        _ = element.value
    return ds


def read_ct(series_dir):
    datasets = [strict_read(path) for path in sorted(pathlib.Path(series_dir).glob("*.dcm"))]
    if not datasets:
        raise SystemExit(f"no .dcm files in {series_dir}")
    iop = np.array(datasets[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=np.float64))))
    positions = [[float(v) for v in ds.ImagePositionPatient] for ds in datasets]
    planes = []
    padding_voxels = 0
    for ds in datasets:
        raw = ds.pixel_array
        hu = raw.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        if "PixelPaddingValue" in ds:
            padded = raw == int(ds.PixelPaddingValue)
            padding_voxels += int(padded.sum())
            hu[padded] = AIR_HU
        if not np.all(hu == np.round(hu)):
            raise SystemExit(f"non-integer HU in {ds.SOPInstanceUID}")
        planes.append(hu)
    volume = np.stack(planes).astype(np.int16)
    first = datasets[0]
    steps = np.diff([np.dot(normal, p) for p in positions])
    return {
        "shape": list(volume.shape),
        "hu": volume.ravel().tolist(),
        "origin": positions[0],
        "z_positions": [p[2] for p in positions],
        "pixel_spacing": [float(v) for v in first.PixelSpacing],
        "slice_spacing": float(np.mean(steps)) if len(steps) else float(first.SliceThickness),
        "slice_thickness": float(first.SliceThickness),
        "instance_numbers": [int(ds.InstanceNumber) for ds in datasets],
        "sop_instance_uids": [str(ds.SOPInstanceUID) for ds in datasets],
        "series_instance_uid": str(first.SeriesInstanceUID),
        "study_instance_uid": str(first.StudyInstanceUID),
        "patient_id": str(first.PatientID),
        "patient_name": str(first.PatientName),
        "private_patient_id": private_value(first),
        "transfer_syntax": str(first.file_meta.TransferSyntaxUID),
        "sop_class_uid": str(first.SOPClassUID),
        "pixel_representation": int(first.PixelRepresentation),
        "bits_stored": int(first.BitsStored),
        "rescale_intercept": float(first.RescaleIntercept),
        "has_padding": "PixelPaddingValue" in first,
        "padding_voxels": padding_voxels,
        "modality": str(first.Modality),
    }


def private_value(ds):
    """Value of (0029,xx10) in the block whose creator is MEDTRAIN PHANTOM (UN in implicit VR)."""
    for element in range(0x10, 0x100):
        creator = ds.get((0x0029, element))
        if creator is None:
            continue
        text = creator.value.decode() if isinstance(creator.value, bytes) else str(creator.value)
        if text.strip() == "MEDTRAIN PHANTOM":
            value = ds[(0x0029, (element << 8) | 0x10)].value
            return (value.decode() if isinstance(value, bytes) else str(value)).strip()
    return None


def read_radiograph(path):
    ds = strict_read(path)
    pixels = ds.pixel_array.astype(np.float64)
    return {
        "modality": str(ds.Modality),
        "sop_class_uid": str(ds.SOPClassUID),
        "photometric": str(ds.PhotometricInterpretation),
        "shape": list(pixels.shape),
        "bits_stored": int(ds.BitsStored),
        "max": float(pixels.max()),
        "min": float(pixels.min()),
        "imager_pixel_spacing": [float(v) for v in ds.ImagerPixelSpacing],
        "patient_id": str(ds.PatientID),
    }


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("ct", "radiograph"):
        raise SystemExit(__doc__)
    kind, source, out = sys.argv[1:]
    result = read_ct(source) if kind == "ct" else read_radiograph(source)
    pathlib.Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
