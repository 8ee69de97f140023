"""`csst label`: write pseudo-label shards with a trained teacher (paper Sec. 3.1)."""

import sys

import click

from csst_cli.options import (folder_options, library_defaults, parse_floats, parse_size, parse_sources,
                              pop_folder_options, progress_bar, progress_option)

# The library's defaults, declared once in csst_train.run_configs.LabelConfig (torch-free).
L = library_defaults("csst_train.run_configs", "LabelConfig")


@click.command("label")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="Teacher checkpoint (a `csst train` best.pt / last.pt).")
@click.option("--input", "inputs", multiple=True,
              help="SOURCE of images to label (repeatable); a bare folder, glob ('**' allowed) or file holds images.")
@folder_options
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), help="Output shard set: a folder, or an s3://, gs:// or az:// URL (written through a local staging folder, $CSST_STAGING). A rerun resumes it.")
@click.option("--device", default=L["device"], show_default=True, help="auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK).")
@click.option("--batch-size", default=L["batch_size"], show_default=True, type=click.IntRange(min=1), help="Images per forward pass (images of different sizes go in separate passes).")
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader workers that read and decode images [default: half the CPU cores, at most 8].")
@click.option("--shard-size", default=L["shard_size"], show_default=True, type=click.IntRange(min=1), help="Samples per shard.")
@click.option("--scales", default="1.0", show_default=True, help="Test-time scales, comma-separated (probabilities are averaged).")
@click.option("--flip", is_flag=True, help="Also average the horizontally flipped image.")
@click.option("--crop", help="Sliding-window size N or H,W for images larger than it (default: whole image).")
@click.option("--stride", help="Sliding-window stride N or H,W (default: 2/3 of --crop).")
@click.option("--topk", default=L["topk"], show_default=True, type=click.IntRange(min=0), help="Also store the top-K classes and probabilities per pixel (soft labels); 0 = off.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), help="Pixels whose top probability is below this become 255 (ignore).")
@click.option("--confidence/--no-confidence", default=L["confidence"], show_default=True,
              help="Store each pixel's top probability (confidence.npy.zst; up to about 0.75 bytes per pixel for an "
                   "unsure teacher, less the surer it is), so that "
                   "`csst train --min-confidence/--class-fraction` can choose the threshold without relabelling.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default=L["amp"], show_default=True, help="Autocast dtype on CUDA.")
@click.option("--rank", type=click.IntRange(min=0), help="This process's rank (default: torchrun's RANK, else 0).")
@click.option("--world-size", type=click.IntRange(min=1), help="Number of processes (default: torchrun's WORLD_SIZE, else 1).")
@click.option("--keep-bytes", is_flag=True, help="Store the original image bytes (no restart-marker JPEGs).")
@click.option("--quality", default=L["quality"], show_default=True, type=click.IntRange(1, 100),
              help="JPEG quality for PNG inputs.")
@click.option("--lossless", is_flag=True, help="Keep PNG inputs as PNG.")
@click.option("--max-failures", default=0, show_default=True, type=click.IntRange(min=0), help="Unreadable images allowed before the exit status is non-zero.")
@click.option("--merge", "merge_dir", type=click.Path(exists=True, file_okay=False), help="Only merge the per-rank manifests of a finished multi-rank run in this folder into manifest.json.")
@progress_option
def label(checkpoint, inputs, out_dir, device, batch_size, workers, shard_size, scales, flip,
          crop, stride, topk, min_confidence, confidence, amp, rank, world_size, keep_bytes, quality, lossless, max_failures,
          merge_dir, progress, **kw):
    """Label unlabelled images with a teacher and write a pseudo-label shard set.

    Each --input is a SOURCE as for the other commands (a shard set, a spec
    file, PRESET:ROOT[:SPLIT], e.g. cityscapes:/data/cs:train_extra), and a bare
    folder, glob or image file is a folder of images (keys: their paths below it).

    Each sample stores the image, the hard label (argmax, label.npy.zst),
    optional top-k soft labels and a JSON summary. JPEG images are stored as
    JPEGs with restart markers, transcoded losslessly (the same pixels), so the
    loader decodes only the window a crop needs; PNG images are encoded as such
    JPEGs at --quality (or kept with --lossless); --keep-bytes stores every
    image's original bytes. Rerunning
    the same command resumes a killed run. Unreadable images are skipped and
    listed in OUT/failed.jsonl. Under torchrun (or --rank/--world-size) each
    rank labels its own share; the last one to finish writes manifest.json.

    \b
    csst label --checkpoint runs/teacher/best.pt --input DATA/unlabeled -o PSEUDO
    csst label --checkpoint best.pt --input cityscapes:/data/cs:train_extra -o PSEUDO
    csst label --merge PSEUDO
    """
    if merge_dir:
        _merge(merge_dir)
        return
    if not checkpoint or not out_dir or not inputs:
        raise click.UsageError("give --checkpoint, -o/--output and at least one --input (or --merge DIR)")
    from csst_train.images import list_inputs
    from csst_train.run_configs import LabelConfig

    datasets = parse_sources(inputs, pop_folder_options(kw), role="images", param="--input")
    try:
        config = LabelConfig(device=device, batch_size=batch_size, workers=workers, shard_size=shard_size,
                             scales=parse_floats(scales, "--scales"), flip=flip, crop=parse_size(crop, "--crop"),
                             stride=parse_size(stride, "--stride"), topk=topk, min_confidence=min_confidence,
                             confidence=confidence, amp=amp, inputs=list(inputs), keep_bytes=keep_bytes,
                             quality=quality, lossless=lossless)
        s = _run(checkpoint, list_inputs(datasets), out_dir, config, rank, world_size, progress)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    _report(s, out_dir, max_failures)


def _merge(merge_dir):
    from csst_data.runs.shardrun import merge_ranks

    try:
        path = merge_ranks(merge_dir)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    click.echo(f"merged: {path}")


def _run(checkpoint, items, out_dir, config, rank, world_size, progress):
    from csst_data.workers import rank_world
    from csst_train.label import label

    rank, world_size = rank_world(rank, world_size)
    with progress_bar("labelling", "img", progress and rank == 0) as bar:
        return label(checkpoint, items, out_dir, config, rank=rank, world_size=world_size, progress=bar)


def _report(s, out_dir, max_failures):
    rate = s["labelled"] / s["seconds"] if s["seconds"] > 0 else 0.0
    who = f"rank {s['rank']}/{s['world_size']}: " if s["world_size"] > 1 else ""
    click.echo(f"{who}labelled {s['labelled']} image(s) ({rate:.1f} images/s), {s['skipped']} already stored, "
               f"{s['failed']} failed; {s['shards']} shard(s) in {out_dir}")
    if s["world_size"] > 1:
        click.echo(f"merged: {s['manifest']}" if s["merged"] else "waiting for other ranks; the last one merges "
                   f"(or run `csst label --merge {out_dir}`)")
    if s["failed"]:
        from csst_data.runs.shardrun import failures_path

        click.echo(f"{s['failed']} image(s) could not be read: see {failures_path(out_dir, s['rank'], s['world_size'])}",
                   err=True)
        if s["failed"] > max_failures:
            sys.exit(1)
