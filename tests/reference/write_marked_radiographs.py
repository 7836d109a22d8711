"""Writes chest-radiograph-like CR images with pydicom, each with a bright square marker on the
patient's LEFT, stored in either column direction: PatientOrientation L\\F (columns run toward the
patient's left, as a PA chest is read: the marker on the right of the stored image) or R\\F (the
stored image mirrored: the marker on its left). A radiologist's display puts it on image right in
both. Every other image is MONOCHROME1 (inverted storage), so the marker is dark in the stored
values there and bright once displayed.

    write_marked_radiographs.py OUT_DIR N

Writes OUT_DIR/dicom/<patient>/cr.dcm and OUT_DIR/labels.csv (PatientID, SeriesInstanceUID, Finding).
"""
import csv
import os
import sys

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(7)
size, marker = 64, 16
rows = []
for i in range(n):
    toward_left = i % 2 == 0
    mono1 = (i // 2) % 2 == 1
    img = rng.normal(1000.0, 60.0, size=(size, size))
    c0 = size - 4 - marker if toward_left else 4
    img[24 : 24 + marker, c0 : c0 + marker] = 3000.0
    if mono1:
        img = 4095.0 - img
    pixels = np.clip(np.round(img), 0, 4095).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["marked-sop", str(i)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = f"MRK{i:04d}"
    ds.PatientName = f"MARKED^PATIENT{i}"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["marked-study", str(i)])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["marked-series", str(i)])
    ds.Modality = "CR"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"] if toward_left else ["R", "F"]
    ds.ViewPosition = "PA"
    ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows, ds.Columns = size, size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = pixels.tobytes()
    folder = os.path.join(out, "dicom", ds.PatientID)
    os.makedirs(folder, exist_ok=True)
    ds.save_as(os.path.join(folder, "cr.dcm"), enforce_file_format=True)
    rows.append((ds.PatientID, ds.SeriesInstanceUID, i % 3 == 0))
with open(os.path.join(out, "labels.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["PatientID", "SeriesInstanceUID", "Finding"])
    w.writerows((p, s, int(v)) for p, s, v in rows)
