#!/usr/bin/env python3
"""PyTorch side of the checkpoint tests: safetensors state dicts with torchvision names, both ways.

Without arguments, writes the fixtures that tests/checkpoint.rs loads into medtrain (no torch needed there):
  fixtures/torch_ckpt_resnet18w4.safetensors     state dict of a resnet18-topology model (base width 4,
                                                 1 input channel, 2 outputs): random weights, non-trivial
                                                 batch-norm running statistics, num_batches_tracked (I64)
  fixtures/torch_ckpt_resnet18w4_io.safetensors  input (2, 1, 32, 32) and its eval-mode logits
  fixtures/torch_ckpt_stem3.safetensors          a 3-input-channel model (width 2, one block per stage)
  fixtures/torch_ckpt_stem3_io.safetensors       input x (2, 1, 32, 32) and the eval-mode logits of the
                                                 3-channel model on x/3 repeated over 3 channels, which a
                                                 1-channel model with the channel-averaged stem reproduces
    /usr/bin/python3 tests/reference/torch_checkpoint.py

With --check DIR --io FILE, loads DIR/model.safetensors (written by medtrain) into the matching PyTorch
model with load_state_dict(strict=True), runs FILE's `input` in eval mode and compares with its `logits`
(atol 1e-4 + rtol 1e-3); exits 1 on any mismatch. The safetensors format is read and written by hand:
8-byte little-endian header length, JSON header, raw little-endian bytes.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_resnet import SmallResNet  # noqa: E402  (torchvision BasicBlock names and layouts)

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8")}


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, torch tensor); data in the given order, offsets relative to the data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors:
        a = t.detach().cpu().numpy()
        code = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
        raw = a.astype(DTYPES[code]).tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    print("wrote", os.path.relpath(path), offset + len(text) + 8, "bytes")


def read_safetensors(path):
    """Returns ({name: numpy array}, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        a = np.frombuffer(body[begin:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = a.reshape(info["shape"]).copy()
    return tensors, metadata


def randomise(model, generator):
    """Random affine parameters and running statistics, so loading the wrong buffer shows in the logits."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.2, 0.2, generator=generator)
                m.running_mean.normal_(0.0, 0.3, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))


def state_dict_items(model):
    return [(k, v) for k, v in model.state_dict().items()]


def generate():
    g = torch.Generator().manual_seed(20261129)
    torch.manual_seed(20261129)
    meta = {"format": "pytorch", "torch_version": torch.__version__}

    model = SmallResNet(in_channels=1, num_outputs=2, width=4, blocks=[2, 2, 2, 2]).eval()
    randomise(model, g)
    x = torch.randn(2, 1, 32, 32, generator=g)
    with torch.no_grad():
        logits = model(x)
    write_safetensors(os.path.join(HERE, "torch_ckpt_resnet18w4.safetensors"), state_dict_items(model), meta)
    write_safetensors(os.path.join(HERE, "torch_ckpt_resnet18w4_io.safetensors"),
                      [("input", x), ("logits", logits)])

    stem3 = SmallResNet(in_channels=3, num_outputs=2, width=2, blocks=[1, 1, 1, 1]).eval()
    randomise(stem3, g)
    x = torch.randn(2, 1, 32, 32, generator=g)
    with torch.no_grad():
        # conv(x, mean_c w_c) = conv(x/3 repeated over the 3 channels, w).
        logits = stem3((x / 3).repeat(1, 3, 1, 1))
    write_safetensors(os.path.join(HERE, "torch_ckpt_stem3.safetensors"), state_dict_items(stem3), meta)
    write_safetensors(os.path.join(HERE, "torch_ckpt_stem3_io.safetensors"),
                      [("input", x), ("logits", logits)])


def model_from_config(cfg):
    """The PyTorch model of a medtrain ResNetConfig; only torchvision's 2D topology exists here."""
    w = cfg["widths"]
    torchvision_like = (cfg["spatial_dims"] == 2 and cfg["stem_kernel"] == 7 and cfg["stem_stride"] == 2
                        and cfg["stem_pool"] and w == [w[0] * 2**i for i in range(len(w))])
    if not torchvision_like:
        sys.exit(f"config {cfg} is not a torchvision-style 2D ResNet; this script has no model for it")
    return SmallResNet(cfg["in_channels"], cfg["num_outputs"], w[0], cfg["blocks"])


def check(directory, io_path):
    tensors, metadata = read_safetensors(os.path.join(directory, "model.safetensors"))
    cfg = json.loads(metadata["model_config"])
    model = model_from_config(cfg)
    state = {k: torch.from_numpy(v) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    io, _ = read_safetensors(io_path)
    with torch.no_grad():
        logits = model(torch.from_numpy(io["input"])).numpy()
    want = io["logits"]
    err = np.abs(logits - want)
    ok = logits.shape == want.shape and bool(np.all(err <= 1e-4 + 1e-3 * np.abs(logits)))
    print(json.dumps({"tensors": len(tensors), "max_abs_diff": float(err.max()), "ok": ok}))
    if not ok:
        sys.exit(f"logits differ: torch {logits.tolist()} vs medtrain {want.tolist()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", metavar="DIR", help="a medtrain checkpoint directory")
    parser.add_argument("--io", metavar="FILE", help="safetensors with `input` and medtrain's `logits`")
    args = parser.parse_args()
    if args.check:
        if not args.io:
            parser.error("--check needs --io")
        check(args.check, args.io)
    else:
        generate()


if __name__ == "__main__":
    main()
