"""Which object-store client csst uses: obstore against fsspec's s3fs, measured.

Ranged GETs of a shard sample's size (600 KB) at random offsets of a 64 MB
object in SeaweedFS on 127.0.0.1, from one thread and from eight (the loader's
prefetch runs eight). Not part of `make bench`: it needs s3fs, which csst does
not depend on (`pip install s3fs`).

    python benchmarks/objectstore_clients.py
"""

import concurrent.futures as cf
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from servers import ACCESS_KEY, BUCKET, SECRET_KEY, Seaweed  # noqa: E402

SIZE, COUNT = 600_000, 400


def main():
    import obstore
    import s3fs
    from obstore.store import from_url

    srv = Seaweed(tempfile.mkdtemp(prefix="csst-clients-"))
    try:
        os.environ.update(srv.env())
        store = from_url(f"s3://{BUCKET}", client_options={"allow_http": True})
        blob = np.random.default_rng(0).integers(0, 255, 64 << 20, dtype=np.uint8).tobytes()
        obstore.put(store, "big.tar", blob)
        starts = np.random.default_rng(1).integers(0, len(blob) - SIZE, COUNT)
        fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=srv.endpoint)
        clients = {
            "obstore": lambda s: len(obstore.get_range(store, "big.tar", start=int(s), length=SIZE)),
            "s3fs": lambda s: len(fs.cat_file(f"{BUCKET}/big.tar", start=int(s), end=int(s) + SIZE)),
        }
        for name, get in clients.items():
            get(starts[0])  # connect
            for threads in (1, 8):
                t = time.perf_counter()
                with cf.ThreadPoolExecutor(threads) as ex:
                    n = sum(ex.map(get, starts))
                dt = time.perf_counter() - t
                print(f"{name:8s} {threads} thread(s): {COUNT / dt:7.1f} GETs/s {n / dt / 1e6:7.1f} MB/s")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
