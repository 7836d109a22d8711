#!/usr/bin/env python3
"""PyTorch CPU peer of benches/cpu_train.rs: the same models, batch, loss and optimizer, timed the same
way (one warm-up step, then `steps` timed steps, median). Thread count from RAYON_NUM_THREADS so both
sides use the same.
    /usr/bin/python3 benches/cpu_train_torch.py <resnet18_2d|resnet3d> <steps>
"""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from torch_resnet import SmallResNet  # noqa: E402  (the 3D model, torchvision BasicBlock layout)

CLASSES = 2


def model(name):
    if name == "resnet18_2d":
        m = torchvision.models.resnet18(num_classes=CLASSES)
        m.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        return m, torch.randn(32, 1, 128, 128)
    if name == "resnet3d":
        return SmallResNet(1, CLASSES, 32, [2, 2, 2], dims=3), torch.randn(4, 1, 64, 64, 64)
    raise SystemExit(f"unknown model {name}")


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet18_2d"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    threads = int(os.environ.get("RAYON_NUM_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    net, x = model(name)
    y = torch.arange(x.shape[0]) % CLASSES
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    net.train()
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if step > 0:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"pytorch {torch.__version__} {name}: batch {x.shape[0]}, {threads} threads, median step {median:.3f} s "
          f"over {len(times)} timed steps, {x.shape[0] / median:.2f} img/s")


if __name__ == "__main__":
    main()
