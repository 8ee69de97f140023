"""`csst verify DIR`: check a shard set against its manifest."""

import os
import sys

import click
from rich.console import Console
from rich.table import Table

from csst_cli.options import progress_bar, progress_option
from csst_data.store.manifest import ShardError, read_manifest
from csst_data.store.verify import verify_shards


@click.command("verify")
@click.argument("directory")
@progress_option
def verify(directory, progress):
    """Verify the shard set in DIRECTORY (a folder, or an s3://, gs://, az:// or https:// URL).

    Recomputes each shard's sha256 and sample count against manifest.json,
    decodes every label, and reports missing or unlisted shards. Exits with
    status 1 if any shard fails.
    """
    from csst_data.store import storage
    from csst_data.runs.shardrun import unfinished_run

    if not storage.is_url(directory):
        if not os.path.isdir(directory):
            raise click.ClickException(f"{directory}: no such folder")
        problem = unfinished_run(directory)
        if problem:
            raise click.ClickException(problem)
    try:
        total = len(read_manifest(directory)["shards"])
        done = []
        with progress_bar("verifying", "shards", progress) as bar:
            rows = verify_shards(directory, progress=lambda name: (done.append(name), bar(len(done), total)))
    except (ShardError, storage.StorageError, OSError) as e:
        raise click.ClickException(str(e))
    table = Table(title=f"shard set {directory}")
    for col in ("shard", "samples", "status"):
        table.add_column(col)
    failed = [r for r in rows if r["problems"]]
    for r in rows:
        status = "[red]" + "; ".join(r["problems"]) if r["problems"] else ("[yellow]" + r["note"] if r.get("note") else "[green]ok")
        table.add_row(r["name"], "" if r["samples"] is None else str(r["samples"]), status)
    Console().print(table)
    if failed:
        for r in failed:
            click.echo(f"error: {directory}/{r['name']}: {'; '.join(r['problems'])}", err=True)
        sys.exit(1)
    shards = [r for r in rows if r["samples"] is not None]  # not leftover temporary files
    click.echo(f"ok: {len(shards)} shard(s), {sum(r['samples'] for r in shards)} samples verified")
