"""Loader benchmark: csst's crop streaming against a folder-of-files loader.

Side by side in one run, on synthetic 1024x2048 street scenes rendered as a
user has them (a folder of JPEG images and PNG labels, and the Cityscapes
layout of PNG images) and packed with `csst pack`:

- crops/s and pixels/s of `csst_data.loader.CropLoader` on the packed shards
  (centroid sampling, random access, only the restart intervals of a crop's
  window decoded, with DCT downscaling where the window allows, window-only
  crop + the paper's augmentations) at each default crop size of a 768 full
  crop, with 0, 1 and 2 workers; the mean window decode per crop;
- the same loader on the Cityscapes-layout PNG files and on the JPEG folder
  (no restart markers: whole-image decodes);
- the same for the loader users have today: a torch map-style dataset over a
  folder of JPEG images and PNG labels, decoded by Pillow, with the same
  augmentations done the usual way (as NVIDIA semantic-segmentation's
  RandomSizeAndCrop and torchvision's references do): scale the whole image,
  then crop, flip, colour jitter (ImageEnhance), Gaussian blur (ImageFilter).
  A crop-only variant (no augmentation at all) is reported for reference;
- class coverage of one epoch: for `centroid` and `uniform`, the fraction of
  crops that contain at least one pixel of each class (min over the classes
  present in the data).

- `csst pack`: images/s and the size of the restart-marker JPEGs against the
  original JPEGs.

    python benchmarks/loader.py --json benchmarks/results/loader.json
"""

import io
import os
import sys
import tempfile
import time

import click
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from rich.console import Console
from rich.table import Table

from csst_data import bench
from csst_demo import synth
from csst_data.index import CentroidIndex, build_index
from csst_data.loader.schedules import batch_for_crop, default_sizes
from csst_data.datasets import FolderOptions, parse_source
from csst_data.runs.pack import PackOptions, pack

FULL_CROP = 768
BASE_BATCH = 4


class FolderDataset:
    """The common baseline: whole-file Pillow decode, whole-image scaling, then crop."""

    def __init__(self, pairs, size, augment=True, seed=0):
        self.pairs, self.size, self.augment, self.seed = pairs, size, augment, seed

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        import torch

        rng = np.random.default_rng([self.seed, i])
        image_path, label_path = self.pairs[i % len(self.pairs)]
        image = Image.open(image_path).convert("RGB")
        label = Image.open(label_path)
        s = self.size
        if self.augment:
            scale = rng.uniform(0.5, 2.0)
            w, h = image.size
            nw, nh = int(w * scale + 0.5), int(h * scale + 0.5)
            image, label = image.resize((nw, nh), Image.BILINEAR), label.resize((nw, nh), Image.NEAREST)
        w, h = image.size
        if w < s or h < s:  # pad
            pw, ph = max(w, s), max(h, s)
            canvas, lab = Image.new("RGB", (pw, ph), (124, 116, 104)), Image.new("L", (pw, ph), 255)
            canvas.paste(image, (0, 0))
            lab.paste(label, (0, 0))
            image, label, w, h = canvas, lab, pw, ph
        x0, y0 = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        image, label = image.crop((x0, y0, x0 + s, y0 + s)), label.crop((x0, y0, x0 + s, y0 + s))
        if self.augment:
            if rng.random() < 0.5:
                image, label = image.transpose(Image.FLIP_LEFT_RIGHT), label.transpose(Image.FLIP_LEFT_RIGHT)
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                image = enhance(image).enhance(rng.uniform(0.9, 1.1))
            if rng.random() < 0.5:
                image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.15, 1.15)))
        return (torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1),
                torch.from_numpy(np.asarray(label).astype(np.int64)))


def _render(task):
    """One synthetic scene as a user has it: JPEG bytes (as cameras and Pillow write them) and a PNG label."""
    i, size = task
    image, label = synth.render_scene(size[0], size[1], synth.sample_rng(0, "labeled", i))
    label = np.where(label >= synth.NUM_CLASSES, 255, label).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(label, mode="L").save(buf, format="PNG")
    return synth.sample_key("labeled", i), synth.encode_jpeg(image), buf.getvalue()


