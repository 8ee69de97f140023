"""I/O benchmark: csst's label codec and shard store against PNG files read with Pillow.

On label masks from `csst synth` (default 32 of 1024x2048), side by side in one run:

- bytes and decode time per mask: `.npy.zst` (csst_data.store.codecs) vs PNG
  written and read by Pillow with its defaults (what users have today);
- write throughput of csst_data.store.shards.ShardWriter (MB/s, fsync included);
- read throughput (samples/s, image and label decoded) of the shard set,
  sequentially with the official webdataset reader (csst_data.store.shards.iter_samples)
  and with a pread loop over member offsets, vs the same samples as a folder of
  JPEG images and PNG labels read with Pillow. The folder read once more with
  csst's decoders separates the gain of the decoders from that of the storage.

All reads run on a warm page cache; every timing is the best of --repeat passes.

    python benchmarks/io.py --json benchmarks/results/io.json
    python benchmarks/io.py --quick
"""

import os
import sys

# This folder holds scripts named like modules (io.py, index.py): keep it off the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from csst_data.store import codecs, shards  # noqa: E402
from csst_demo import synth


def best_time(fn, repeat):
    """Best wall time of `repeat` calls of fn()."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def decode_each(decode, blobs):
    for blob in blobs:
        decode(blob)


def load_samples(root):
    """[(key, jpg bytes, label bytes, json bytes)] of a shard set, raw."""
    return [(s["__key__"], s["jpg"], s["label.npy.zst"], s["json"]) for s in shards.iter_samples(root, decode=False)]


def write_shards(root, samples, maxcount):
    info = shards.SetInfo(num_classes=synth.NUM_CLASSES, class_names=synth.CLASS_NAMES, producer="benchmarks/io.py")
    with shards.ShardWriter(root, info, maxcount=maxcount) as w:
        for key, jpg, label, meta in samples:
            w.write({"__key__": key, "jpg": jpg, "label.npy.zst": label, "json": meta})


def write_folder(root, samples, pngs):
    """The baseline layout: images/{key}.jpg and labels/{key}.png."""
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "labels"))
    for (key, jpg, _, _), png in zip(samples, pngs):
        with open(os.path.join(root, "images", key + ".jpg"), "wb") as f:
            f.write(jpg)
        with open(os.path.join(root, "labels", key + ".png"), "wb") as f:
            f.write(png)


def read_shards_sequential(root):
    n = 0
    for s in shards.iter_samples(root):
        assert s["jpg"].ndim == 3 and s["label.npy.zst"].ndim == 2
        n += 1
    return n


def read_shards_pread(root):
    """A tight loop: member offsets per shard, os.pread, csst's decoders."""
    reader, n = shards.RangeReader(), 0
    try:
        for path in shards.shard_paths(root):
            for members in shards.group_members(path).values():
                image = codecs.decode_image(reader.read(path, *members["jpg"]))
                label = codecs.decode_label(reader.read(path, *members["label.npy.zst"]))
                assert image.ndim == 3 and label.ndim == 2
                n += 1
    finally:
        reader.close()
    return n


def read_folder_pillow(root, keys):
    from PIL import Image

    for key in keys:
        with Image.open(os.path.join(root, "images", key + ".jpg")) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(os.path.join(root, "labels", key + ".png")) as im:
            label = np.asarray(im)
        assert image.ndim == 3 and label.ndim == 2
    return len(keys)


def read_folder_csst_decoders(root, keys):
    for key in keys:
        with open(os.path.join(root, "images", key + ".jpg"), "rb") as f:
            image = codecs.decode_image(f.read())
        with open(os.path.join(root, "labels", key + ".png"), "rb") as f:
            label = codecs.decode_label_png(f.read())
        assert image.ndim == 3 and label.ndim == 2
    return len(keys)


def tree_bytes(root):
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(root) for n in names)


@click.command()
@click.option("--count", default=32, show_default=True, type=click.IntRange(min=1), help="Number of samples.")
@click.option("--size", default="1024x2048", show_default=True, help="Sample size HEIGHTxWIDTH.")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(min=1), help="Timed passes; best is kept.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Processes for rendering the samples (not timed).")
@click.option("--workdir", default=None, type=click.Path(file_okay=False),
              help="Where to write the temporary data (default: a temporary folder).")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Write the results here.")
