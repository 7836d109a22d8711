"""RT Structure Sets to masks with pydicom, numpy and matplotlib alone (no medtrain code), for the
mask import tests.

  rtstruct_masks.py masks RTSTRUCT DICOM_DIR   prints {"series_uid", "dims": [slices, rows, cols],
      "bits": [...]}: per voxel in stored order (slices by ascending position along the normal), the
      bit mask of the ROIs (bit r: the r-th item of the ROI Contour Sequence) covering the voxel's
      centre. Each contour is projected onto the pixel grid of the image its Contour Image Sequence
      names (column = (p - ImagePositionPatient) . row cosines / column spacing, row likewise with the
      column cosines and the row spacing); matplotlib's Path.contains_points says which centres are
      inside, centres on the outline are outside, and the contours of one ROI on one slice combine by
      exclusive or (a nested contour is a hole).
  rtstruct_masks.py unknown_image RTSTRUCT OUT   writes a copy whose first ROI's first contour
      names image 9.9.9.9, which no series has.
  rtstruct_masks.py hole RTSTRUCT OUT          writes a copy whose first ROI's largest contour gets a
      hole: a second contour on the same image, the first scaled by one half about its centroid.
"""
import copy
import json
import os
import sys

import numpy as np
import pydicom
from matplotlib.path import Path

from lidc_masks import on_outline


def masks(rt_path, dicom_dir):
    rt = pydicom.dcmread(rt_path)
    series_uid = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID
    slices = []
    for dirpath, _, names in os.walk(dicom_dir):
        for name in names:
            ds = pydicom.dcmread(os.path.join(dirpath, name), stop_before_pixels=True)
            if ds.SeriesInstanceUID == series_uid:
                x = np.array(ds.ImageOrientationPatient[:3], float)
                y = np.array(ds.ImageOrientationPatient[3:], float)
                ipp = np.array(ds.ImagePositionPatient, float)
                slices.append((float(np.dot(np.cross(x, y), ipp)), ds.SOPInstanceUID, ds.Rows, ds.Columns, ipp, x, y,
                               [float(v) for v in ds.PixelSpacing]))
    slices.sort(key=lambda s: s[0])
    k_of = {s[1]: k for k, s in enumerate(slices)}
    rows, cols = slices[0][2], slices[0][3]
    bits = np.zeros((len(slices), rows, cols), np.int64)
    py, px = np.mgrid[0:rows, 0:cols]
    centres = np.column_stack([px.ravel(), py.ravel()]).astype(float)
    for r, roi in enumerate(rt.ROIContourSequence):
        per_slice = {}
        for contour in getattr(roi, "ContourSequence", []):
            if contour.ContourGeometricType != "CLOSED_PLANAR":
                continue
            k = k_of[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            _, _, _, _, ipp, x, y, spacing = slices[k]
            pts = np.array(contour.ContourData, float).reshape(-1, 3) - ipp
            points = list(zip(pts @ x / spacing[1], pts @ y / spacing[0]))
            inside = Path(points).contains_points(centres).reshape(rows, cols) & ~on_outline(points, px, py)
            per_slice[k] = per_slice.get(k, np.zeros((rows, cols), bool)) ^ inside
        for k, m in per_slice.items():
            bits[k] |= m.astype(np.int64) << r
    json.dump({"series_uid": series_uid, "dims": list(bits.shape), "bits": bits.ravel().tolist()}, sys.stdout)


def hole(rt_path, out):
    rt = pydicom.dcmread(rt_path)
    seq = rt.ROIContourSequence[0].ContourSequence
    big = max(seq, key=lambda c: np.ptp(np.array(c.ContourData, float).reshape(-1, 3)[:, 0]))
    pts = np.array(big.ContourData, float).reshape(-1, 3)
    centre = pts.mean(axis=0)
    inner = copy.deepcopy(big)
    inner.ContourData = [f"{v:.3f}" for v in (centre + 0.5 * (pts - centre)).ravel()]
    seq.append(inner)
    rt.save_as(out)


def unknown_image(rt_path, out):
    rt = pydicom.dcmread(rt_path)
    rt.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID = "9.9.9.9"
    rt.save_as(out)


if __name__ == "__main__":
    {"masks": masks, "hole": hole, "unknown_image": unknown_image}[sys.argv[1]](*sys.argv[2:])
