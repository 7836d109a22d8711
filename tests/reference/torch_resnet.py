#!/usr/bin/env python3
"""Reference forward/backward of a small 2D ResNet (torchvision BasicBlock layout and names) in PyTorch.

Writes fixtures/torch_resnet_small.{json,bin} (2D) and torch_resnet3d_small.{json,bin} (3D): the index (name, shape, offset) of little-endian f32
tensors: input, targets, every parameter, then logits, loss, every gradient (grad.<name>) and the
running statistics after one training-mode forward. Also writes fixtures/torchvision_resnet18_names.json
(state-dict names and shapes of torchvision.models.resnet18) so the Rust names can be checked.
    /usr/bin/python3 tests/reference/torch_resnet.py
"""
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
torch.manual_seed(7)


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock, same attribute names; 2D or 3D."""

    def __init__(self, c_in, c_out, stride, dims=2):
        super().__init__()
        Conv, Bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv1 = Conv(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = Bn(c_out)
        self.conv2 = Conv(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = Bn(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(Conv(c_in, c_out, 1, stride, bias=False), Bn(c_out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class SmallResNet(nn.Module):
    """torchvision.models.ResNet topology with configurable width, input channels and blocks."""

    def __init__(self, in_channels, num_outputs, width, blocks, dims=2):
        super().__init__()
        Conv, Bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.dims, self.stages = dims, len(blocks)
        self.conv1 = Conv(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = Bn(width)
        widths = [width * 2**i for i in range(len(blocks))]
        c = width
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = []
            for b in range(n):
                layers.append(BasicBlock(c, w, 2 if i > 0 and b == 0 else 1, dims))
                c = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.fc = nn.Linear(c, num_outputs)

    def forward(self, x):
        pool = F.max_pool2d if self.dims == 2 else F.max_pool3d
        x = pool(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(x.mean(dim=tuple(range(2, x.dim()))), 1))


def randomise_batchnorm(model):
    """Non-trivial affine parameters, so their gradients are exercised."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def dump(model, x, targets, stem):
    """One training-mode forward + cross-entropy backward, written as stem.{json,bin}."""
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, targets)
    loss.backward()
    tensors = [("input", x), ("targets", targets.float())]
    params = dict(model.named_parameters())
    tensors += [(name, p) for name, p in params.items()]
    tensors += [("logits", logits), ("loss", loss.reshape(1))]
    tensors += [("grad." + name, p.grad) for name, p in params.items()]
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


def main():
    model = SmallResNet(in_channels=1, num_outputs=3, width=4, blocks=[1, 1, 1, 1])
    randomise_batchnorm(model)
    dump(model, torch.randn(2, 1, 32, 32), torch.tensor([2, 0]), "torch_resnet_small")

    model3d = SmallResNet(in_channels=1, num_outputs=2, width=2, blocks=[1, 1, 1], dims=3)
    randomise_batchnorm(model3d)
    dump(model3d, torch.randn(3, 1, 16, 16, 16), torch.tensor([1, 0, 1]), "torch_resnet3d_small")

    import torchvision  # only for the name list

    sd = torchvision.models.resnet18().state_dict()
    names = [{"name": k, "shape": list(v.shape)} for k, v in sd.items() if "num_batches_tracked" not in k]
    with open(os.path.join(HERE, "torchvision_resnet18_names.json"), "w") as f:
        json.dump({"torchvision_version": torchvision.__version__, "state_dict": names}, f, indent=0)


if __name__ == "__main__":
    main()
