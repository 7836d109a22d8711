#!/usr/bin/env python3
"""PyTorch peer of `medtrain bench explain`: hook-based Grad-CAM on the same models and inputs (the
resnet18 topology on one 512x512 slice, the 3D ResNet on one 128^3 volume), backward from the class
logit to the last stage's output only (torch.autograd.grad with frozen parameters), then weights,
weighted sum + ReLU, F.interpolate (align_corners=False) and min-max normalisation. Thread count from
RAYON_NUM_THREADS; on cuda TF32 is off (as in medtrain) and each map ends with a synchronisation.
Needs only torch (the models are tests/reference/torch_resnet.py's torchvision-layout ResNet).
    python3 benches/explain_torch.py <slice2d|volume3d> <reps> [cpu|cuda]
"""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from torch_resnet import SmallResNet  # noqa: E402

CLASSES = 2


def model(name):
    if name == "slice2d":
        m = SmallResNet(1, CLASSES, 64, [2, 2, 2, 2], dims=2)  # torchvision resnet18, 1 input channel
        return m, m.layer4, (512, 512)
    if name == "volume3d":
        m = SmallResNet(1, CLASSES, 32, [2, 2, 2], dims=3)
        return m, m.layer3, (128, 128, 128)
    raise SystemExit(f"unknown model {name}")


def grad_cam(net, layer, x, cls):
    store = {}

    def hook(mod, inp, out):
        # The layer's output as a leaf: the layers above run on it, and autograd.grad stops there
        # (backward to the layer only; the frozen layers below record no graph).
        leaf = out.detach().requires_grad_(True)
        store["a"] = leaf
        return leaf

    handle = layer.register_forward_hook(hook)
    logits = net(x)
    handle.remove()
    a = store["a"]
    (g,) = torch.autograd.grad(logits[:, cls].sum(), a)
    w = g.mean(dim=tuple(range(2, g.dim())), keepdim=True)
    cam = torch.relu((w * a).sum(dim=1, keepdim=True))
    mode = "bilinear" if cam.dim() == 4 else "trilinear"
    cam = F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)
    flat = cam.flatten(1)
    lo, hi = flat.min(dim=1, keepdim=True)[0], flat.max(dim=1, keepdim=True)[0]
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(cam)


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "slice2d"
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    threads = int(os.environ.get("RAYON_NUM_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    net, layer, size = model(name)
    net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    n = 1
    for s in size:
        n *= s
    x = ((torch.arange(n, dtype=torch.int64) * 7919 % 1013).float() / 506.5 - 1.0).view(1, 1, *size).to(device)
    x.requires_grad_(False)
    times = []
    for rep in range(reps + 1):
        start = time.perf_counter()
        with torch.enable_grad():
            grad_cam(net, layer, x, 1)
        if device == "cuda":
            torch.cuda.synchronize()
        if rep > 0:
            times.append(time.perf_counter() - start)
    where = torch.cuda.get_device_name() if device == "cuda" else f"cpu, {threads} threads"
    print(f"pytorch {torch.__version__} {name} on {where}: median {statistics.median(times) * 1e3:.1f} ms "
          f"per map over {len(times)} timed maps")


if __name__ == "__main__":
    main()
