"""Reads `predict`'s DICOM SEGs with highdicom and pydicom, its NIfTI masks with nibabel, and the
source DICOM series with pydicom (no medtrain code), for the predicted-SEG tests.

Arguments: the predict output directory, the source DICOM directory, and "source" when predict was
given --source (the SEG must then copy the source's patient, study and frame of reference, and
reference its instances), else "local".

For every SEG in masks.csv it checks, and counts what passed:
- opened: highdicom.seg.segread reads it; one segment, labelled "Nodule", SCT 27925004, BINARY;
- pixels: every frame (pydicom unpacks the bits) equals the NIfTI mask's slice at the frame's
  ImagePositionPatient, and every NIfTI slice with a labelled voxel has a frame;
- references (source): each frame's source instance is the DICOM instance at its position, and
  every referenced instance is in the source series; identity (source): the patient, study and
  frame-of-reference elements equal the source's.
Prints {"segs": N, "opened": .., "pixels": .., "references": .., "identity": .., "problems": [...]}.
"""
import csv
import json
import os
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom

from predicted_masks import dicom_headers

COPIED = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "FrameOfReferenceUID"]


def sources(root):
    return {ds.SOPInstanceUID: ds for ds in dicom_headers(root) if "SOPInstanceUID" in ds}


def main():
    out, root, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    src = sources(root)
    r = {"segs": 0, "opened": 0, "pixels": 0, "references": 0, "identity": 0, "problems": []}
    to_lps = np.diag([-1.0, -1.0, 1.0])
    with open(os.path.join(out, "masks.csv")) as f:
        for row in csv.DictReader(f):
            if not row["seg"]:
                continue
            r["segs"] += 1
            key = row["series_key"]
            path = os.path.join(out, row["seg"])
            seg = hd.seg.segread(path)
            desc = seg.get_segment_description(1)
            ok = (seg.get_segment_numbers() == [1] and desc.segment_label == "Nodule"
                  and desc.segmented_property_type.value == "27925004"
                  and seg.segmentation_type.value == "BINARY")
            r["opened"] += ok
            if not ok:
                r["problems"].append(f"{key}: segment {desc.segment_label} {desc.segmented_property_type}")
            img = nib.load(os.path.join(out, row["file"]))
            lps = to_lps @ img.affine[:3, :]
            vol = np.asarray(img.dataobj).transpose(2, 1, 0)  # (slices, rows, cols)
            slice_pos = np.array([lps[:, 3] + k * lps[:, 2] for k in range(vol.shape[0])])
            ds = pydicom.dcmread(path)
            frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
            seen, good, refs = set(), True, True
            for i, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
                pos = np.array(fg.PlanePositionSequence[0].ImagePositionPatient, float)
                k = int(np.argmin(np.abs(slice_pos - pos).max(axis=1)))
                if np.abs(slice_pos[k] - pos).max() > 1e-3:
                    good = False
                    r["problems"].append(f"{key}: frame {i} at {pos} is no slice of the mask")
                    continue
                seen.add(k)
                if not np.array_equal(frames[i] != 0, vol[k] != 0):
                    good = False
                    r["problems"].append(f"{key}: frame {i} differs from NIfTI slice {k}")
                sop = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                if mode == "source":
                    s = src.get(sop)
                    if s is None or np.abs(np.array(s.ImagePositionPatient, float) - pos).max() > 1e-3:
                        refs = False
                        r["problems"].append(f"{key}: frame {i} references {sop}, not the source slice there")
            missing = [k for k in range(vol.shape[0]) if vol[k].any() and k not in seen]
            if missing:
                good = False
                r["problems"].append(f"{key}: labelled slices without a frame: {missing}")
            r["pixels"] += good
            if mode == "source":
                ref_series = ds.ReferencedSeriesSequence[0]
                sops = [i.ReferencedSOPInstanceUID for i in ref_series.ReferencedInstanceSequence]
                first = src.get(sops[0])
                refs = refs and all(s in src and src[s].SeriesInstanceUID == ref_series.SeriesInstanceUID for s in sops)
                refs = refs and len(sops) == vol.shape[0]
                r["references"] += refs
                same = first is not None and all(str(ds.get(t, "")) == str(first.get(t, "")) for t in COPIED)
                r["identity"] += same
                if not same:
                    r["problems"].append(f"{key}: identity differs from the source")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
