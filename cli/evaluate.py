"""`csst eval`: mIoU and per-class IoU of a checkpoint on a labelled source."""

import json
import os

import click

from csst_cli.options import parse_floats, parse_source


@click.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False), help="A csst checkpoint (best.pt / last.pt).")
@click.option("--data", required=True,
              help="Labelled source: a shard set, a mask folder, cityscapes:ROOT[:SPLIT], voc:ROOT[:SPLIT] or masks:MASKS:IMAGES.")
@click.option("--scales", default="1.0", show_default=True, help="Test-time scales, comma-separated (e.g. 0.5,1.0,2.0).")
@click.option("--flip", is_flag=True, help="Average with the horizontally flipped image.")
@click.option("--crop", type=int, help="Sliding-window size for images larger than it (default: whole image).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
def evaluate(checkpoint, data, scales, flip, crop, device, amp, json_path):
    """Evaluate CHECKPOINT on DATA: per-class IoU table and mIoU.

    Under torchrun the images are split across processes and the confusion
    matrix is summed.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from csst_data.shards import atomic_write_json
    from csst_data.sources import iter_source, resolve_source
    from csst_train.checkpoints import model_from_checkpoint
    from csst_train.evaluate import evaluate as run
    from csst_train.metrics import iou_table
    from csst_train.distributed import amp_dtype, setup_distributed

    scale_list = parse_floats(scales, "--scales")
    try:
        rank, world, dev = setup_distributed(device)
        model, ckpt = model_from_checkpoint(checkpoint, dev)
        spec = resolve_source(parse_source(data))
        with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=True, disable=rank != 0) as bar:
            task = bar.add_task("eval", total=None)
            result = run(model, iter_source(spec, images=True, labels=True), ckpt["num_classes"], dev,
                         scales=scale_list, flip=flip, crop=crop, amp_dtype=amp_dtype(amp, dev),
                         rank=rank, world_size=world, progress=lambda: bar.advance(task))
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e))
    if rank != 0:
        return
    names = ckpt["class_names"]
    import numpy as np

    Console().print(iou_table([np.nan if v is None else v for v in result["iou"]], names,
                              title=f"{os.path.basename(checkpoint)} on {data}"))
    miou = result["miou"]  # None: no labelled pixel at all
    click.echo(f"mIoU {100 * miou:.2f} over {result['images'] * world} images" if miou is not None
               else f"mIoU n/a: no labelled pixels in {result['images'] * world} images of {data}")
    if json_path:
        atomic_write_json(json_path, {
            "checkpoint": os.path.abspath(checkpoint), "data": spec, "miou": miou,
            "iou": dict(zip(names, result["iou"])), "scales": list(scale_list), "flip": flip,
            "images": result["images"] * world, "confusion": result["confusion"].tolist(),
        })
