"""matplotlib's 256-entry colour maps as 8-bit RGB, the reference of src/explain/colormap.rs.

Usage: colormaps.py          prints JSON {name: [[r, g, b], ...256]} (the test compares)
       colormaps.py --rust   prints the Rust tables (how src/explain/colormap.rs was written)
Each entry is round(255 * c) of matplotlib's colormap at index i (cmap(i) for i in 0..255).
"""
import json
import sys

import matplotlib

NAMES = ["viridis", "inferno", "jet"]


def table(name):
    cmap = matplotlib.colormaps[name].resampled(256)
    return [[int(round(255 * c)) for c in cmap(i)[:3]] for i in range(256)]


if "--rust" in sys.argv:
    for name in NAMES:
        rows = table(name)
        print(f"/// matplotlib {matplotlib.__version__} `{name}`, 256 entries (tests/reference/colormaps.py).")
        print(f"pub const {name.upper()}: [[u8; 3]; 256] = [")
        for i in range(0, 256, 8):
            print("    " + " ".join(f"[{r}, {g}, {b}]," for r, g, b in rows[i : i + 8]))
        print("];")
        print()
else:
    # Values between entries, at and near the ends, as float32 like the overlay's map values.
    import numpy as np

    values = np.array([0.0, 0.001, 0.1, 0.25, 0.5, 0.5019608, 0.75, 0.999, 0.9999, 1.0], dtype=np.float32)
    samples = {
        name: [[float(v)] + [int(round(255 * c)) for c in matplotlib.colormaps[name](v)[:3]] for v in values]
        for name in NAMES
    }
    print(json.dumps({"tables": {name: table(name) for name in NAMES}, "samples": samples}))
