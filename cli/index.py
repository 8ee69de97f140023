"""`csst index build|merge|stats`: the centroid index of any segmentation dataset."""

import io
import json
import math
import os

import click
from rich.console import Console
from rich.table import Table

from csst_data.index import CentroidIndex, IndexOptions, build_index, merge_indexes
from csst_data.workers import rank_world
from csst_data.store.shards import ShardError, atomic_write_bytes
from csst_cli.options import (SOURCE_HELP, check_writable, folder_options, parse_sources, pop_folder_options,
                              progress_bar, progress_option)


@click.group("index")
def index():
    """Build, merge and inspect centroid indexes (zarr v3 groups)."""


@index.command("build", help=f"""Index the connected components of every class in SOURCES.

    Each SOURCE is {SOURCE_HELP}. Mask values are class ids (255 = ignore)
    unless the source maps them (presets, spec files, --reduce-zero-label).

    \b
    csst index build DATA/labeled PSEUDO -o index.zarr
    csst index build cityscapes:/data/cityscapes:train -o cs.zarr --workers 4
    csst index build ade20k:/data/ADEChallengeData2016 -o ade.zarr
    csst index build masks/ --images imgs/ --seg-map-suffix _gt.png --num-classes 6 -o i.zarr

    With --rank/--world-size (or torchrun's RANK and WORLD_SIZE) this writes
    OUTPUT's part for one rank, named OUTPUT-stem.part-RRRRR-of-WWWWW.zarr;
    join the parts with `csst index merge`.
    """)
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(), help="Index to write (a folder, e.g. index.zarr).")
@folder_options
@click.option("--connectivity", type=click.Choice(["4", "8"]), default=None,
              help="Pixel connectivity of components [default: 8; an appended index keeps its own].")
@click.option("--min-area", type=click.IntRange(1), default=None, help="Drop components smaller than this [default: 1].")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Processes decoding masks in parallel.")
@click.option("--rank", type=click.IntRange(0), default=None, help="This process's part (default: $RANK).")
@click.option("--world-size", type=click.IntRange(1), default=None, help="Number of parts (default: $WORLD_SIZE).")
@click.option("--append", is_flag=True, help="Add SOURCES to the existing index without recomputing old sources.")
@click.option("--force", is_flag=True, help="Overwrite an existing index.")
@click.option("--check-images", is_flag=True,
              help="Also decode every image once: a corrupt or mis-sized image is found now, not mid-training.")
@click.option("--fingerprint", type=click.Choice(["stat", "content"]), default="stat", show_default=True,
              help="How `train` notices that a source changed since the build. stat: file names, sizes and "
                   "modification times (free; a file rewritten at the same size with its time restored goes "
                   "unseen). content: the sha256 of every file, hashed on --workers threads here and again "
                   "when training starts (reads the whole dataset each time).")
@progress_option
def build(sources, output, connectivity, min_area, workers, rank, world_size, append, force, check_images,
          fingerprint, progress, **kw):
    folders = pop_folder_options(kw)
    datasets = parse_sources(sources, folders)
    try:
        # torchrun's RANK and WORLD_SIZE make a part only when both are set.
        if rank is None and world_size is None and {"RANK", "WORLD_SIZE"} <= os.environ.keys():
            rank, world_size = rank_world()
        options = IndexOptions(num_classes=folders.num_classes, class_names=folders.classes,
                               connectivity=int(connectivity) if connectivity else None, min_area=min_area,
                               workers=workers, check_images=check_images, rank=rank, world_size=world_size,
                               append=append, force=force, fingerprint=fingerprint)
        with progress_bar(f"indexing {os.path.basename(output.rstrip(os.sep))}", "masks", progress) as bar:
            path = build_index(datasets, output, options, progress=bar)
        idx = CentroidIndex.open(path, check_stale=False)
    except (ValueError, ShardError, OSError) as e:
        raise click.ClickException(str(e))
    click.echo(f"wrote {path}: {idx.num_images} images, {idx.num_components} components, "
               f"{idx.num_classes} classes")
    absent = idx.absent_classes()
    if absent:
        click.echo(f"classes without components: {', '.join(idx.class_names[c] for c in absent)}", err=True)


@index.command("merge")
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(), help="Merged index to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing index.")
def merge(parts, output, force):
    """Join the PARTS of a --rank/--world-size build into one index."""
    try:
        path = merge_indexes(list(parts), output, force=force)
        idx = CentroidIndex.open(path, check_stale=False)
    except (ValueError, ShardError, OSError) as e:
        raise click.ClickException(str(e))
    click.echo(f"wrote {path}: {idx.num_images} images, {idx.num_components} components from {len(parts)} parts")


def _plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = summary["classes"]
    names = [c["name"] for c in classes]
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.45 * len(names) + 2), 7), sharex=True)
    for ax, field, title in ((axes[0], "pixel_share", "% of labelled pixels"),
                             (axes[1], "components", "connected components")):
        values = [c[field] * (100 if field == "pixel_share" else 1) for c in classes]
        ax.bar(range(len(names)), values, color="tab:blue")
        ax.set_yscale("log")
        # Whole decades, so that the bars' heights compare honestly.
        positive = [v for v in values if v > 0]
        if positive:
            ax.set_ylim(10 ** math.floor(math.log10(min(positive))), 10 ** math.ceil(math.log10(max(positive)) + 1e-9))
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.set_ylabel(title)
        for i, v in enumerate(values):
            if not v:
                ax.annotate("absent", (i, 1), xycoords=("data", "axes fraction"), ha="center", va="top",
                            rotation=90, color="tab:red", fontsize=8)
    axes[1].set_xticks(range(len(names)))
    axes[1].set_xticklabels(names, rotation=60, ha="right")
    axes[0].set_title(f"{os.path.basename(summary['path'].rstrip(os.sep))}: {summary['num_images']} images, "
                      f"{summary['num_components']} components (log scale)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


@index.command("stats")
@click.argument("index_path", metavar="INDEX", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the statistics as JSON to this file ('-': print them instead of the table).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a bar chart of the class distribution (PNG).")
@click.option("--no-check", is_flag=True, help="Skip the check that the sources are unchanged.")
def stats(index_path, json_path, plot, no_check):
    """Per-class statistics of INDEX: components, images containing the class,
    share of pixels and median component area."""
    for path, name in ((plot, "--plot"), (json_path, "--json")):
        if path and path != "-":
            check_writable(path, name)
    try:
        idx = CentroidIndex.open(index_path, check_stale=not no_check)
        summary = idx.summary()
    except (ValueError, ShardError, OSError) as e:
        raise click.ClickException(str(e))
    if plot:
        _plot(summary, plot)
    if json_path == "-":
        click.echo(json.dumps(summary, indent=1))
        return
    if json_path:
        atomic_write_bytes(json_path, (json.dumps(summary, indent=1) + "\n").encode("utf-8"))
    table = Table(title=f"{index_path}: {summary['num_images']} images, {summary['num_components']} components, "
                        f"connectivity {summary['connectivity']}")
    for col in ("id", "class", "components", "images", "pixels %", "median area"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in summary["classes"]:
        style = "red" if not c["components"] else None
        table.add_row(str(c["id"]), c["name"], str(c["components"]), str(c["images"]),
                      f"{100 * c['pixel_share']:.2f}",
                      "-" if c["median_area"] is None else f"{c['median_area']:.0f}", style=style)
    console = Console()
    console.print(table)
    if summary["absent_classes"]:
        console.print(f"[red]absent classes: {', '.join(summary['absent_classes'])}")
    for path in (plot, json_path):
        if path:
            console.print(f"wrote {path}")