def write_data(work, count, size, cs_count):
    """-> dict of indexes, folders and packing figures (see the module docstring)."""
    import multiprocessing as mp

    folder = os.path.join(work, "folder")
    os.makedirs(folder)
    keys = []
    with mp.get_context("spawn").Pool(2) as pool:
        for key, jpg, png in pool.imap(_render, [(i, size) for i in range(count)]):
            keys.append(key)
            with open(os.path.join(folder, key + ".jpg"), "wb") as f:
                f.write(jpg)
            with open(os.path.join(folder, key + ".png"), "wb") as f:
                f.write(png)
    files = parse_source(folder, FolderOptions(img_suffix=".jpg", seg_map_suffix=".png", num_classes=synth.NUM_CLASSES))
    # Compile the numba transcoder before timing (a fresh checkout has no cache yet); pack's
    # workers fork from this process and inherit it. pack_images_per_s is the steady rate.
    from csst_data.jpeg.lossless import transcode

    with open(os.path.join(folder, keys[0] + ".jpg"), "rb") as f:
        transcode(f.read())
    t = time.perf_counter()
    summary = pack([files], os.path.join(work, "packed"), PackOptions(workers=2))
    pack_s = time.perf_counter() - t
    cs = os.path.join(work, "cityscapes")
    synth.write_dataset(cs,
                        synth.SynthOptions(labeled=cs_count, unlabeled=0, val=0, size=size, seed=0, layout="cityscapes",
                                           workers=2))
    t = time.perf_counter()
    cs_summary = pack([f"cityscapes:{cs}:train"], os.path.join(work, "cs-packed"), PackOptions(workers=2))
    cs_pack_s = time.perf_counter() - t
    cs_files = parse_source(f"cityscapes:{cs}:train").samples()
    out = {"pairs": [(os.path.join(folder, k + ".jpg"), os.path.join(folder, k + ".png")) for k in keys],
           "cs_pairs": [(os.path.join(cs, i), os.path.join(cs, lab))
                        for i, lab in zip(cs_files["image_path"], cs_files["label_path"])],
           "pack_images_per_s": count / pack_s,
           "pack_png_images_per_s": cs_count / cs_pack_s,
           "splice_bytes_ratio": summary["images_out_bytes"] / summary["images_in_bytes"],
           "cityscapes_png_bytes_ratio": cs_summary["images_out_bytes"] / cs_summary["images_in_bytes"]}
    for name, sources in (("packed", [os.path.join(work, "packed")]), ("files", [files]),
                          ("cs_png", [f"cityscapes:{cs}:train"]), ("cs_packed", [os.path.join(work, "cs-packed")])):
        path = os.path.join(work, f"{name}.zarr")
        build_index(sources, path)
        out[name] = CentroidIndex.open(path)
    return out


def decode_ms(index, size, samples):
    """(mean ms decoding the image window one crop needs, that over the window's area share of a whole
    decode of the same images at the same scale), over one epoch plan's first crops."""
    split = bench.crop_time_split(index, size, samples)
    return split["image_decode_ms"], split["decode_over_area_floor"]


# Every timed pass holds the same number of batches (`samples` crops at the full crop, proportionally
# more at smaller crops, whose batches are larger) and is timed from its first batch on
# (bench.steady_throughput), as an epoch of many batches runs: worker start-up is not charged.
def crops_for(size, samples):
    return samples * batch_for_crop(FULL_CROP, BASE_BATCH, size) // BASE_BATCH


def time_csst(index, size, workers, samples):
    return bench.loader_throughput(index, size, batch_for_crop(FULL_CROP, BASE_BATCH, size), workers,
                                   crops_for(size, samples))["crops_per_s"]


def time_folder(pairs, size, workers, samples, augment=True):
    import torch

    n = crops_for(size, samples)
    ds = FolderDataset([pairs[i % len(pairs)] for i in range(n)], size, augment)
    batch = batch_for_crop(FULL_CROP, BASE_BATCH, size)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                     generator=torch.Generator().manual_seed(0))
    return bench.steady_throughput(dl, lambda b: len(b[1]))[0]


def coverage(index, strategy, samples, num_classes):
    c = bench.class_coverage(index, strategy, samples, FULL_CROP, workers=2)
    return np.array(list(c["coverage"].values())), c["min_coverage"]


@click.command()
@click.option("--images", default=64, show_default=True, help="Synthetic 1024x2048 images (JPEG folder).")
@click.option("--cityscapes-images", default=32, show_default=True, help="Synthetic 1024x2048 images (Cityscapes PNGs).")
@click.option("--samples", default=96, show_default=True,
              help="Crops per timed pass at the full crop (smaller crops: as many batches, so more crops).")
