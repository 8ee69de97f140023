"""Whole-image decodes: do csst's restart markers cost or pay on eval and label's whole decodes?

    python benchmarks/decode.py --json benchmarks/results/decode.json

The same 1024 x 2048 synthetic street scenes, each as a plain JPEG (as a camera
or Pillow writes it, no restart markers) and as csst stores it (transcoded
losslessly to restart markers, the same pixels). Per image, median over
interleaved repeats: one decode call of each (libjpeg-turbo through simplejpeg,
the decoder settings of `codecs.decode_image`), and `jpeg.band_decode` of the
csst JPEG on 2 and 4 threads (bands of MCU rows decoded at once; pixel-equal to
one call). Ratios are against the plain JPEG on one thread.
"""

import sys
import time

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from csst_data import jpeg
from csst_data.store.shards import atomic_write_json
from csst_data.store.codecs import decode_image
from csst_demo import synth


def _median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


@click.command()
@click.option("--images", default=6, show_default=True)
@click.option("--size", default="1024x2048", show_default=True, help="HxW")
@click.option("--repeats", default=15, show_default=True, help="Interleaved decodes per image and way.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Tiny smoke run.")
def main(images, size, repeats, json_path, quick):
    if quick:
        images, size, repeats = 2, "256x512", 3
    h, w = (int(v) for v in size.lower().split("x"))
    ways = {"plain_1t": None, "csst_1t": None, "csst_bands_2t": 2, "csst_bands_4t": 4}
    ms = {k: [] for k in ways}
    for i in range(images):
        image = synth.render_scene(h, w, synth.sample_rng(0, "labeled", i))[0]
        plain, marked = synth.encode_jpeg(image), synth.encode_jpeg(image, restart=True)
        info = jpeg.parse(marked)
        assert np.array_equal(jpeg.band_decode(marked, 4, info), decode_image(marked))  # the same pixels
        fns = {"plain_1t": lambda: decode_image(plain), "csst_1t": lambda: decode_image(marked),
               "csst_bands_2t": lambda: jpeg.band_decode(marked, 2, info),
               "csst_bands_4t": lambda: jpeg.band_decode(marked, 4, info)}
        for fn in fns.values():
            fn()  # warm
        per = {k: [] for k in fns}
        for _ in range(repeats):  # interleaved, so a busy moment hits every way alike
            for k, fn in fns.items():
                per[k].append(_median_ms(fn, 1))
        for k in fns:
            ms[k].append(float(np.median(per[k])))
    mean = {k: float(np.mean(v)) for k, v in ms.items()}
    result = {"images": images, "size": [h, w], "repeats": repeats, "ms_per_image": mean,
              "csst_1t_over_plain_1t": mean["csst_1t"] / mean["plain_1t"],
              "plain_1t_over_bands_2t": mean["plain_1t"] / mean["csst_bands_2t"],
              "plain_1t_over_bands_4t": mean["plain_1t"] / mean["csst_bands_4t"]}
    table = Table(title=f"whole decode of a {h} x {w} JPEG, ms (mean over {images} images of the median)")
    for col in ("way", "ms", "plain 1 thread / this"):
        table.add_column(col, justify="right" if col != "way" else "left")
    for k, v in mean.items():
        table.add_row(k, f"{v:.2f}", f"{mean['plain_1t'] / v:.2f}")
    Console().print(table)
    if json_path:
        atomic_write_json(json_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
