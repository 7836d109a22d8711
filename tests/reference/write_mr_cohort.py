"""Writes a small MR cohort from pydicom's MR_small.dcm: one series per patient, each a copy of the
file with its own patient, study, series and instance identifiers (pydicom writes them), and a
series-level label CSV of a score per series, as an Achilles healing grade would be imported.

    write_mr_cohort.py MR_SMALL OUT_DIR N

Writes OUT_DIR/dicom/<patient>/mr.dcm, OUT_DIR/healing.csv (PatientID, SeriesInstanceUID, Score) and
OUT_DIR/features.csv (PatientID, SeriesInstanceUID, Thickness, Age; the first patient's Thickness
missing), the hand-crafted features a template fuses late. The score is drawn from 1..7 by patient
index, not from the pixels: the cohort shows that a template trains on MR, not that the score is
learnable (tests/fusion.rs shows that)."""
import csv
import os
import sys

import pydicom
from pydicom.uid import generate_uid

src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = []
features = []
for i in range(n):
    ds = pydicom.dcmread(src)
    ds.PatientID = f"ACH{i:04d}"
    ds.PatientName = f"ACHILLES^PATIENT{i}"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study", str(i)])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", str(i)])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["sop", str(i)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    folder = os.path.join(out, "dicom", ds.PatientID)
    os.makedirs(folder, exist_ok=True)
    ds.save_as(os.path.join(folder, "mr.dcm"))
    rows.append((ds.PatientID, ds.SeriesInstanceUID, 1 + i % 7))
    features.append((ds.PatientID, ds.SeriesInstanceUID, "" if i == 0 else f"{2.0 + 0.1 * i:.1f}", 30 + i))
with open(os.path.join(out, "healing.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["PatientID", "SeriesInstanceUID", "Score"])
    w.writerows(rows)
with open(os.path.join(out, "features.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["PatientID", "SeriesInstanceUID", "Thickness", "Age"])
    w.writerows(features)
