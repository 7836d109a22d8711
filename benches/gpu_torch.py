#!/usr/bin/env python3
"""PyTorch eager (cuDNN) peer of `medtrain bench step` on the GPU: the same models, batches, loss and
optimizer, fp32 with TF32 off on both sides. Prints one JSON object on stdout (and writes it to --out).

Models (src/nn/resnet.rs): ResNetConfig::resnet18(1, 2, 64) at 1×224×224, batch 64 and 256 (torchvision
resnet18 topology, 1 input channel, 2 outputs) and ResNetConfig::resnet3d(1, 2, 32) at 1×96×96×96,
batch 8 (stages 32/64/128, two BasicBlocks each). Each case: SGD steps (momentum 0.9, weight decay
1e-4) on cross-entropy, warm-up steps excluded, then timed steps; images/s and
torch.cuda.max_memory_allocated. Self-contained: needs only torch (no torchvision, no repository).
    python3 benches/gpu_torch.py [--steps 20] [--warmup 5] [--out FILE]
"""
import argparse
import json
import sys
import time

CASES = [("resnet18-2d", 64), ("resnet18-2d", 256), ("resnet3d", 8)]
CLASSES = 2


def build(torch, name):
    nn, F = torch.nn, torch.nn.functional

    class BasicBlock(nn.Module):
        """torchvision BasicBlock, 2D or 3D."""

        def __init__(self, c_in, c_out, stride, dims):
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

    class ResNet(nn.Module):
        """Stem conv 7×7/2 + BN + ReLU + max pool 3/2/1, BasicBlock stages, global mean, linear."""

        def __init__(self, in_channels, outputs, widths, blocks, dims):
            super().__init__()
            Conv, Bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
            self.dims = dims
            self.conv1 = Conv(in_channels, widths[0], 7, 2, 3, bias=False)
            self.bn1 = Bn(widths[0])
            layers, c = [], widths[0]
            for i, (w, n) in enumerate(zip(widths, blocks)):
                for b in range(n):
                    layers.append(BasicBlock(c, w, 2 if i > 0 and b == 0 else 1, dims))
                    c = w
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(c, outputs)

        def forward(self, x):
            pool = F.max_pool2d if self.dims == 2 else F.max_pool3d
            x = pool(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
            x = self.layers(x)
            return self.fc(torch.flatten(x.mean(dim=tuple(range(2, x.dim()))), 1))

    if name == "resnet18-2d":
        return ResNet(1, CLASSES, [64, 128, 256, 512], [2, 2, 2, 2], 2), (1, 224, 224)
    if name == "resnet3d":
        return ResNet(1, CLASSES, [32, 64, 128], [2, 2, 2], 3), (1, 96, 96, 96)
    raise ValueError(name)


def run_case(torch, name, batch, steps, warmup):
    F = torch.nn.functional
    dev = torch.device("cuda")
    torch.manual_seed(0)
    net, shape = build(torch, name)
    net = net.to(dev).train()
    x = torch.randn((batch,) + shape, device=dev)
    y = (torch.arange(batch, device=dev) % CLASSES).long()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {
        "model": name,
        "batch": batch,
        "input": list(shape),
        "params": sum(p.numel() for p in net.parameters()),
        "warmup_steps": warmup,
        "timed_steps": steps,
        "seconds": elapsed,
        "step_ms": 1e3 * elapsed / steps,
        "images_per_s": batch * steps / elapsed,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
        "final_loss": float(loss.item()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    result = {"ok": False, "peer": "pytorch eager + cuDNN", "fp32": True, "tf32": False}
    try:
        import torch
    except ImportError as e:
        result["reason"] = f"PyTorch is not installed for {sys.executable}: {e}"
        return finish(result, args.out, 2)
    result.update(torch=torch.__version__, torch_cuda=torch.version.cuda)
    if not torch.cuda.is_available():
        result["reason"] = "torch.cuda.is_available() is False (no GPU, or a CPU-only PyTorch build)"
        return finish(result, args.out, 2)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True  # algorithms chosen once per shape, as medtrain does
    result.update(
        gpu=torch.cuda.get_device_name(0),
        cudnn=torch.backends.cudnn.version(),
        cudnn_benchmark=True,
        cases=[],
    )
    failed = 0
    for name, batch in CASES:
        try:
            result["cases"].append(run_case(torch, name, batch, args.steps, args.warmup))
        except Exception as e:  # an out-of-memory case is recorded and the others still run
            failed += 1
            result["cases"].append({"model": name, "batch": batch, "error": f"{type(e).__name__}: {e}"})
        torch.cuda.empty_cache()
    result["ok"] = failed == 0
    return finish(result, args.out, 0 if failed == 0 else 1)


def finish(result, out, code):
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
