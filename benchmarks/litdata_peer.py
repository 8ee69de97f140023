"""The peer of benchmarks/objectstore.py: LitData reading the same samples from the same S3 server.

What a LitData user writes to train on crops from object storage (LitData is
Lightning AI's streaming format; installed by csst's `bench` extra, never by the
core):

- `litdata.optimize` packs each sample's bytes (the JPEG and csst's label
  member, unchanged) into chunks of LitData's default size (64 MB), which are
  uploaded to the bucket;
- a map-style torch Dataset asks a `litdata.StreamingDataset` over the s3:// URL
  for the samples of csst's epoch plan, in the plan's order, decodes each image
  and label whole and cuts the crop csst cuts (centred on the plan's centroid),
  in DataLoader workers.

LitData reads a sample asked for by index in one of two ways, both measured:
"ranged" (`ds[i]`, its default for random access: one ranged GET of the
sample's bytes, nothing cached) and "chunks" (`ds[i:i + 1]`: the sample's whole
chunk is downloaded into the local cache, and later samples of that chunk are
read from disk: what streaming over chunks does).

Bytes fetched are counted where botocore reads response bodies, in this process
(LitData's S3 clients are its own, so csst's request counters do not see them).
"""

import contextlib
import os
import time

import numpy as np

try:
    import litdata
    from litdata.streaming import downloader as _downloader
except ImportError:  # the benchmark reports the peer as skipped, with this reason
    litdata = None
else:
    # LitData downloads chunks through obstore when it is installed (csst installs it), but builds its
    # S3Store without allow_http, so against the loopback server's http:// endpoint every chunk GET
    # fails ("builder error"). Its boto3 path, LitData's own as well, works, and botocore is where
    # counted_bytes counts.
    _downloader._OBSTORE_AVAILABLE = False

MISSING = "litdata is not installed (pip install -e '.[bench]')"
MODES = ("ranged", "chunks")


def write_chunks(local: str, out: str) -> dict:
    """Pack (key, jpg, label) of the shard set `local` (members' bytes unchanged, in key order) into
    LitData chunks in `out`; returns {key: item position} as written (read back, not assumed)."""
    from csst_data.store.shards import iter_samples

    items = [{"key": s["__key__"], "jpg": s["jpg"], "label": s["label.npy.zst"]}
             for s in sorted(iter_samples(local, decode=False), key=lambda s: s["__key__"])]
    litdata.optimize(fn=_identity, inputs=items, output_dir=out, chunk_bytes="64MB", num_workers=1,
                     verbose=False, mode="overwrite")
    written = litdata.StreamingDataset(out)
    return {written[i]["key"]: i for i in range(len(written))}


def _identity(item):
    return item


class PlanCrops:
    """Map-style dataset: item j is the crop of the plan's j-th sample, read through LitData."""

    def __init__(self, url: str, cache: str, mode: str, positions: np.ndarray, centres: np.ndarray,
                 crop: int) -> None:
        self.url, self.cache, self.mode = url, cache, mode
        self.positions, self.centres, self.crop = positions, centres, crop
        self.ds = None  # opened in each worker

    def __len__(self) -> int:
        return len(self.positions)

    def read(self, j: int) -> dict:
        if self.ds is None:
            self.ds = litdata.StreamingDataset(self.url, cache_dir=self.cache)
        p = int(self.positions[j])
        return self.ds[p] if self.mode == "ranged" else self.ds[p:p + 1][0]

    def __getitem__(self, j):
        import simplejpeg
        import torch

        from csst_data.store.codecs import decode_label

        item = self.read(j)
        image = simplejpeg.decode_jpeg(item["jpg"])
        label = decode_label(item["label"])
        h, w = label.shape
        cy, cx = self.centres[j]
        cy, cx = (h / 2, w / 2) if np.isnan(cy) else (cy, cx)
        y = int(np.clip(cy - self.crop / 2, 0, max(h - self.crop, 0)))
        x = int(np.clip(cx - self.crop / 2, 0, max(w - self.crop, 0)))
        win = (slice(y, y + self.crop), slice(x, x + self.crop))
        return torch.from_numpy(np.ascontiguousarray(image[win])), torch.from_numpy(np.ascontiguousarray(label[win]))


@contextlib.contextmanager
def counted_bytes():
    """Yields a dict whose "bytes" grows by every response-body byte botocore reads in this process."""
    from botocore.response import StreamingBody

    count, read = {"bytes": 0}, StreamingBody.read

    def counting(self, amt=None):
        data = read(self, amt)
        count["bytes"] += len(data)
        return data

    StreamingBody.read = counting
    try:
        yield count
    finally:
        StreamingBody.read = read


def plan_crops(index, url: str, cache: str, mode: str, rows, centres, crop: int, positions: dict) -> PlanCrops:
    """The samples at index `rows` as a PlanCrops over the LitData copy at `url`."""
    return PlanCrops(url, cache, mode, np.array([positions[index.images["key"][r]] for r in rows]), centres, crop)


def fetched_reading(crops: PlanCrops) -> int:
    """Bytes fetched to read every sample of `crops` once, in order, in this process."""
    with counted_bytes() as fetched:
        for j in range(len(crops)):
            crops.read(j)
    return fetched["bytes"]


def run(index, url: str, positions: dict, work: str, crop: int, batch: int, workers: int, samples: int) -> dict:
    """Both modes on the plan csst's loader runs (epoch 0, seed 0, centroid sampling, `samples`
    crops) over the LitData copy at `url` ({key: item} from write_chunks): crops/s of a first pass
    with an empty cache, timed from the first request (downloads included), of a later pass (timed
    as csst's loader is: from the first batch), and bytes fetched per sample (counted in this
    process over the first min(samples, 64) samples)."""
    import torch

    from csst_data import bench
    from csst_data.loader.sampling import epoch_plan

    plan = epoch_plan(index, 0, 0, strategy="centroid", length=samples)
    centres = np.stack([plan["cy"], plan["cx"]], 1)
    out = {"reader": "litdata " + litdata.__version__, "chunk_bytes": 64 << 20}
    for mode in MODES:
        cache = os.path.join(work, f"litdata-cache-{mode}")
        crops = plan_crops(index, url, cache, mode, plan["image"], centres, crop, positions)

        def loader():
            return torch.utils.data.DataLoader(crops, batch_size=batch, num_workers=workers)

        t, n = time.perf_counter(), 0
        for _, label in loader():
            n += len(label)
        first = n / (time.perf_counter() - t)
        later, _, _ = bench.steady_throughput(loader(), lambda b: len(b[1]))
        counted = min(samples, 64)
        sub = plan_crops(index, url, os.path.join(work, f"litdata-count-{mode}"), mode, plan["image"][:counted],
                         centres[:counted], crop, positions)
        out[mode] = {"crops_per_s_first_pass": first, "crops_per_s": later,
                     "bytes_per_sample": fetched_reading(sub) / counted}
    return out


def rows_bytes(index, url: str, positions: dict, work: str, rows) -> dict:
    """{mode: bytes} LitData fetches to read the samples at index `rows` of the copy at `url`
    ({key: item} from write_chunks), each mode from an empty cache, counted in this process."""
    return {mode: fetched_reading(plan_crops(index, url, os.path.join(work, f"litdata-rows-{mode}"), mode, rows,
                                             np.zeros((len(rows), 2)), 1, positions))
            for mode in MODES}
