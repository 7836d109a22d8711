"""Reads every file of the Achilles phantom with pydicom and reports what a reader sees, one JSON
object per file: modality, photometric interpretation, samples, frames, BurnedInAnnotation, the
ultrasound region, the largest value in the top border and in the tissue region (of every frame
and sample), the study and its date, and for MR the rows, columns, orientation and position.

    achilles_check.py DICOM_DIR
"""
import json
import os
import sys

import numpy as np
import pydicom

out = []
for folder, _, names in sorted(os.walk(sys.argv[1])):
    for name in sorted(names):
        ds = pydicom.dcmread(os.path.join(folder, name))
        px = ds.pixel_array
        row = {
            "modality": ds.Modality,
            "photometric": ds.PhotometricInterpretation,
            "samples": int(ds.SamplesPerPixel),
            "frames": int(getattr(ds, "NumberOfFrames", 1)),
            "patient_id": ds.PatientID,
            "series": ds.SeriesInstanceUID,
            "study": ds.StudyInstanceUID,
            "study_date": ds.StudyDate,
        }
        if ds.Modality == "US":
            r = ds.SequenceOfUltrasoundRegions[0]
            y0 = int(r.RegionLocationMinY0)
            frames = px if row["frames"] > 1 else px[None]
            row.update(
                burned_in=ds.BurnedInAnnotation,
                region=[int(r.RegionLocationMinX0), y0, int(r.RegionLocationMaxX1), int(r.RegionLocationMaxY1)],
                delta_cm=[float(r.PhysicalDeltaX), float(r.PhysicalDeltaY)],
                border_max=int(frames[:, :y0].max()),
                tissue_max=int(frames[:, y0:].max()),
                grey=bool(row["samples"] == 1 or (np.all(frames[..., 0] == frames[..., 1]) and np.all(frames[..., 1] == frames[..., 2]))),
            )
        else:
            row.update(
                rows=int(ds.Rows),
                cols=int(ds.Columns),
                orientation=[float(v) for v in ds.ImageOrientationPatient],
                position=[float(v) for v in ds.ImagePositionPatient],
            )
        out.append(row)
print(json.dumps(out))
