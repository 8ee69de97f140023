"""`csst pack`: any source csst reads -> a shard set ready for fast training."""

import sys

import click

from csst_cli.options import (SOURCE_HELP, folder_options, library_defaults, parse_sources, pop_folder_options,
                              progress_bar, progress_option)

# The library's defaults, declared once in csst_data.runs.pack.PackOptions (torch-free).
P = library_defaults("csst_data.runs.pack", "PackOptions")


@click.command("pack", help=f"""Pack SOURCES into the csst shard set OUTPUT, ready for fast training.

    Each SOURCE is {SOURCE_HELP}. Labels are stored as class ids
    (.label.npy.zst, 255 = ignore). JPEG images are transcoded losslessly to
    JPEGs with restart markers (the same pixels), so the loader decodes only the
    window a crop needs; PNG images are encoded as such JPEGs at --quality, or
    kept with --lossless. Rerunning the same command resumes a killed run;
    unreadable samples are listed in OUTPUT/failed.jsonl and the rest packed.
    Under torchrun (or --rank/--world-size) each rank packs its share of the keys.

    \b
    csst pack cityscapes:/data/cityscapes:train -o cs-train --workers 8
    csst pack ade20k:/data/ADEChallengeData2016 -o ade-train
    csst pack cityscapes:/data/cityscapes:val -o s3://bucket/cs-val
    """)
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Shard set to write: a folder, or an s3://, gs:// or az:// URL (written through a local staging folder, $CSST_STAGING). A rerun resumes it.")
@folder_options
@click.option("--quality", default=P["quality"], show_default=True, type=click.IntRange(1, 100),
              help="JPEG quality for images that are not JPEGs (PNG).")
@click.option("--lossless", is_flag=True, help="Keep PNG images as PNG (no window decoding for them).")
@click.option("--shard-size", default=P["shard_size"], show_default=True, type=click.IntRange(min=1), help="Samples per shard.")
@click.option("--workers", default=P["workers"], show_default=True, type=click.IntRange(min=1),
              help="Processes reading, transcoding and encoding samples.")
@click.option("--rank", type=click.IntRange(min=0), help="This process's rank (default: torchrun's RANK, else 0).")
@click.option("--world-size", type=click.IntRange(min=1), help="Number of processes (default: torchrun's WORLD_SIZE, else 1).")
@click.option("--max-failures", default=0, show_default=True, type=click.IntRange(min=0),
              help="Unreadable samples allowed before the exit status is non-zero.")
@progress_option
def pack(sources, output, quality, lossless, shard_size, workers, rank, world_size, max_failures, progress, **kw):
    from csst_data.runs.pack import PackOptions
    from csst_data.runs.pack import pack as run
    from csst_data.workers import rank_world

    folders = pop_folder_options(kw)
    datasets = parse_sources(sources, folders)
    options = PackOptions(quality=quality, lossless=lossless, shard_size=shard_size, workers=workers,
                          num_classes=folders.num_classes, class_names=folders.classes)
    try:
        rank, world_size = rank_world(rank, world_size)
        with progress_bar("packing", "samples", progress and not rank) as bar:
            s = run(datasets, output, options, rank=rank, world_size=world_size, progress=bar)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    rate = s["packed"] / s["seconds"] if s["seconds"] > 0 else 0.0
    ratio = s["images_out_bytes"] / s["images_in_bytes"] if s["images_in_bytes"] else float("nan")
    who = f"rank {s['rank']}/{s['world_size']}: " if s["world_size"] > 1 else ""
    click.echo(f"{who}packed {s['packed']} sample(s) ({rate:.1f}/s; images {s['transcoded']} transcoded, "
               f"{s['encoded']} encoded, {s['kept']} kept; {ratio:.3f} x the input image bytes), "
               f"{s['skipped']} already stored, {s['failed']} failed; {s['shards']} shard(s) in {output}")
    if s["world_size"] > 1 and not s["merged"]:
        click.echo("waiting for other ranks; the last one writes manifest.json")
    if s["failed"]:
        from csst_data.runs.shardrun import failures_path

        click.echo(f"{s['failed']} sample(s) could not be read: see {failures_path(output, s['rank'], s['world_size'])}",
                   err=True)
        if s["failed"] > max_failures:
            sys.exit(1)
