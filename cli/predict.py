"""`csst predict`: predictions as PNG files (class ids, Cityscapes ids, colours, overlays)."""

import click

from csst_cli.options import (folder_options, library_defaults, parse_floats, parse_size, parse_sources,
                              pop_folder_options, progress_bar, progress_option)

L = library_defaults("csst_train.run_configs", "PredictConfig")


@click.command("predict")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False), help="A csst checkpoint (best.pt / last.pt).")
@click.option("--input", "inputs", multiple=True, required=True,
              help="SOURCE of images (repeatable); a bare folder, glob ('**' allowed) or file holds images.")
@folder_options
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for one PNG per image, {key}.png.")
@click.option("--format", "fmt", type=click.Choice(["ids", "cityscapes", "color", "overlay"]), default=L["fmt"],
              show_default=True,
              help="ids: class ids; cityscapes: Cityscapes label ids for the official evaluator and benchmark server; "
                   "color: a palette image; overlay: the prediction blended over the photo.")
@click.option("--scales", default="1.0", show_default=True, help="Test-time scales, comma-separated (probabilities are averaged).")
@click.option("--flip", is_flag=True, help="Also average the horizontally flipped image.")
@click.option("--crop", help="Sliding-window size N or H,W for images larger than it (default: whole image).")
@click.option("--stride", help="Sliding-window stride N or H,W (default: 2/3 of --crop).")
@click.option("--device", default=L["device"], show_default=True, help="auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK).")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default=L["amp"], show_default=True, help="Autocast dtype on CUDA.")
@click.option("--batch-size", default=L["batch_size"], show_default=True, type=click.IntRange(min=1),
              help="Images per forward pass (images of different sizes go in separate passes).")
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader workers that read and decode images [default: half the CPU cores, at most 8].")
@click.option("--rank", type=click.IntRange(min=0), help="This process's rank (default: torchrun's RANK, else 0).")
@click.option("--world-size", type=click.IntRange(min=1), help="Number of processes (default: torchrun's WORLD_SIZE, else 1).")
@click.option("--force", is_flag=True,
              help="Replace the predictions of an earlier run into OUTPUT with another checkpoint or other "
                   "options (without it such a rerun is refused).")
@progress_option
def predict(checkpoint, inputs, output, fmt, scales, flip, crop, stride, device, amp, batch_size, workers, rank,
            world_size, force, progress, **kw):
    """Write a checkpoint's prediction for every input image as OUTPUT/{key}.png.

    The prediction is the argmax that `csst eval` scores (same --scales,
    --flip, --crop). Rerunning the same command skips the files already
    written; OUTPUT/predict.json records the checkpoint and options, and a
    rerun with others is refused (or, with --force, replaces them). Under torchrun (or --rank/--world-size) each rank predicts its
    share. Unreadable images are listed in OUTPUT/failed.jsonl.

    \b
    csst predict --checkpoint best.pt --input cityscapes:/data/cs:test -o preds --format cityscapes
    csst predict --checkpoint best.pt --input photos/ -o looks --format overlay
    """
    from csst_data.workers import rank_world
    from csst_train.images import list_inputs
    from csst_train.predict import predict as run
    from csst_train.run_configs import PredictConfig

    datasets = parse_sources(inputs, pop_folder_options(kw), role="images", param="--input")
    config = PredictConfig(fmt=fmt, device=device, batch_size=batch_size, workers=workers,
                           scales=parse_floats(scales, "--scales"), flip=flip, crop=parse_size(crop, "--crop"),
                           stride=parse_size(stride, "--stride"), amp=amp, force=force)
    try:
        items = list_inputs(datasets)
        rank, world_size = rank_world(rank, world_size)
        with progress_bar("predicting", "img", progress and rank == 0) as bar:
            s = run(checkpoint, items, output, config, rank=rank, world_size=world_size, progress=bar)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    who = f"rank {s['rank']}/{s['world_size']}: " if s["world_size"] > 1 else ""
    click.echo(f"{who}wrote {s['written']} prediction(s) to {output} ({fmt}), {s['skipped']} already there, "
               f"{s['failed']} failed")
    if s["failed"]:
        raise click.ClickException(f"{s['failed']} image(s) could not be read: see {output}/failed.jsonl")
