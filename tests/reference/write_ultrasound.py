"""Writes one small ultrasound object with pydicom and computes, with pydicom and numpy alone, the
floats training must produce from it.

    write_ultrasound.py OUT_DIR VARIANT [--low 0.5 --high 99.5]
    write_ultrasound.py --file DICOM_FILE [--low 0.5 --high 99.5]   (an existing file, e.g. pydicom's)

Variants (all 8-bit, 12 rows x 16 columns, a 2D region of the Sequence of Ultrasound Regions at
columns 2..13 and rows 3..9 with physical deltas of 0.02 cm; the border outside it is filled with 255,
as burned-in text would be, and the region's own values stay below 250):
    rgb-cine     RGB, 3 frames (a cine loop), BurnedInAnnotation YES
    ybr          YBR_FULL, 1 frame (stored as pydicom's convert_color_space of an RGB image)
    mono         MONOCHROME2, 2 frames

Reference: pydicom's pixel_array (YBR_FULL converted to RGB by pydicom), each frame cropped to the
region (an existing file: the largest 2D region of its Sequence of Ultrasound Regions, intersected with
the image, or the whole image without one), RGB to luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B), then per frame numpy's percentiles
(low, high), clip and z-score (population std). Prints JSON {"images": [[floats, row major], ...],
"rows": 7, "cols": 12}: one image per frame, in stored order. With --rgb ([data.intensity] rgb) each
image is 3 channels (R, G, B; a grey image three times), channel-major, each clipped and z-scored with
the luma's percentiles, mean and std."""
import argparse
import json
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from write_radiograph import normalise  # the same percentile clip and z-score (population std)

US_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.3.1"
ROWS, COLS = 12, 16
X0, Y0, X1, Y1 = 2, 3, 13, 9
BORDER = 255


def region():
    r = Dataset()
    r.RegionSpatialFormat = 1
    r.RegionDataType = 1
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0 = X0, Y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = X1, Y1
    r.PhysicalUnitsXDirection, r.PhysicalUnitsYDirection = 3, 3
    r.PhysicalDeltaX, r.PhysicalDeltaY = 0.02, 0.02
    # A second, smaller 2D region (an inset): the largest one is the tissue region.
    inset = Dataset()
    inset.RegionSpatialFormat = 1
    inset.RegionDataType = 1
    inset.RegionFlags = 0
    inset.RegionLocationMinX0, inset.RegionLocationMinY0 = 0, 0
    inset.RegionLocationMaxX1, inset.RegionLocationMaxY1 = 1, 1
    return Sequence([inset, r])


def frames_of(variant):
    n = {"rgb-cine": 3, "ybr": 1, "mono": 2}[variant]
    spp = 1 if variant == "mono" else 3
    y, x = np.mgrid[0:ROWS, 0:COLS]
    out = np.empty((n, ROWS, COLS, spp), dtype=np.uint8)
    for f in range(n):
        for c in range(spp):
            out[f, :, :, c] = (x * 13 + y * 7 + f * 31 + c * 57) % 240
    inside = np.zeros((ROWS, COLS), dtype=bool)
    inside[Y0 : Y1 + 1, X0 : X1 + 1] = True
    out[:, ~inside, :] = BORDER
    return out if spp == 3 else out[..., 0]


def write(out_dir, variant):
    pixels = frames_of(variant)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    multi = pixels.shape[0] > 1
    ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME_SOP_CLASS if multi else US_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = "WU-PATIENT"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = "20200102"
    ds.Modality = "US"
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    if multi:
        ds.NumberOfFrames = pixels.shape[0]
    if variant == "mono":
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        stored = pixels
    else:
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        if variant == "ybr":
            ds.PhotometricInterpretation = "YBR_FULL"
            stored = convert_color_space(pixels, "RGB", "YBR_FULL")
        else:
            ds.PhotometricInterpretation = "RGB"
            stored = pixels
    if variant == "rgb-cine":
        ds.BurnedInAnnotation = "YES"
    ds.SequenceOfUltrasoundRegions = region()
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{variant}.dcm")
    ds.save_as(path, enforce_file_format=True)
    return path


def file_region(ds):
    best = None
    for r in ds.get("SequenceOfUltrasoundRegions", []):
        if r.get("RegionSpatialFormat") != 1:
            continue
        x0, y0 = max(int(r.RegionLocationMinX0), 0), max(int(r.RegionLocationMinY0), 0)
        x1 = min(int(r.RegionLocationMaxX1), ds.Columns - 1)
        y1 = min(int(r.RegionLocationMaxY1), ds.Rows - 1)
        if x0 > x1 or y0 > y1:
            continue
        area = (x1 - x0 + 1) * (y1 - y0 + 1)
        if best is None or area > best[0]:
            best = (area, (x0, y0, x1, y1))
    return best[1] if best else (0, 0, ds.Columns - 1, ds.Rows - 1)


def reference(path, low, high, region=(X0, Y0, X1, Y1), rgb=False):
    ds = pydicom.dcmread(path)
    x0, y0, x1, y1 = region
    arr = ds.pixel_array  # YBR_FULL is converted to RGB by pydicom
    if int(getattr(ds, "NumberOfFrames", 1)) == 1:
        arr = arr[np.newaxis]
    images = []
    for frame in arr:
        crop = frame[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
        luma = crop
        if crop.ndim == 3:
            luma = 0.299 * crop[..., 0] + 0.587 * crop[..., 1] + 0.114 * crop[..., 2]
        if not rgb:
            images.append(normalise(luma, low, high).ravel().tolist())
            continue
        # Channels R, G, B (grey: the image three times), clipped and z-scored with the luma's
        # percentiles, mean and population std; channel-major.
        lo, hi = np.percentile(luma, [low, high])
        clipped = np.clip(luma, lo, hi)
        std = clipped.std() if clipped.std() > 0 else 1.0
        chans = crop if crop.ndim == 3 else np.stack([crop] * 3, axis=-1)
        images.append(
            np.concatenate([((np.clip(chans[..., c], lo, hi) - clipped.mean()) / std).ravel() for c in range(3)]).tolist()
        )
    return images


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out", nargs="?")
    p.add_argument("variant", nargs="?")
    p.add_argument("--file")
    p.add_argument("--low", type=float, default=0.5)
    p.add_argument("--high", type=float, default=99.5)
    p.add_argument("--rgb", action="store_true", help="3 channels per image ([data.intensity] rgb)")
    a = p.parse_args()
    if a.file:
        region = file_region(pydicom.dcmread(a.file, stop_before_pixels=True))
        x0, y0, x1, y1 = region
        images = reference(a.file, a.low, a.high, region)
        json.dump({"images": images, "rows": y1 - y0 + 1, "cols": x1 - x0 + 1}, sys.stdout)
        return
    path = write(a.out, a.variant)
    json.dump(
        {"images": reference(path, a.low, a.high, rgb=a.rgb), "rows": Y1 - Y0 + 1, "cols": X1 - X0 + 1},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
