#!/usr/bin/env python3
"""The `ldct-seg` demo's task done the MONAI way, for the final-Dice comparison in BENCHMARKS.md.

Reads what the demo left (scripts/demo.sh ldct-seg OUT): the catalog's series table, the manifest's
train and test splits, the HU volumes straight from the pack shards and the consensus masks (at least
`readers_agree` readers) from the catalog's mask shards, so both sides learn the same targets. Then
trains medtrain's U-Net layout (tests/reference/torch_unet.py: widths 8, 16, 32) with MONAI:
RandCropByPosNegLabeld (8 x 32 x 32, two foreground-centred patches in three), RandFlipd along
columns, DiceCELoss(sigmoid=True), AdamW 3e-3 with a cosine decay to 1e-4, gradient norm clipped at 5,
global batch 4, as many steps as the demo's run took (its train-status.json). Predicts every test
series with sliding_window_inference (overlap 0.5, Gaussian), foreground where the logit is positive,
and scores DiceMetric(ignore_empty=True) and HausdorffDistanceMetric(percentile=95) at the voxel
spacing, with a 1000-resample percentile bootstrap of the mean over the cases that define each.

  target/peers/bin/python benches/seg_monai.py OUT [threads] [seed]
Prints one JSON object: MONAI's metrics beside medtrain's (OUT/eval/eval.json).
"""
import json
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from torch_unet import UNet  # noqa: E402

from monai.inferers import sliding_window_inference  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from monai.metrics import DiceMetric, HausdorffDistanceMetric  # noqa: E402
from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd  # noqa: E402

PATCH = (8, 32, 32)
WINDOW = (-600.0, 1500.0)


def load(out):
    cat_dir = os.path.join(out, "catalog")
    state = json.load(open(os.path.join(cat_dir, "catalog.json")))
    tables = h5py.File(os.path.join(cat_dir, state["tables"]), "r")["series"]
    col = lambda name: tables[name][()]  # noqa: E731
    keys = [bytes(k).decode().rstrip("\0") for k in col("series_key")]
    shard, offset, length = col("shard"), col("data_offset"), col("data_length")
    n, rows, cols = col("n_slices"), col("rows"), col("cols")
    spacing, step = col("pixel_spacing").reshape(-1, 2), col("slice_spacing")
    masks = next(s for s in state["label_sets"] if s["name"] == "lidc")["masks"]
    agree = masks.get("readers_agree") or 1
    index = {}
    for ref in masks["shards"]:
        path = os.path.join(cat_dir, masks["dir"], ref["file"])
        f = h5py.File(path, "r")
        for e in json.loads(bytes(f["index_json"][()]).decode()):
            index[e["series_key"]] = (path, e)
    manifest = h5py.File(os.path.join(out, "manifest.h5"), "r")

    def split(name):
        g = manifest[name]
        return [r for s, k in zip(g["runs_start"][()], g["runs_length"][()]) for r in range(s, s + k)]

    def case(r):
        shape = (int(n[r]), int(rows[r]), int(cols[r]))
        hu = np.fromfile(state["shards"][shard[r]]["path"], dtype="<i2", count=int(length[r]) // 2, offset=int(offset[r]))
        low = WINDOW[0] - WINDOW[1] / 2
        image = np.clip((hu.reshape(shape).astype(np.float32) - low) / WINDOW[1], 0, 1)
        path, e = index[keys[r]]
        dtype = "<u2" if e["dtype"] == "u16" else "u1"
        bits = np.fromfile(path, dtype=dtype, count=int(np.prod(e["shape"])), offset=e["offset"]).reshape(e["shape"])
        votes = np.zeros(bits.shape, np.int64)
        for b in range(16):
            votes += (bits.astype(np.int64) >> b) & 1
        label = (votes >= agree).astype(np.float32)
        return {"key": keys[r], "image": image[None], "label": label[None],
                "spacing": (float(step[r]), float(spacing[r][0]), float(spacing[r][1]))}

    return [case(r) for r in split("train")], [case(r) for r in split("test")]


def bootstrap(values, seed, resamples=1000, level=0.95):
    v = np.array([x for x in values if x is not None and np.isfinite(x)])
    if len(v) == 0:
        return None
    rng = np.random.default_rng(seed)
    means = [v[rng.integers(0, len(v), len(v))].mean() for _ in range(resamples)]
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"estimate": float(v.mean()), "low": float(lo), "high": float(hi), "cases": int(len(v))}


def main(out, threads=2, seed=2026):
    torch.set_num_threads(int(threads))
    torch.manual_seed(int(seed))
    train, test = load(out)
    steps = json.load(open(os.path.join(out, "run", "train-status.json")))["global_step"]
    crop = Compose([
        RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=PATCH, pos=2, neg=1,
                               num_samples=1, allow_smaller=True),
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=2),
    ])
    crop.set_random_state(int(seed))
    model = UNet(3, 1, 1, [8, 16, 32])
    loss_fn = DiceCELoss(sigmoid=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-4)
    rng = np.random.default_rng(int(seed))
    model.train()
    for _ in range(steps):
        batch = [crop({"image": c["image"], "label": c["label"]})[0] for c in (train[i] for i in rng.integers(0, len(train), 4))]
        x = torch.stack([torch.as_tensor(np.asarray(b["image"])) for b in batch])
        y = torch.stack([torch.as_tensor(np.asarray(b["label"])) for b in batch])
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
    model.eval()
    dice, hd95 = [], []
    with torch.no_grad():
        for c in test:
            x = torch.as_tensor(c["image"])[None]
            logits = sliding_window_inference(x, PATCH, 2, model, overlap=0.5, mode="gaussian")
            pred = (logits > 0).float()
            y = torch.as_tensor(c["label"])[None]
            d = DiceMetric(include_background=True, reduction="none", ignore_empty=True)(pred, y)
            dice.append(None if torch.isnan(d).all() else float(d.flatten()[0]))
            if pred.sum() > 0 and y.sum() > 0:
                h = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(pred, y, spacing=c["spacing"])
                hd95.append(float(h.flatten()[0]))
            else:
                hd95.append(None)
    ours = json.load(open(os.path.join(out, "eval", "eval.json")))["segmentation"]["model"]
    print(json.dumps({
        "steps": steps,
        "test_cases": len(test),
        "monai": {"dice": bootstrap(dice, seed), "hd95_mm": bootstrap(hd95, seed + 1)},
        "medtrain": {"dice": ours["dice"], "hd95_mm": ours["hd95_mm"]},
    }, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], *[int(a) for a in sys.argv[2:]])