@click.option("--coverage-samples", default=1900, show_default=True, help="Crops per epoch for class coverage (100 per class).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Tiny smoke run (small images, few samples).")
def main(images, cityscapes_images, samples, coverage_samples, json_path, quick):
    import torch

    torch.set_num_threads(1)
    size = (1024, 2048)
    if quick:
        images, cityscapes_images, samples, coverage_samples, size = 6, 4, 12, 38, (256, 512)
    console = Console()
    with tempfile.TemporaryDirectory() as work:
        d = write_data(work, images, size, cityscapes_images)
        index, pairs = d["packed"], d["pairs"]
        sizes = default_sizes(FULL_CROP)
        rows, by_size, decode_by_size, floor_by_size = [], {}, {}, {}
        for s in sizes:
            for w in (0, 1, 2):
                c = time_csst(index, s, w, samples)
                f = time_folder(pairs, s, w, samples)
                rows.append((s, w, c, f))
                console.print(f"crop {s}, {w} workers: csst {c:.1f} crops/s, folder {f:.1f} crops/s")
            by_size[str(s)] = next(r[2] for r in rows if r[0] == s and r[1] == 2)
            decode_by_size[str(s)], floor_by_size[str(s)] = decode_ms(index, s, samples)
        crop_only = time_folder(pairs, FULL_CROP, 2, samples, augment=False)
        # The same data through csst without packing: whole-image decodes of the JPEG files and the PNGs.
        files_768 = time_csst(d["files"], FULL_CROP, 2, samples)
        cs_png_768 = time_csst(d["cs_png"], FULL_CROP, 2, samples)
        cs_folder_768 = time_folder(d["cs_pairs"], FULL_CROP, 2, samples)
        cs_packed_768 = time_csst(d["cs_packed"], FULL_CROP, 2, samples)
        console.print(f"crop {FULL_CROP}, 2 workers: csst on the JPEG files {files_768:.1f}; Cityscapes PNGs: "
                      f"folder loader {cs_folder_768:.1f}, csst on the files {cs_png_768:.1f}, csst packed "
                      f"{cs_packed_768:.1f} crops/s")
        cov_c, min_c = coverage(index, "centroid", coverage_samples, synth.NUM_CLASSES)
        cov_u, min_u = coverage(index, "uniform", coverage_samples, synth.NUM_CLASSES)

    table = Table(title=f"loader: {images} synthetic {size[0]}x{size[1]} images, full crop {FULL_CROP}")
    for col in ("crop", "workers", "csst crops/s", "csst Mpx/s", "folder crops/s", "speedup"):
        table.add_column(col, justify="right")
    for s, w, c, f in rows:
        table.add_row(str(s), str(w), f"{c:.1f}", f"{c * s * s / 1e6:.1f}", f"{f:.1f}", f"{c / f:.2f}x")
    console.print(table)
    cov = Table(title="class coverage of one epoch (fraction of crops containing the class)")
    cov.add_column("class")
    cov.add_column("centroid", justify="right")
    cov.add_column("uniform", justify="right")
    for name, a, b in zip(synth.CLASS_NAMES, cov_c, cov_u):
        cov.add_row(name, f"{a:.3f}", f"{b:.3f}")
    console.print(cov)

    full = next(r for r in rows if r[0] == FULL_CROP and r[1] == 2)
    result = {
        "device": "cpu", "cpu_threads": torch.get_num_threads(), "images": images, "image_size": list(size),
        "full_crop": FULL_CROP, "sizes": sizes,
        "csst_crops_per_s": full[2], "folder_crops_per_s": full[3], "speedup_vs_folder": full[2] / full[3],
        "folder_crop_only_crops_per_s": crop_only,
        "crops_per_s_by_size": by_size,
        "pixels_per_s_by_size": {k: v * int(k) ** 2 for k, v in by_size.items()},
        "small_over_full": by_size[str(sizes[0])] / by_size[str(FULL_CROP)],
        "all": [{"crop": s, "workers": w, "csst_crops_per_s": c, "folder_crops_per_s": f} for s, w, c, f in rows],
        "decode_ms_by_size": decode_by_size,
        "decode_over_area_floor": floor_by_size,
        "csst_files_crops_per_s": files_768,
        # The Cityscapes PNGs as users read them today (the folder loader), and csst reading the same files.
        "cityscapes_png_crops_per_s": cs_folder_768, "csst_cityscapes_png_crops_per_s": cs_png_768,
        "cityscapes_packed_crops_per_s": cs_packed_768, "packed_over_cityscapes_png": cs_packed_768 / cs_folder_768,
        "packed_over_csst_cityscapes_png": cs_packed_768 / cs_png_768,
        "packed_over_files": by_size[str(FULL_CROP)] / files_768,
        "splice_bytes_ratio": d["splice_bytes_ratio"], "cityscapes_png_bytes_ratio": d["cityscapes_png_bytes_ratio"],
        "pack_images_per_s": d["pack_images_per_s"], "pack_png_images_per_s": d["pack_png_images_per_s"],
        "min_class_coverage_centroid": min_c, "min_class_coverage_uniform": min_u,
        "coverage_ratio": min_c / max(min_u, 1e-9),
        "class_coverage_centroid": dict(zip(synth.CLASS_NAMES, cov_c.tolist())),
        "class_coverage_uniform": dict(zip(synth.CLASS_NAMES, cov_u.tolist())),
    }
    C = synth.NUM_CLASSES
    result["targets"] = {
        "speedup_vs_folder>=4": result["speedup_vs_folder"] >= 4,
        "small_over_full>=3": result["small_over_full"] >= 3,
        "packed_over_cityscapes_png>=8": result["packed_over_cityscapes_png"] >= 8,
        "splice_bytes_ratio<=1.03": result["splice_bytes_ratio"] <= 1.03,
        "min_coverage_centroid>=0.8/C": min_c >= 0.8 / C,
        "min_coverage_centroid>=5x_uniform": min_c >= 5 * min_u,
    }
    console.print(result["targets"])
    if json_path:
        from csst_data.store.shards import atomic_write_json

        atomic_write_json(json_path, result)


if __name__ == "__main__":
    sys.exit(main())
