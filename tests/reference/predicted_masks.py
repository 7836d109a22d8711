"""Reads `predict`'s NIfTI masks with nibabel and the source DICOM series with pydicom (no medtrain
code), for the predicted-mask tests.

Arguments: the predict output directory (masks.csv, masks/) and the DICOM directory the packs were
made from. For each mask it finds the CT series with the same rows, columns and slices whose every
slice position (ImagePositionPatient) is where the NIfTI affine puts voxel (0, 0, k), and whose row
and column steps (ImageOrientationPatient times PixelSpacing) are the affine's i and j columns: then
NIfTI voxel (i, j, k) is pixel (row j, column i) of that slice. NIfTI is RAS, DICOM LPS: x and y
change sign. It also labels the mask's 26-connected regions (scipy.ndimage.label) and gives each
one's voxel count and mean voxel centre in LPS mm.

Prints {"masks": N, "placed": [series_key whose geometry matched a DICOM series], "regions":
{series_key: [[x, y, z, voxels], ...]}}.
"""
import csv
import json
import os
import sys

import nibabel as nib
import numpy as np
import pydicom
from scipy import ndimage


def dicom_headers(root):
    """Every readable DICOM header under root (pixels not read)."""
    for d, _, files in os.walk(root):
        for f in files:
            try:
                yield pydicom.dcmread(os.path.join(d, f), stop_before_pixels=True)
            except Exception:
                continue


def dicom_series(root):
    series = {}
    for ds in dicom_headers(root):
        if getattr(ds, "Modality", "") != "CT" or "ImagePositionPatient" not in ds:
            continue
        series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    return series


def matches(lps, shape, slices):
    s0 = slices[0]
    if (int(s0.Columns), int(s0.Rows), len(slices)) != tuple(shape):
        return False
    iop = np.array(s0.ImageOrientationPatient, float)
    ps = np.array(s0.PixelSpacing, float)  # row spacing, column spacing
    if not (np.allclose(lps[:, 0], iop[:3] * ps[1], atol=1e-4) and np.allclose(lps[:, 1], iop[3:] * ps[0], atol=1e-4)):
        return False
    positions = np.array([np.array(s.ImagePositionPatient, float) for s in slices])
    for k in range(shape[2]):
        p = lps[:, 3] + k * lps[:, 2]
        if np.min(np.abs(positions - p).max(axis=1)) > 1e-3:
            return False
    return True


def main():
    out, dicom_root = sys.argv[1], sys.argv[2]
    series = dicom_series(dicom_root)
    to_lps = np.diag([-1.0, -1.0, 1.0])
    result = {"masks": 0, "placed": [], "regions": {}}
    with open(os.path.join(out, "masks.csv")) as f:
        for row in csv.DictReader(f):
            if not row["file"]:
                continue
            result["masks"] += 1
            img = nib.load(os.path.join(out, row["file"]))
            lps = to_lps @ img.affine[:3, :]
            data = np.asarray(img.dataobj)
            if any(matches(lps, data.shape, s) for s in series.values()):
                result["placed"].append(row["series_key"])
            labels, n = ndimage.label(data > 0, structure=np.ones((3, 3, 3)))
            regions = []
            for l in range(1, n + 1):
                idx = np.argwhere(labels == l).mean(axis=0)
                centre = lps[:, :3] @ idx + lps[:, 3]
                regions.append([float(centre[0]), float(centre[1]), float(centre[2]), int((labels == l).sum())])
            result["regions"][row["series_key"]] = regions
    print(json.dumps(result))


if __name__ == "__main__":
    main()
