"""Writes a damaged copy of a shard whose table column claims an extent the file cannot hold.

Usage: damage_shard.py SHARD OUT [COLUMN] [ROWS]

The column (default series/series_key) is replaced by a chunked dataset of ROWS rows (default 2**40)
with no chunk written, so the file stays small while its extent is impossible, as when a damaged
dataspace message claims an ASCII string as a length. A reader that trusts the extent allocates it
(terabytes) and aborts; medtrain must refuse the shard with a clear error. h5py is the independent
writer. This produced fuzz/regressions/hdf5_shard-impossible-table-extent.h5.gz.
"""
import sys

import h5py

src, out = sys.argv[1], sys.argv[2]
column = sys.argv[3] if len(sys.argv) > 3 else "series/series_key"
rows = int(sys.argv[4]) if len(sys.argv) > 4 else 2**40
# A new file with the source's attributes and tables, not its pixels (a small reproducer).
with h5py.File(src, "r") as s, h5py.File(out, "w") as f:
    for name, value in s.attrs.items():
        f.attrs[name] = value
    for table in ("series", "slices"):
        s.copy(s[table], f, name=table)
    f.create_group("volumes")
    dtype = f[column].dtype
    del f[column]
    f.create_dataset(column, shape=(rows,), dtype=dtype, chunks=(1024,), maxshape=(None,))
