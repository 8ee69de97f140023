"""`csst eval`: mIoU and per-class IoU of a checkpoint on labelled sources."""

import os

import click

from csst_cli.options import (SOURCE_HELP, check_writable, folder_options, parse_floats, parse_sources,
                              pop_folder_options, progress_bar, progress_option)


@click.command("eval", help=f"""Evaluate CHECKPOINT on the --data SOURCEs: per-class IoU table and mIoU.

    Each SOURCE is {SOURCE_HELP}; several are evaluated as one set.

    \b
    csst eval --checkpoint runs/teacher/best.pt --data DATA/val
    csst eval --checkpoint best.pt --data cityscapes:/data/cs:val --scales 0.75,1,1.25 --flip --json val.json

    Under torchrun the images are split across processes and the confusion
    matrix is summed.
    """)
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False), help="A csst checkpoint (best.pt / last.pt).")
@click.option("--data", required=True, multiple=True, help="Labelled SOURCE (repeatable).")
@folder_options
@click.option("--scales", default="1.0", show_default=True, help="Test-time scales, comma-separated (e.g. 0.5,1.0,2.0).")
@click.option("--flip", is_flag=True, help="Average with the horizontally flipped image.")
@click.option("--crop", type=int, help="Sliding-window size for images larger than it (default: whole image).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@progress_option
def evaluate(checkpoint, data, scales, flip, crop, device, amp, json_path, progress, **kw):
    import numpy as np
    from rich.console import Console

    from csst_data.store.shards import atomic_write_json
    from csst_train.checkpoints import checkpoint_stats, model_from_checkpoint
    from csst_train.distributed import amp_dtype, setup_distributed
    from csst_train.evaluate import EvalOptions, check_classes
    from csst_train.evaluate import evaluate as run
    from csst_cli.tables import iou_table

    scale_list = parse_floats(scales, "--scales")
    if json_path:
        check_writable(json_path, "--json")  # before the evaluation, not after it
    datasets = parse_sources(data, pop_folder_options(kw), param="--data")
    try:
        rank, world, dev = setup_distributed(device)
        model, ckpt = model_from_checkpoint(checkpoint, dev)
        for ds in datasets:
            check_classes(ds, ckpt["num_classes"], ckpt["class_names"], checkpoint)
        samples = (s for ds in datasets for s in ds.iter(images=True, labels=True))
        with progress_bar("evaluating", "img", progress and rank == 0) as bar:
            done = 0

            def advance():
                nonlocal done
                done += 1
                bar(done, None)

            options = EvalOptions(scales=tuple(scale_list), flip=flip, crop=crop, amp_dtype=amp_dtype(amp, dev),
                                  rank=rank, world_size=world, stats=checkpoint_stats(ckpt))
            result = run(model, samples, ckpt["num_classes"], dev, options, progress=advance)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e))
    if rank != 0:
        return
    names = ckpt["class_names"]
    what = ", ".join(data)
    Console().print(iou_table([np.nan if v is None else v for v in result["iou"]], names,
                              title=f"{os.path.basename(checkpoint)} on {what}"))
    miou = result["miou"]  # None: no labelled pixel at all
    click.echo(f"mIoU {100 * miou:.2f} over {result['images'] * world} images" if miou is not None
               else f"mIoU n/a: no labelled pixels in {result['images'] * world} images of {what}")
    if json_path:
        atomic_write_json(json_path, {
            "checkpoint": os.path.abspath(checkpoint), "data": [ds.name for ds in datasets], "miou": miou,
            "iou": dict(zip(names, result["iou"])), "scales": list(scale_list), "flip": flip,
            "images": result["images"] * world, "confusion": result["confusion"].tolist(),
        })
