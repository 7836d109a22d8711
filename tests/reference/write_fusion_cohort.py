"""Writes a cohort for late fusion: N MR series (copies of pydicom's MR_small.dcm with new pixels and
identifiers), each image a bright horizontal band on a noisy background, as a tendon seen side on.
A healing score u in [0, 1] sets the band's thickness, and a hand-crafted feature measures it with
error, so the score is learnable from the pixels and from the feature, each alone.

    write_fusion_cohort.py MR_SMALL OUT_DIR N SEED

Writes OUT_DIR/dicom/<patient>/mr.dcm and these CSVs (PatientID, SeriesInstanceUID, then values):
- healing.csv: Score = 1 + 6 u (the target);
- features.csv: Thickness = u + N(0, 0.1), and Age (no signal); about 15% of the Thickness cells
  are empty (a missing measurement);
- features_shuffled.csv: features.csv with its rows' values permuted across series (the pixels
  alone carry the score);
- healing_pixshuf.csv and features_pixshuf.csv: the score and the features of series pi(i) given to
  series i, which is the same as shuffling the pixels across samples (the features alone carry it).
"""
import csv
import os
import sys

import numpy as np
import pydicom
from pydicom.uid import generate_uid

src, out, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
template = pydicom.dcmread(src)
rows_px, cols_px = int(template.Rows), int(template.Columns)

ids, scores, feats = [], [], []
for i in range(n):
    u = rng.uniform(0.0, 1.0)
    thickness = int(round(4 + 28 * u))
    top = rng.integers(4, rows_px - thickness - 3)
    img = rng.normal(200.0, 25.0, size=(rows_px, cols_px))
    img[top : top + thickness, :] += 600.0
    ds = pydicom.dcmread(src)
    ds.PixelData = np.clip(np.round(img), 0, 4000).astype(np.int16).tobytes()
    ds.PatientID = f"FUS{i:04d}"
    ds.PatientName = f"FUSION^PATIENT{i}"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["fusion-study", str(seed), str(i)])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["fusion-series", str(seed), str(i)])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["fusion-sop", str(seed), str(i)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    folder = os.path.join(out, "dicom", ds.PatientID)
    os.makedirs(folder, exist_ok=True)
    ds.save_as(os.path.join(folder, "mr.dcm"))
    measured = u + rng.normal(0.0, 0.1)
    missing = rng.uniform() < 0.15
    ids.append((ds.PatientID, ds.SeriesInstanceUID))
    scores.append(f"{1.0 + 6.0 * u:.6f}")
    feats.append(("" if missing else f"{measured:.6f}", f"{rng.uniform(20, 80):.1f}"))


def write(name, header, values):
    with open(os.path.join(out, name), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["PatientID", "SeriesInstanceUID"] + header)
        for key, v in zip(ids, values):
            w.writerow(list(key) + list(v))


perm = rng.permutation(n)
write("healing.csv", ["Score"], [(s,) for s in scores])
write("features.csv", ["Thickness", "Age"], feats)
write("features_shuffled.csv", ["Thickness", "Age"], [feats[j] for j in perm])
write("healing_pixshuf.csv", ["Score"], [(scores[j],) for j in perm])
write("features_pixshuf.csv", ["Thickness", "Age"], [feats[j] for j in perm])
