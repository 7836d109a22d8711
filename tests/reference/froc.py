"""FROC sensitivities and CPM with numpy alone (no medtrain code), for the detection tests.

Reads JSON cases from the file given. A case is a list of scans; a scan is
{"nodules": [[x, y, z, diameter], ...], "candidates": [[x, y, z, score], ...]} in mm. Prints, per case,
{"sensitivity": [7 values], "cpm": value} or null when no scan has a nodule.

The rules (LUNA16's matching): a candidate hits a nodule when its centre lies strictly within the
nodule's radius; a nodule's score is the highest score of the candidates that hit it; a candidate
that hits no nodule is a false positive. For every distinct score t the curve has the point
(false positives scoring >= t per scan, nodules scoring >= t / nodules), plus (0, 0); at equal rates
the highest sensitivity stands. Sensitivities at 1/8 ... 8 false positives per scan come from
np.interp on that curve; CPM is their mean.
"""
import json
import sys

import numpy as np

RATES = [0.125, 0.25, 0.5, 1, 2, 4, 8]


def case(scans):
    n_nodules = sum(len(s["nodules"]) for s in scans)
    if not scans or n_nodules == 0:
        return None
    tp, fp = [], []
    for s in scans:
        nod = np.array(s["nodules"], float).reshape(-1, 4)
        cand = np.array(s["candidates"], float).reshape(-1, 4)
        d2 = ((cand[:, None, :3] - nod[None, :, :3]) ** 2).sum(-1)
        hit = d2 < (nod[None, :, 3] / 2) ** 2
        for j in range(len(nod)):
            if hit[:, j].any():
                tp.append(cand[hit[:, j], 3].max())
        fp.extend(cand[~hit.any(axis=1), 3])
    tp, fp = np.array(tp), np.array(fp)
    best = {0.0: 0.0}
    for t in np.unique(np.concatenate([tp, fp]))[::-1]:
        rate = float((fp >= t).sum()) / len(scans)
        sens = float((tp >= t).sum()) / n_nodules
        best[rate] = max(best.get(rate, 0.0), sens)
    xs = sorted(best)
    sens = np.interp(RATES, xs, [best[x] for x in xs])
    return {"sensitivity": [float(v) for v in sens], "cpm": float(sens.mean())}


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    print(json.dumps([case(c) for c in cases]))


if __name__ == "__main__":
    main()
