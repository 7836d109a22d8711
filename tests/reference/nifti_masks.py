"""NIfTI label maps through nibabel alone (no medtrain code), for the mask import tests.

  nifti_masks.py variants SRC OUT_DIR   writes nibabel's versions of the label map SRC into OUT_DIR
                                        and prints {name: file}: the same voxels in other layouts
                                        (flipped, reoriented to RAS, axes swapped, qform only,
                                        NIfTI-2, int16) and two that must be refused (shifted by
                                        0.4 voxel, a probability map)
  nifti_masks.py points NII             prints the LPS coordinates (mm) of every labelled voxel,
                                        as nibabel places them, with their labels
  nifti_masks.py oblique SPEC OUT       writes a qform-only label map on the grid of an oblique
                                        series (SPEC: JSON with orientation, pixel spacing, the first
                                        slice's position, the slice step, dims and labelled voxels
                                        as [column, row, slice]) and prints its labelled points
"""
import json
import os
import sys

import nibabel as nib
import numpy as np
from nibabel.orientations import io_orientation, ornt_transform


def points(img):
    data = np.asanyarray(img.dataobj)
    idx = np.argwhere(data != 0)
    ras = nib.affines.apply_affine(img.affine, idx)
    lps = ras * np.array([-1.0, -1.0, 1.0])
    order = np.lexsort((lps[:, 0], lps[:, 1], lps[:, 2]))
    return [
        {"lps": [float(v) for v in lps[i]], "label": int(data[tuple(idx[i])])}
        for i in order
    ]


def variants(src, out):
    img = nib.load(src)
    data = np.asanyarray(img.dataobj).astype(np.uint8)
    affine = img.affine
    files = {}

    def save(name, image):
        path = os.path.join(out, name + ".nii.gz")
        nib.save(image, path)
        files[name] = path

    save("flip_i", nib.Nifti1Image(data, affine).as_reoriented(np.array([[0, -1], [1, 1], [2, 1]])))
    save("canonical", nib.as_closest_canonical(nib.Nifti1Image(data, affine)))
    swap = ornt_transform(io_orientation(affine), io_orientation(affine)[[1, 0, 2]])
    save("swap_ij", nib.Nifti1Image(data, affine).as_reoriented(swap))
    q = nib.Nifti1Image(data, None)
    q.set_qform(affine, code=1)
    q.set_sform(None, code=0)
    save("qform_only", q)
    save("nifti2", nib.Nifti2Image(data, affine))
    save("int16", nib.Nifti1Image(data.astype(np.int16), affine))
    shifted = affine.copy()
    shifted[:3, 3] += 0.4 * affine[:3, 0]
    save("shifted", nib.Nifti1Image(data, shifted))
    prob = data.astype(np.float32)
    prob[tuple(np.argwhere(data != 0)[0])] = 0.5
    save("probability", nib.Nifti1Image(prob, affine))
    return files


def oblique(spec, out):
    x = np.array(spec["orientation"][:3])
    y = np.array(spec["orientation"][3:])
    dr, dc = spec["pixel_spacing"]
    lps = np.eye(4)
    lps[:3, 0] = x * dc
    lps[:3, 1] = y * dr
    lps[:3, 2] = np.array(spec["slice_step"])
    lps[:3, 3] = np.array(spec["first_position"])
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    cols, rows, slices = spec["dims"]
    data = np.zeros((cols, rows, slices), np.uint8)
    for c, r, k in spec["voxels"]:
        data[c, r, k] = 1
    img = nib.Nifti1Image(data, None)
    img.set_qform(ras, code=1)
    img.set_sform(None, code=0)
    nib.save(img, out)
    return points(nib.load(out))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "variants":
        result = variants(sys.argv[2], sys.argv[3])
    elif what == "points":
        result = points(nib.load(sys.argv[2]))
    else:
        with open(sys.argv[2]) as f:
            result = oblique(json.load(f), sys.argv[3])
    json.dump(result, sys.stdout)
