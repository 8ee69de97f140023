"""`csst index build|merge|stats`: the centroid index of any segmentation dataset."""

import io
import json
import math
import os

import click
from rich.console import Console
from rich.table import Table

from csst_data.index import CentroidIndex, build_index, merge_indexes
from csst_data.shards import ShardError, atomic_write_bytes


@click.group("index")
def index():
    """Build, merge and inspect centroid indexes (zarr v3 groups)."""


def _class_names(path):
    """Class names from a file: a JSON list, or one name per line."""
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise click.ClickException(f"{path}: not a valid JSON list ({e})")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not all(isinstance(n, str) for n in names):
        raise click.ClickException(f"{path}: class names must be strings")
    return names


def _env_int(name):
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise click.ClickException(f"environment variable {name}={value!r} is not an integer")


@index.command("build")
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Index to write (a folder, e.g. index.zarr).")
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="Image folder paired by file stem with the mask PNGs of each SOURCES folder/glob.")
@click.option("--cityscapes", "cityscapes", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A Cityscapes root (leftImg8bit/ + gtFine/); label ids are mapped to the 19 train ids. Repeatable.")
@click.option("--voc", "voc", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A VOC-style root (ImageSets/Segmentation, SegmentationClass, JPEGImages). Repeatable.")
@click.option("--split", default="train", show_default=True, help="Split of --cityscapes / --voc roots.")
@click.option("--num-classes", type=click.IntRange(1, 255),
              help="Number of classes; taken from the manifest for shard sets, required for file sources.")
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False),
              help="File of class names: a JSON list or one name per line.")
@click.option("--connectivity", type=click.Choice(["4", "8"]), default=None,
              help="Pixel connectivity of components (default 8; an appended index keeps its own).")
@click.option("--min-area", type=click.IntRange(1), default=None, help="Drop components smaller than this (default 1).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Processes decoding masks in parallel.")
@click.option("--rank", type=click.IntRange(0), default=None, help="This process's part (default: $RANK).")
@click.option("--world-size", type=click.IntRange(1), default=None, help="Number of parts (default: $WORLD_SIZE).")
@click.option("--append", is_flag=True, help="Add SOURCES to the existing index without recomputing old sources.")
@click.option("--rebuild", is_flag=True, help="Overwrite an existing index.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def build(sources, output, images, cityscapes, voc, split, num_classes, class_names, connectivity, min_area,
          workers, rank, world_size, append, rebuild, progress):
    """Index the connected components of every class in SOURCES.

    Each SOURCE is a csst shard set (a folder with manifest.json) or a folder
    or glob of mask PNGs (mode L, or palette PNGs whose indices are class ids;
    255 is ignore). With --rank/--world-size (or torchrun's RANK and
    WORLD_SIZE) this writes OUTPUT's part for one rank, named
    OUTPUT-stem.part-RRRRR-of-WWWWW.zarr; join the parts with `csst index merge`.
    """
    specs = []
    for s in sources:
        if images is not None and not os.path.isfile(os.path.join(s, "manifest.json")):
            specs.append({"kind": "masks", "path": s, "images": images})
        else:
            specs.append(s)
    if images is not None and all(isinstance(s, str) for s in specs):
        raise click.ClickException("--images pairs mask folders with images; no SOURCE is a mask folder")
    specs += [{"kind": "cityscapes", "path": r, "split": split} for r in cityscapes]
    specs += [{"kind": "voc", "path": r, "split": split} for r in voc]
    if not specs:
        raise click.ClickException("give at least one SOURCE, --cityscapes ROOT or --voc ROOT")
    if rank is None and world_size is None:
        rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
        if (rank is None) != (world_size is None):
            rank = world_size = None
    try:
        path = build_index(specs, output, num_classes=num_classes, class_names=_class_names(class_names),
                           connectivity=int(connectivity) if connectivity else None, min_area=min_area,
                           workers=workers, rank=rank, world_size=world_size, append=append, rebuild=rebuild,
                           progress=progress)
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
@click.option("--rebuild", is_flag=True, help="Overwrite an existing index.")
def merge(parts, output, rebuild):
    """Join the PARTS of a --rank/--world-size build into one index."""
    try:
        path = merge_indexes(list(parts), output, rebuild=rebuild)
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
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a bar chart of the class distribution (PNG).")
@click.option("--no-check", is_flag=True, help="Skip the check that the sources are unchanged.")
def stats(index_path, as_json, plot, no_check):
    """Per-class statistics of INDEX: components, images containing the class,
    share of pixels and median component area."""
    try:
        idx = CentroidIndex.open(index_path, check_stale=not no_check)
        summary = idx.summary()
    except (ValueError, ShardError, OSError) as e:
        raise click.ClickException(str(e))
    if plot:
        _plot(summary, plot)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
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
    if plot:
        console.print(f"wrote {plot}")
