#!/usr/bin/env python3
"""Reference forward/backward of small 2D and 3D U-Nets in PyTorch, with MONAI's segmentation losses.

The network is medtrain's U-Net layout (src/nn/unet.rs) with the same parameter names: per level a
double convolution (3×3 conv without bias, batch norm, ReLU, twice), 2× max pooling down; up the
decoder, nn.Upsample(scale_factor=2, mode="nearest"), a 3×3 conv-bn-relu, torch.cat([skip, up], 1)
and a double convolution; a 1×1 head with bias. One training-mode forward, MONAI's
DiceCELoss(sigmoid=True) against binary targets, backward.

Writes fixtures/torch_unet2d.{json,bin} and torch_unet3d.{json,bin} (the index of little-endian
f32 tensors: input, targets, every parameter, logits, loss, every gradient, running statistics
after the step) and fixtures/monai_seg_losses.json (DiceLoss, DiceCELoss and torchvision's
sigmoid_focal_loss (its formula) on fixed logits and targets, with their gradients).
    target/peers/bin/python tests/reference/torch_unet.py     (benches/peers-env.sh --torch)
"""
import json
import os

import numpy as np
import torch
import torch.nn as nn
from monai.losses import DiceCELoss, DiceLoss

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
torch.manual_seed(11)


def conv(dims, c_in, c_out, k, bias):
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(c_in, c_out, k, padding=k // 2, bias=bias)


def bn(dims, c):
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(c)


class Double(nn.Module):
    def __init__(self, dims, c_in, c_out):
        super().__init__()
        self.conv1, self.bn1 = conv(dims, c_in, c_out, 3, False), bn(dims, c_out)
        self.conv2, self.bn2 = conv(dims, c_out, c_out, 3, False), bn(dims, c_out)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(x)))


class Up(nn.Module):
    def __init__(self, dims, c_in, c_out):
        super().__init__()
        self.conv, self.bn = conv(dims, c_in, c_out, 3, False), bn(dims, c_out)

    def forward(self, x):
        x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return torch.relu(self.bn(self.conv(x)))


class UNet(nn.Module):
    def __init__(self, dims, in_channels, outputs, widths):
        super().__init__()
        self.dims, self.levels = dims, len(widths)
        c = in_channels
        for level, w in enumerate(widths):
            setattr(self, f"enc{level}", Double(dims, c, w))
            c = w
        for level in reversed(range(len(widths) - 1)):
            w = widths[level]
            setattr(self, f"up{level}", Up(dims, c, w))
            setattr(self, f"dec{level}", Double(dims, 2 * w, w))
            c = w
        self.head = conv(dims, c, outputs, 1, True)

    def forward(self, x):
        pool = nn.functional.max_pool2d if self.dims == 2 else nn.functional.max_pool3d
        skips = []
        for level in range(self.levels):
            if level:
                x = pool(x, 2)
            x = getattr(self, f"enc{level}")(x)
            skips.append(x)
        for level in reversed(range(self.levels - 1)):
            x = getattr(self, f"up{level}")(x)
            x = getattr(self, f"dec{level}")(torch.cat([skips[level], x], 1))
        return self.head(x)


def ordered_params(model):
    """Parameters in medtrain's registration order: encoder levels, then per decoder level up, dec."""
    named = dict(model.named_parameters())
    order = []
    for level in range(model.levels):
        order += [k for k in named if k.startswith(f"enc{level}.")]
    for level in reversed(range(model.levels - 1)):
        order += [k for k in named if k.startswith(f"up{level}.")]
        order += [k for k in named if k.startswith(f"dec{level}.")]
    order += ["head.weight", "head.bias"]
    return [(k, named[k]) for k in order]


def dump(model, x, targets, stem):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.train()
    logits = model(x)
    loss = DiceCELoss(sigmoid=True)(logits, targets)
    loss.backward()
    params = ordered_params(model)
    tensors = [("input", x), ("targets", targets)] + params
    tensors += [("logits", logits), ("loss", loss.reshape(1))]
    tensors += [("grad." + name, p.grad) for name, p in params]
    tensors += [(name, b) for name, b in model.named_buffers() if "running" in name]
    index, blobs, offset = [], [], 0
    for name, t in tensors:
        a = t.detach().to(torch.float32).numpy().astype("<f4").reshape(-1)
        index.append({"name": name, "shape": list(t.shape), "offset": offset, "len": int(a.size)})
        blobs.append(a)
        offset += a.size
    np.concatenate(blobs).tofile(os.path.join(HERE, stem + ".bin"))
    with open(os.path.join(HERE, stem + ".json"), "w") as f:
        json.dump({"torch_version": torch.__version__, "tensors": index}, f, indent=0)
    print("wrote", stem, len(index), "tensors,", offset * 4, "bytes")


def sigmoid_focal_loss(z, t, alpha, gamma):
    """torchvision.ops.sigmoid_focal_loss (reduction="mean"), its code as published (torchvision's
    import pulls in PIL, which this environment does not need otherwise)."""
    p = torch.sigmoid(z)
    ce = nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return (alpha_t * loss).mean()


def losses():
    logits = (torch.randn(2, 1, 4, 5) * 2).double()
    targets = (torch.rand(2, 1, 4, 5) < 0.4).double()
    out = {"logits": logits.reshape(-1).tolist(), "targets": targets.reshape(-1).tolist(), "spatial": 20}
    for name, fn in [
        ("dice", lambda z: DiceLoss(sigmoid=True)(z, targets)),
        ("dice_ce", lambda z: DiceCELoss(sigmoid=True)(z, targets)),
        ("focal", lambda z: sigmoid_focal_loss(z, targets, alpha=0.25, gamma=2.0)),
    ]:
        z = logits.clone().requires_grad_(True)
        loss = fn(z)
        loss.backward()
        out[name] = {"loss": float(loss.detach()), "grad": z.grad.reshape(-1).tolist()}
    import monai

    out["monai_version"] = monai.__version__
    with open(os.path.join(HERE, "monai_seg_losses.json"), "w") as f:
        json.dump(out, f, indent=0)


def main():
    dump(UNet(2, 1, 1, [4, 8, 16]), torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) < 0.3).float(), "torch_unet2d")
    dump(UNet(3, 1, 1, [3, 6]), torch.randn(2, 1, 8, 8, 8), (torch.rand(2, 1, 8, 8, 8) < 0.3).float(), "torch_unet3d")
    losses()


if __name__ == "__main__":
    main()
