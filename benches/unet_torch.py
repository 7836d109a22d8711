#!/usr/bin/env python3
"""PyTorch + MONAI peer of benches/unet.rs: the same U-Net (tests/reference/torch_unet.py, medtrain's
layout), MONAI's DiceCELoss(sigmoid=True) and AdamW for a training step, MONAI's
sliding_window_inference (overlap 0.5, Gaussian, sw_batch_size 2) for a volume, timed the same way
(one warm-up, then the median). Threads from RAYON_NUM_THREADS.
    target/peers/bin/python benches/unet_torch.py <train|infer> <repeats>
"""
import os
import statistics
import sys
import time

import monai
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from torch_unet import UNet  # noqa: E402

WIDTHS, PATCH, BATCH, VOLUME = [16, 32, 64], (32, 64, 64), 2, (48, 128, 128)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "train"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    threads = int(os.environ.get("RAYON_NUM_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    net = UNet(3, 1, 1, WIDTHS)
    times = []
    if mode == "train":
        x = torch.randn(BATCH, 1, *PATCH)
        y = (torch.rand(BATCH, 1, *PATCH) < 1 / 17).float()
        loss_fn = DiceCELoss(sigmoid=True)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
        net.train()
        for step in range(repeats + 1):
            start = time.perf_counter()
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
            if step:
                times.append(time.perf_counter() - start)
        m = statistics.median(times)
        print(f"pytorch {torch.__version__} + monai {monai.__version__} unet3d train: batch {BATCH} x {PATCH}, "
              f"{threads} threads, median step {m:.3f} s over {repeats} steps, {BATCH / m:.2f} patches/s")
    else:
        vol = torch.randn(1, 1, *VOLUME)
        net.eval()
        with torch.no_grad():
            for rep in range(repeats + 1):
                start = time.perf_counter()
                sliding_window_inference(vol, PATCH, BATCH, net, overlap=0.5, mode="gaussian")
                if rep:
                    times.append(time.perf_counter() - start)
        print(f"pytorch {torch.__version__} + monai {monai.__version__} unet3d infer: volume {VOLUME}, {threads} threads, "
              f"median {statistics.median(times):.3f} s per volume over {repeats}")


if __name__ == "__main__":
    main()