@click.option("--quick", is_flag=True, help="Tiny smoke run: 4 samples of 256x512, one pass.")
def main(count, size, repeat, workers, workdir, json_path, quick):
    """Label codec, shard writer and shard reader against PNG files read with Pillow."""
    if quick:
        count, size, repeat = 4, "256x512", 1
    h, w = (int(v) for v in size.lower().split("x"))
    console = Console()
    with tempfile.TemporaryDirectory(dir=workdir, prefix="csst-bench-io-") as tmp:
        t = time.perf_counter()
        synth.write_dataset(os.path.join(tmp, "synth"),
                            synth.SynthOptions(count, 0, 0, size=(h, w), seed=0, workers=workers), progress=True)
        render_s = time.perf_counter() - t
        samples = load_samples(os.path.join(tmp, "synth", "labeled"))
        keys = [s[0] for s in samples]
        masks = [codecs.decode_label(s[2]) for s in samples]
        pngs = [codecs.encode_label_png(m) for m in masks]

        # Label codec: size and decode time per mask.
        zst_bytes = float(np.mean([len(s[2]) for s in samples]))
        png_bytes = float(np.mean([len(p) for p in pngs]))
        for data, mask in zip(pngs, masks):
            assert np.array_equal(codecs.decode_label_png(data), mask)
        # Each mask is dropped after decoding, as a loader does (decode, crop, collate, free), so
        # memory is reused; keeping all of them adds page faults for fresh memory to both codecs,
        # a fixed cost that is reported apart (`*_kept`).
        dec_zst = best_time(lambda: decode_each(codecs.decode_label, [s[2] for s in samples]), repeat) / count
        dec_png = best_time(lambda: decode_each(codecs.decode_label_png, pngs), repeat) / count
        kept_zst = best_time(lambda: [codecs.decode_label(s[2]) for s in samples], repeat) / count
        kept_png = best_time(lambda: [codecs.decode_label_png(p) for p in pngs], repeat) / count

        # Shard writer throughput: fresh folder per pass, fsync and manifest included.
        passes = iter(range(repeat))
        write_s = best_time(lambda: write_shards(os.path.join(tmp, f"write-{next(passes)}"), samples, 16), repeat)
        written = tree_bytes(os.path.join(tmp, "write-0"))
        shard_root = os.path.join(tmp, "write-0")
        folder_root = os.path.join(tmp, "folder")
        write_folder(folder_root, samples, pngs)
        folder_bytes = tree_bytes(folder_root)

        # Read throughput, warm cache: one untimed pass each, then interleaved timed passes.
        readers = {
            "shard_seq": lambda: read_shards_sequential(shard_root),
            "shard_pread": lambda: read_shards_pread(shard_root),
            "folder_pillow": lambda: read_folder_pillow(folder_root, keys),
            "folder_csst_decoders": lambda: read_folder_csst_decoders(folder_root, keys),
        }
        for name, fn in readers.items():
            assert fn() == count, name
        best = {name: float("inf") for name in readers}
        for _ in range(repeat):
            for name, fn in readers.items():
                best[name] = min(best[name], best_time(fn, 1))
        rate = {name: count / t for name, t in best.items()}

    result = {
        "count": count, "height": h, "width": w, "repeat": repeat, "zstd_level": codecs.ZSTD_LEVEL,
        "label_bytes_csst": zst_bytes, "label_bytes_png": png_bytes,
        "label_decode_ms_csst": dec_zst * 1e3, "label_decode_ms_png": dec_png * 1e3,
        "decode_speedup": dec_png / dec_zst, "size_ratio_png_over_csst": png_bytes / zst_bytes,
        "label_decode_ms_csst_kept": kept_zst * 1e3, "label_decode_ms_png_kept": kept_png * 1e3,
        "decode_speedup_kept": kept_png / kept_zst,
        "write_MBps": written / write_s / 1e6,
        "shard_samples_per_s": rate["shard_seq"], "shard_pread_samples_per_s": rate["shard_pread"],
        "folder_samples_per_s": rate["folder_pillow"],
        "folder_csst_decoders_samples_per_s": rate["folder_csst_decoders"],
        "read_speedup": rate["shard_seq"] / rate["folder_pillow"],
        "shard_set_bytes": written, "folder_bytes": folder_bytes,
        "render_s": render_s,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "notes": "warm page cache; best of `repeat` passes; PNG written by Pillow with default options; "
                 "label decode times drop each mask after decoding (the *_kept fields keep them all)",
    }
    result["targets"] = {
        "decode_speedup>=10": result["decode_speedup"] >= 10,
        "size_ratio_png_over_csst>=1": result["size_ratio_png_over_csst"] >= 1.0,
        "shard>=1.5x_folder": result["shard_samples_per_s"] >= 1.5 * result["folder_samples_per_s"],
    }

    table = Table(title=f"csst I/O: {count} samples of {h}x{w} from csst synth (best of {repeat})")
    for col in ("measure", "csst", "baseline (PNG / folder, Pillow)", "ratio", "target"):
        table.add_column(col, justify="right" if col != "measure" else "left")

    def ok(flag):
        return "[green]met" if flag else "[red]missed"

    t = result["targets"]
    table.add_row("label bytes / mask", f"{zst_bytes:,.0f}", f"{png_bytes:,.0f}",
                  f"{result['size_ratio_png_over_csst']:.2f}x smaller", ok(t["size_ratio_png_over_csst>=1"]))
    table.add_row("label decode ms / mask", f"{dec_zst * 1e3:.2f}", f"{dec_png * 1e3:.2f}",
                  f"{result['decode_speedup']:.1f}x faster", ok(t["decode_speedup>=10"]))
    table.add_row("  ... all decoded masks kept in memory", f"{kept_zst * 1e3:.2f}", f"{kept_png * 1e3:.2f}",
                  f"{result['decode_speedup_kept']:.1f}x faster", "")
    table.add_row("read samples/s (webdataset, sequential)", f"{rate['shard_seq']:.1f}",
                  f"{rate['folder_pillow']:.1f}", f"{result['read_speedup']:.2f}x", ok(t["shard>=1.5x_folder"]))
    table.add_row("read samples/s (pread loop)", f"{rate['shard_pread']:.1f}", f"{rate['folder_pillow']:.1f}",
                  f"{rate['shard_pread'] / rate['folder_pillow']:.2f}x", "")
    table.add_row("read samples/s (folder, csst decoders)", "", f"{rate['folder_csst_decoders']:.1f}", "", "")
    table.add_row("shard writer MB/s", f"{result['write_MBps']:.0f}", "", "", "")
    table.add_row("bytes on disk", f"{written:,}", f"{folder_bytes:,}", f"{folder_bytes / written:.2f}x", "")
    console.print(table)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        shards.atomic_write_json(json_path, result)
        console.print(f"wrote {json_path}")
    return result


if __name__ == "__main__":
    main()
