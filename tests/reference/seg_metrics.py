"""Segmentation metrics with numpy and scipy alone (no medtrain code), for the metric tests.

Reads JSON cases {"dims": [slices, rows, cols], "spacing": [...], "pred": [0/1...], "truth": [...]}
from the file given and prints, per case, Dice, IoU, HD95 and MSD as MONAI defines them: Dice and
IoU are null when the truth is empty; surfaces are mask ^ binary_erosion(mask, 3D cross) with the
outside as background; HD95 is the larger directed 95th percentile, MSD the mean of both
directions' distances; both null when either mask is empty.
"""
import json
import sys

import numpy as np
from scipy import ndimage


def surface(mask):
    cross = ndimage.generate_binary_structure(3, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=cross, border_value=0)


def directed(a, b, spacing):
    dist = ndimage.distance_transform_edt(~surface(b), sampling=spacing)
    return dist[surface(a)]


def case(c):
    dims, spacing = c["dims"], c["spacing"]
    p = np.array(c["pred"], bool).reshape(dims)
    g = np.array(c["truth"], bool).reshape(dims)
    inter, ps, gs = (p & g).sum(), p.sum(), g.sum()
    out = {"dice": None, "iou": None, "hd95": None, "msd": None}
    if gs:
        out["dice"] = float(2 * inter / (ps + gs))
        out["iou"] = float(inter / (ps + gs - inter))
    if ps and gs:
        d_pg, d_gp = directed(p, g, spacing), directed(g, p, spacing)
        out["hd95"] = float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))
        out["msd"] = float(np.concatenate([d_pg, d_gp]).mean())
    return out


with open(sys.argv[1]) as f:
    cases = json.load(f)
json.dump([case(c) for c in cases], sys.stdout)
