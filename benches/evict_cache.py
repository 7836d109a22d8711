#!/usr/bin/env python3
"""Drops the page-cache pages of files, so the next read comes from the disk.

/proc/sys/vm/drop_caches needs root on the host, not in a container; this does the per-file
equivalent: fsync (dirty pages cannot be dropped) then posix_fadvise(POSIX_FADV_DONTNEED) over the
whole file. Arguments are files or directories (walked). Prints the number of files and bytes.
Usage: benches/evict_cache.py PATH...
"""
import os
import sys


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def files(paths):
    for p in paths:
        if os.path.isdir(p):
            for d, _, names in os.walk(p):
                for n in names:
                    yield os.path.join(d, n)
        elif os.path.exists(p):
            yield p


def main():
    count = total = 0
    for f in files(sys.argv[1:]):
        if os.path.isfile(f) and not os.path.islink(f):
            total += evict(f)
            count += 1
    print(f"evicted {count} files, {total} bytes")


if __name__ == "__main__":
    main()
