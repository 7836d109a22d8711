"""The peer baseline for `medtrain pack --from`: the usual Python way to pull a cohort from a
DICOMweb archive, with dicomweb-client (QIDO-RS search, WADO-RS series retrieval) + pydicom + numpy
+ h5py, the same number of concurrent requests as medtrain. Per CT series: retrieve every object,
order slices along the normal, decode, rescale to HU (padding -> -1024), round and clamp to int16,
write one HDF5 dataset; fsync at the end. Credentials from MEDTRAIN_DICOMWEB_USER/_PASSWORD.
Prints a JSON line with series, bytes and seconds.

Usage: python pacs_dicomweb_client.py BASE_URL OUT.h5 [--concurrency N]
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import requests
from dicomweb_client.api import DICOMwebClient

sys.path.insert(0, os.path.dirname(__file__))
from pack_pydicom import to_volume  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("out")
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    session = requests.Session()
    session.auth = (os.environ["MEDTRAIN_DICOMWEB_USER"], os.environ["MEDTRAIN_DICOMWEB_PASSWORD"])
    client = DICOMwebClient(url=args.url, session=session)
    start = time.perf_counter()
    found = []
    offset = 0
    while True:
        page = client.search_for_series(search_filters={"Modality": "CT"}, limit=100, offset=offset)
        found += [(s["0020000D"]["Value"][0], s["0020000E"]["Value"][0]) for s in page]
        offset += len(page)
        if len(page) < 100:
            break

    def fetch(uids):
        return to_volume(client.retrieve_series(uids[0], uids[1]))

    nbytes = 0
    with ThreadPoolExecutor(args.concurrency) as pool, h5py.File(args.out, "w") as h5:
        for i, volume in enumerate(pool.map(fetch, found)):
            h5.create_dataset(f"volumes/{i:06d}", data=volume)
            nbytes += volume.nbytes
    fd = os.open(args.out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    seconds = time.perf_counter() - start
    print(json.dumps({"series": len(found), "bytes": nbytes, "seconds": seconds}))


if __name__ == "__main__":
    main()
