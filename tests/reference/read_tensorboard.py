"""Reads a TensorBoard log directory with TensorBoard's own EventAccumulator (the reader behind the
TensorBoard UI, purging included) and prints what it holds as JSON:
{"scalars": {tag: [[step, value], ...]}, "images": {tag: [[step, width, height, png_bytes], ...]},
 "text": {tag: [[step, text], ...]}}.

Usage: read_tensorboard.py LOGDIR
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0, "tensors": 0})
acc.Reload()
tags = acc.Tags()
out = {"scalars": {}, "images": {}, "text": {}}
for tag in tags["scalars"]:
    out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
for tag in tags["images"]:
    out["images"][tag] = [[e.step, e.width, e.height, len(e.encoded_image_string)] for e in acc.Images(tag)]
for tag in tags["tensors"]:
    out["text"][tag] = [
        [e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode()] for e in acc.Tensors(tag)
    ]
print(json.dumps(out))
