"""Reference values for explain: F.interpolate (align_corners=False) up-sampling, 2D bilinear and 3D
trilinear, Grad-CAM / Grad-CAM++ channel weights and the LayerCAM map as pytorch-grad-cam computes
them, on small seeded inputs. Run with /usr/bin/python3 (torch 1.13); writes gradcam_interpolate.json beside itself."""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(8)
out = {"torch": torch.__version__}

x2 = torch.rand(2, 1, 3, 4)
y2 = F.interpolate(x2, size=(7, 5), mode="bilinear", align_corners=False)
out["bilinear"] = {"n": 2, "from": [1, 3, 4], "to": [1, 7, 5], "input": x2.flatten().tolist(),
                   "output": y2.flatten().tolist()}

x3 = torch.rand(1, 1, 2, 3, 2)
y3 = F.interpolate(x3, size=(5, 4, 3), mode="trilinear", align_corners=False)
out["trilinear"] = {"n": 1, "from": [2, 3, 2], "to": [5, 4, 3], "input": x3.flatten().tolist(),
                    "output": y3.flatten().tolist()}

# Down-sampling too (factor < 1), where the source index formula matters most.
x4 = torch.rand(1, 1, 1, 6, 7)
y4 = F.interpolate(x4, size=(1, 4, 3), mode="trilinear", align_corners=False)
out["downsample"] = {"n": 1, "from": [1, 6, 7], "to": [1, 4, 3], "input": x4.flatten().tolist(),
                     "output": y4.flatten().tolist()}

# Channel weights of (N=2, C=3, S=10) activations and gradients.
acts = torch.rand(2, 3, 10)
grads = torch.randn(2, 3, 10)
gradcam = grads.mean(dim=2)
g2, g3 = grads ** 2, grads ** 3
sum_acts = acts.sum(dim=2, keepdim=True)
denom = 2 * g2 + sum_acts * g3
aij = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                  torch.zeros_like(denom))
pp = (aij * torch.relu(grads)).sum(dim=2)
cam = torch.relu((gradcam[:, :, None] * acts).sum(dim=1))
# LayerCAM as pytorch-grad-cam computes it: positive gradients weight each position's activation.
layercam = torch.relu((torch.relu(grads) * acts).sum(dim=1))
out["weights"] = {"n": 2, "c": 3, "s": 10, "acts": acts.flatten().tolist(), "grads": grads.flatten().tolist(),
                  "gradcam": gradcam.flatten().tolist(), "gradcampp": pp.flatten().tolist(),
                  "cam": cam.flatten().tolist(), "layercam": layercam.flatten().tolist()}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gradcam_interpolate.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print(path)
