"""`csst train`: train a teacher or a student."""

import os
import sys

import click

from csst_data.sampling import STRATEGIES
from csst_data.schedules import SCHEDULES
from csst_cli.options import parse_floats, parse_source


@click.command("train")
@click.option("--data", "data", multiple=True,
              help="Training sources: shard sets, mask folders, cityscapes:ROOT:SPLIT, voc:ROOT:SPLIT or "
                   "masks:MASKS:IMAGES (checked against the index). Repeat, or list after one --data.")
@click.argument("more_data", nargs=-1)
@click.option("--index", type=click.Path(exists=True), help="Centroid index of the sources. Default: build one in RUN_DIR/index.zarr.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Run folder: checkpoints, metrics.jsonl.")
@click.option("--val", help="Validation source (a shard set, cityscapes:ROOT:val, ...); its mIoU decides best.pt.")
@click.option("--model", default="fastscnn", show_default=True,
              help="fastscnn, deeplabv3plus-r18, deeplabv3plus-r50, or package.module:factory taking num_classes.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False), help="Local state dict to start from (e.g. a torchvision ResNet).")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--crop", default=768, show_default=True, type=click.IntRange(min=32), help="Full crop size (pixels, square).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Crops per process at the full crop; smaller crops of a fast schedule get larger batches.")
@click.option("--lr", type=float, help="Base learning rate. Default 0.02 from scratch, 0.002 with --init.")
@click.option("--momentum", default=0.9, show_default=True)
@click.option("--weight-decay", default=1e-4, show_default=True)
@click.option("--sampling", type=click.Choice(STRATEGIES), default="centroid", show_default=True,
              help="centroid: N/C crops per class per epoch (CSST); uniform; class-uniform; rare-class (DAFormer).")
@click.option("--schedule", type=click.Choice(SCHEDULES), default="constant", show_default=True,
              help="Crop-size schedule; coarse2fine+ is the paper's fastest.")
@click.option("--sizes", help="Crop sizes of the schedule, comma-separated. Default: 1/2, 3/4, 1 x --crop.")
@click.option("--length", type=click.IntRange(min=1), help="Samples per epoch (all ranks). Default: number of images.")
@click.option("--class-uniform-p", "p", default=0.5, show_default=True, help="Centroid fraction for --sampling class-uniform.")
@click.option("--temperature", default=0.01, show_default=True, help="Temperature for --sampling rare-class.")
@click.option("--source-weights", help="Relative sampling weight per index source, comma-separated (e.g. 1,0.5).")
@click.option("--loss", type=click.Choice(["ohem", "ce"]), default="ohem", show_default=True)
@click.option("--min-kept", default=100_000, show_default=True, help="OHEM: pixels kept at least, per batch.")
@click.option("--pseudo-loss", type=click.Choice(["hard", "soft-topk", "hard+mr"]), default="hard", show_default=True,
              help="Loss on pseudo-labelled samples (paper Table 2).")
@click.option("--mr-weight", default=0.1, show_default=True, help="Weight of the model regulariser for hard+mr.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0), help="DataLoader workers per process.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True, help="Autocast on CUDA.")
@click.option("--val-every", default=1, show_default=True, type=click.IntRange(min=1), help="Validate every N epochs (and at the end).")
@click.option("--val-crop", type=int, help="Sliding-window size for validation on large images (default: whole image).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from last.pt.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--trace", is_flag=True, hidden=True, help="Write per-step sample rows and parameter hashes (tests).")
@click.option("--kill-after-epoch", type=int, hidden=True, help="SIGKILL after this epoch's checkpoint (tests).")
def train(data, more_data, out, sizes, source_weights, no_progress, model, **kw):
    """Train a segmentation model on real (and pseudo) labels with class-balanced crops.

    \b
    csst train --data DATA/labeled --val DATA/val -o runs/teacher
    csst train --data DATA/labeled PSEUDO --index index.zarr --schedule coarse2fine+ -o runs/student

    Under torchrun every process trains on its own slice of each epoch (DDP).
    """
    from csst_train.trainer import train as run

    if ":" in model and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # let --model find the user's local module
    if kw["val"]:
        kw["val"] = parse_source(kw["val"])
    kw["sizes"] = [int(v) for v in parse_floats(sizes, "--sizes")] if sizes else None
    kw["source_weights"] = dict(enumerate(parse_floats(source_weights, "--source-weights", positive=False))) if source_weights else None
    try:
        run(out=out, data=[parse_source(d) for d in data + more_data], model=model, progress=not no_progress,
            log=lambda s: click.echo(s, err=True), **kw)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        raise click.ClickException(str(e))
