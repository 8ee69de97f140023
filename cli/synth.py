"""`csst synth OUT`: write the embedded synthetic street-scene dataset."""

import re
import time

import click

from csst_cli.options import progress_bar, progress_option
from csst_demo.synth import FolderNotEmpty, SynthOptions, write_dataset


def _size(ctx, param, value):
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not m:
        raise click.BadParameter(f"{value!r}: expected HEIGHTxWIDTH, e.g. 256x512")
    h, w = int(m.group(1)), int(m.group(2))
    if h < 16 or w < 16:
        raise click.BadParameter(f"{value!r}: height and width must be at least 16")
    return h, w


@click.command("synth")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False), help="Folder to write the dataset into.")
@click.option("--labeled", default=100, show_default=True, type=click.IntRange(min=0),
              help="Number of labelled training images.")
@click.option("--unlabeled", default=400, show_default=True, type=click.IntRange(min=0),
              help="Number of unlabelled images (their true labels go to OUTPUT/unlabeled-gt).")
@click.option("--val", default=50, show_default=True, type=click.IntRange(min=0),
              help="Number of labelled validation images.")
@click.option("--size", default="256x512", show_default=True, callback=_size,
              help="Image size as HEIGHTxWIDTH.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Random seed; the same seed writes the same bytes.")
@click.option("--layout", default="shards", show_default=True, type=click.Choice(["shards", "cityscapes"]),
              help="shards: csst shard sets; cityscapes: leftImg8bit/ and gtFine/ folders with Cityscapes label ids.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Rendering processes (the output does not depend on it).")
@click.option("--variety", default=0.0, show_default=True, type=click.FloatRange(0, 2),
              help="Per-scene appearance shifts (exposure, contrast, colour cast, haze) of this spread: 1 is "
                   "dusk to glare and fog. Labels do not change; 0 writes the same bytes as before the option.")
@click.option("--force", is_flag=True, help="Write into a non-empty OUTPUT, replacing what an earlier run wrote there.")
@progress_option
def synth(out, labeled, unlabeled, val, size, seed, layout, workers, variety, force, progress):
    """Render the synthetic street-scene dataset into OUTPUT.

    19 classes named like the Cityscapes train ids, with a long-tailed pixel
    distribution. With --layout shards (default) OUTPUT gets labeled/,
    unlabeled/ (images only), unlabeled-gt/ (their true labels) and val/, each
    a shard set with manifest.json. With --layout cityscapes OUTPUT gets the
    Cityscapes folder layout: train (labeled), train_extra (unlabeled, images
    only) and val.
    """
    start = time.perf_counter()
    try:
        with progress_bar("rendering", "img", progress) as bar:
            opts = SynthOptions(labeled, unlabeled, val, size=size, seed=seed, layout=layout, workers=workers,
                                force=force, variety=variety)
            counts = write_dataset(out, opts, progress=bar)
    except FolderNotEmpty:
        raise click.ClickException(f"{out} is not empty; choose an empty folder, or pass --force to replace "
                                   "what an earlier run wrote there")
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    parts = ", ".join(f"{n} {split}" for split, n in counts.items())
    click.echo(f"wrote {parts} images of {size[0]}x{size[1]} to {out} ({layout}) "
               f"in {time.perf_counter() - start:.1f} s")
