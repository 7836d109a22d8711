#!/usr/bin/env python3
"""Reference values for medtrain's CPU layers, losses and optimizers, computed by PyTorch on CPU.

Writes fixtures/torch_layers.json: for each case its inputs, upstream gradient, outputs and gradients
(flat lists, row-major). Run with Debian's torch (`apt-get install python3-torch`):
    /usr/bin/python3 tests/reference/torch_layers.py
The Rust test tests/backend_reference.rs reads the file; CI never needs torch.
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(20261128)
torch.set_default_dtype(torch.float64)  # references in f64; compared against f32 with atol + rtol·|ref|
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "torch_layers.json")
cases = {}


def flat(t):
    return [round(float(v), 9) for v in t.detach().reshape(-1).tolist()]


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_(True)


def record(name, inputs, outputs, upstream=None):
    """inputs/outputs: dicts of tensors; the gradient of every leaf input is stored as d_<name>."""
    case = {k: flat(v) for k, v in inputs.items()}
    case.update({k: flat(v) for k, v in outputs.items()})
    if upstream is not None:
        case["dy"] = flat(upstream)
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor) and v.grad is not None:
            case["d_" + k] = flat(v.grad)
    cases[name] = case


def layer(name, fn, inputs):
    y = fn(**inputs)
    dy = torch.randn_like(y)
    y.backward(dy)
    record(name, inputs, {"y": y}, dy)


layer("conv2d_s2_p1_bias", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
      {"x": leaf(2, 3, 7, 6), "w": leaf(4, 3, 3, 3), "b": leaf(4)})
layer("conv2d_dil2_groups2", lambda x, w: F.conv2d(x, w, None, stride=1, padding=2, dilation=2, groups=2),
      {"x": leaf(2, 4, 6, 6), "w": leaf(6, 2, 3, 3)})
layer("conv3d_s1_p1", lambda x, w, b: F.conv3d(x, w, b, stride=1, padding=1),
      {"x": leaf(2, 2, 4, 5, 3), "w": leaf(3, 2, 3, 3, 3), "b": leaf(3)})
layer("leaky_relu_0.1", lambda x: F.leaky_relu(x, 0.1), {"x": leaf(2, 3, 4)})
layer("relu", lambda x: F.relu(x), {"x": leaf(2, 3, 4)})
layer("maxpool2d_3_2_1", lambda x: F.max_pool2d(x, 3, 2, 1), {"x": leaf(2, 3, 7, 6)})
layer("avgpool3d_2_2_0", lambda x: F.avg_pool3d(x, 2, 2, 0), {"x": leaf(1, 2, 4, 4, 5)})
layer("avgpool2d_3_2_1", lambda x: F.avg_pool2d(x, 3, 2, 1), {"x": leaf(2, 2, 6, 7)})
layer("global_avg_pool", lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1), {"x": leaf(2, 3, 4, 5)})
layer("linear", lambda x, w, b: F.linear(x, w, b), {"x": leaf(3, 7), "w": leaf(4, 7), "b": leaf(4)})

# Batch norm, training mode: outputs, gradients and the updated running statistics.
for name, shape in [("batchnorm2d_train", (3, 4, 5, 2)), ("batchnorm3d_train", (2, 3, 2, 3, 4))]:
    x, g, b = leaf(*shape, scale=2.0), leaf(shape[1]), leaf(shape[1])
    rm, rv = torch.randn(shape[1]), torch.rand(shape[1]) + 0.5
    rm0, rv0 = rm.clone(), rv.clone()
    y = F.batch_norm(x, rm, rv, g, b, training=True, momentum=0.1, eps=1e-5)
    dy = torch.randn_like(y)
    y.backward(dy)
    record(name, {"x": x, "gamma": g, "beta": b, "running_mean_in": rm0, "running_var_in": rv0},
           {"y": y, "running_mean": rm, "running_var": rv}, dy)
x, g, b = leaf(2, 3, 4, 4), leaf(3), leaf(3)
rm, rv = torch.randn(3), torch.rand(3) + 0.5
record("batchnorm2d_eval", {"x": x, "gamma": g, "beta": b, "running_mean": rm, "running_var": rv},
       {"y": F.batch_norm(x, rm, rv, g, b, training=False, eps=1e-5)})

# Losses (mean reductions).
logits = leaf(6, 5, scale=2.0)
target = torch.tensor([0, 4, 2, 2, 1, 3])
weight = torch.rand(5) + 0.5
loss = F.cross_entropy(logits, target, weight=weight, label_smoothing=0.1)
loss.backward()
record("cross_entropy_weighted_smoothed", {"logits": logits, "targets": target.double(), "weights": weight},
       {"loss": loss.reshape(1)})

logits = leaf(4, 3, scale=3.0)
target = (torch.rand(4, 3) > 0.5).double()
mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.float64)
pos_weight = torch.tensor([2.0, 0.5, 1.0])
per = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
loss = (per * mask).sum() / mask.sum()
loss.backward()
record("bce_masked_pos_weight", {"logits": logits, "targets": target, "mask": mask, "pos_weight": pos_weight},
       {"loss": loss.reshape(1)})

for name, fn in [("mse", lambda p, t: F.mse_loss(p, t)), ("huber_1.0", lambda p, t: F.huber_loss(p, t, delta=1.0))]:
    pred, tgt = leaf(8, scale=2.0), torch.randn(8)
    loss = fn(pred, tgt)
    loss.backward()
    record(name, {"pred": pred, "target": tgt}, {"loss": loss.reshape(1)})


def cox_breslow(risk, time, event):
    """Negative partial log-likelihood, Breslow ties, mean over events: the definition, O(N²)."""
    at_risk = (time.unsqueeze(0) >= time.unsqueeze(1)).double()  # [i, j] = t_j ≥ t_i
    log_denominator = torch.log((at_risk * torch.exp(risk).unsqueeze(0)).sum(1))
    return -((risk - log_denominator) * event).sum() / event.sum()


risk = leaf(12)
time = torch.tensor([5.0, 3.0, 3.0, 8.0, 1.0, 3.0, 8.0, 2.0, 6.0, 1.0, 7.0, 4.0])
event = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
loss = cox_breslow(risk, time, event)
loss.backward()
record("cox_breslow", {"risk": risk, "time": time, "event": event}, {"loss": loss.reshape(1)})

# Optimizers: three steps with given gradients, in f32 as training runs.
for name, make in [
    ("sgd_momentum_nesterov_wd", lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("sgd_momentum", lambda p: torch.optim.SGD([p], lr=0.05, momentum=0.8)),
    ("sgd_plain_wd", lambda p: torch.optim.SGD([p], lr=0.1, weight_decay=1e-3)),
    ("adamw", lambda p: torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)),
]:
    p = torch.randn(10, dtype=torch.float32, requires_grad=True)
    p0 = p.detach().clone()
    opt = make(p)
    grads = [torch.randn(10, dtype=torch.float32) for _ in range(3)]
    for g in grads:
        p.grad = g.clone()
        opt.step()
    cases[name] = {"param0": flat(p0), "grads": flat(torch.stack(grads)), "param3": flat(p)}

os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump({"torch_version": torch.__version__, "cases": cases}, f, indent=0)
print(f"wrote {len(cases)} cases to {OUT}")
