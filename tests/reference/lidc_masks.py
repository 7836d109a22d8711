"""LIDC-IDRI XML to masks with ElementTree, matplotlib and pydicom alone (no medtrain code), for the
mask import tests.

  lidc_masks.py XML DICOM_DIR AGREEMENT   prints {"series_uid", "dims": [slices, rows, cols],
      "readers": n, "bits": [...], "consensus": [...]}: per voxel in stored order (slices by ascending
      position along the normal, as pydicom reads ImagePositionPatient), the bit mask of the readers
      whose outline contains the voxel's centre (matplotlib's Path.contains_points: even-odd; the
      vertices are integers and every pixel centre on an outline is excluded, as LIDC draws outlines
      just outside the nodule) and whether at least AGREEMENT readers outlined it.
"""
import json
import os
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pydicom
from matplotlib.path import Path

NS = {"l": "http://www.nih.gov"}


def on_outline(points, px, py):
    """Pixel centres exactly on a segment of the closed outline."""
    n = len(points)
    hit = np.zeros(px.shape, bool)
    for i in range(n):
        (x0, y0), (x1, y1) = points[i], points[(i + 1) % n]
        cross = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
        inside = (px >= min(x0, x1)) & (px <= max(x0, x1)) & (py >= min(y0, y1)) & (py <= max(y0, y1))
        hit |= (np.abs(cross) < 1e-9) & inside
    return hit


def main(xml, dicom_dir, agreement):
    root = ET.parse(xml).getroot()
    series_uid = root.find("l:ResponseHeader/l:SeriesInstanceUid", NS).text.strip()
    slices = []
    for dirpath, _, names in os.walk(dicom_dir):
        for name in names:
            ds = pydicom.dcmread(os.path.join(dirpath, name), stop_before_pixels=True)
            if ds.SeriesInstanceUID == series_uid:
                normal = np.cross(np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float))
                slices.append((float(np.dot(normal, np.array(ds.ImagePositionPatient, float))), ds.SOPInstanceUID, ds.Rows, ds.Columns))
    slices.sort()
    k_of = {uid: k for k, (_, uid, _, _) in enumerate(slices)}
    rows, cols = slices[0][2], slices[0][3]
    bits = np.zeros((len(slices), rows, cols), np.int64)
    py, px = np.mgrid[0:rows, 0:cols]
    centres = np.column_stack([px.ravel(), py.ravel()]).astype(float)
    sessions = root.findall("l:readingSession", NS)
    for r, session in enumerate(sessions):
        reader = np.zeros(bits.shape, bool)
        for nodule in session.findall("l:unblindedReadNodule", NS):
            for roi in nodule.findall("l:roi", NS):
                k = k_of[roi.find("l:imageSOP_UID", NS).text.strip()]
                points = [(float(e.find("l:xCoord", NS).text), float(e.find("l:yCoord", NS).text)) for e in roi.findall("l:edgeMap", NS)]
                if len(points) == 1:
                    reader[k, int(points[0][1]), int(points[0][0])] = True
                    continue
                inside = Path(points).contains_points(centres).reshape(rows, cols)
                inside &= ~on_outline(points, px, py)
                reader[k] |= inside
        bits |= reader.astype(np.int64) << r
    votes = np.zeros(bits.shape, np.int64)
    for r in range(len(sessions)):
        votes += (bits >> r) & 1
    json.dump({
        "series_uid": series_uid,
        "dims": list(bits.shape),
        "readers": len(sessions),
        "bits": bits.ravel().tolist(),
        "consensus": (votes >= agreement).astype(int).ravel().tolist(),
    }, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
