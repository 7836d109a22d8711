"""Writes DICOM SEGs of the phantom's truth masks with highdicom (no medtrain code), for the SEG
import tests.

  write_seg.py TRUTH_DIR DICOM_DIR OUT

For every series of TRUTH_DIR/masks.csv whose NIfTI mask (read with nibabel) has a labelled voxel,
the mask is taken onto the series' DICOM grid (pydicom: each pixel centre, IPP + c·Δc·X + r·Δr·Y,
through the inverse of the NIfTI affine, RAS↔LPS) and written, one file per series, as
  OUT/binary/<PatientID>.dcm      BINARY, frames referencing their source images (highdicom);
  OUT/fractional/<PatientID>.dcm  FRACTIONAL (max 255): labelled pixels 0.75, and every pixel next to
                                  one 0.45 (just under half: outside the segment);
  OUT/position/<PatientID>.dcm    BINARY with the per-frame Derivation Image Sequence removed, so
                                  only the plane positions place the frames;
  OUT/unknown/<PatientID>.dcm     BINARY whose first frame references SOP instance 9.9.9.9 (the
                                  first series only).
Prints {"series": [SeriesInstanceUID, ...]}.
"""
import csv
import json
import os
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from scipy import ndimage


def series_slices(dicom_dir):
    by = {}
    for d, _, files in os.walk(dicom_dir):
        for f in files:
            ds = pydicom.dcmread(os.path.join(d, f))
            if getattr(ds, "Modality", "") == "CT":
                by.setdefault(ds.SeriesInstanceUID, []).append(ds)
    for uid, slices in by.items():
        x = np.array(slices[0].ImageOrientationPatient[:3], float)
        y = np.array(slices[0].ImageOrientationPatient[3:], float)
        normal = np.cross(x, y)
        slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, float))))
    return by


def on_grid(img, slices):
    inv = np.linalg.inv(img.affine)
    data = np.asarray(img.dataobj)
    out = np.zeros((len(slices), slices[0].Rows, slices[0].Columns), bool)
    rr, cc = np.meshgrid(np.arange(slices[0].Rows), np.arange(slices[0].Columns), indexing="ij")
    for k, s in enumerate(slices):
        x = np.array(s.ImageOrientationPatient[:3], float)
        y = np.array(s.ImageOrientationPatient[3:], float)
        dr, dc = (float(v) for v in s.PixelSpacing)
        p = np.array(s.ImagePositionPatient, float)[None, None, :] + cc[..., None] * dc * x + rr[..., None] * dr * y
        ras = p * np.array([-1.0, -1.0, 1.0])
        v = np.rint(ras @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        inside = np.all((v >= 0) & (v < np.array(data.shape)), axis=-1)
        vals = np.zeros(inside.shape, bool)
        vi = v[inside]
        vals[inside] = data[vi[:, 0], vi[:, 1], vi[:, 2]] != 0
        out[k] = vals
    return out


def seg_of(slices, pixels, kind):
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Nodule",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    extra = {"max_fractional_value": 255} if kind == "FRACTIONAL" else {}
    return hd.seg.Segmentation(
        source_images=slices,
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=[desc],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="reference",
        manufacturer_model_name="write_seg.py",
        software_versions="1",
        device_serial_number="1",
        **extra,
    )


def main():
    truth, dicom_dir, out = sys.argv[1:4]
    by = series_slices(dicom_dir)
    for mode in ("binary", "fractional", "position", "unknown"):
        os.makedirs(os.path.join(out, mode), exist_ok=True)
    written = []
    with open(os.path.join(truth, "masks.csv")) as f:
        for row in csv.DictReader(f):
            img = nib.load(os.path.join(truth, row["File"]))
            slices = by[row["SeriesInstanceUID"]]
            mask = on_grid(img, slices)
            if not mask.any():
                continue
            name = row["PatientID"] + ".dcm"
            seg_of(slices, mask.astype(np.uint8), "BINARY").save_as(os.path.join(out, "binary", name))
            ring = ndimage.binary_dilation(mask) & ~mask
            frac = np.where(mask, 0.75, np.where(ring, 0.45, 0.0)).astype(np.float32)
            seg_of(slices, frac, "FRACTIONAL").save_as(os.path.join(out, "fractional", name))
            seg = seg_of(slices, mask.astype(np.uint8), "BINARY")
            for item in seg.PerFrameFunctionalGroupsSequence:
                del item.DerivationImageSequence
            seg.save_as(os.path.join(out, "position", name))
            if not written:
                seg = seg_of(slices, mask.astype(np.uint8), "BINARY")
                seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID = "9.9.9.9"
                seg.save_as(os.path.join(out, "unknown", name))
            written.append(row["SeriesInstanceUID"])
    print(json.dumps({"series": written}))


if __name__ == "__main__":
    main()
