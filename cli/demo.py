"""`csst demo`: the whole self-training pipeline on synthetic data."""

import click


@click.command("demo")
@click.option("-o", "--output", "out", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for every stage's output, commands.sh and report.md (must be empty or new).")
@click.option("--quick", is_flag=True, help="A tiny run (about 2 minutes) for tests and a first look.")
@click.option("--seed", default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace an earlier demo in OUT (only a folder holding commands.sh).")
def demo(out, quick, seed, force):
    """Run synth -> teacher -> label -> index -> student -> eval -> report.

    Each stage is the real `csst` command; they are printed as they run and
    written to OUT/commands.sh. The report (OUT/report.md, with figures) shows
    the class distribution of real and pseudo labels, pseudo-label accuracy,
    teacher vs student per-class IoU and centroid-sampled crops.
    """
    from csst_demo.runner import run_demo

    try:
        report = run_demo(out, quick=quick, seed=seed, force=force, log=lambda s: click.secho(s, fg="cyan", err=True))
    except (FileExistsError, RuntimeError) as e:
        raise click.ClickException(str(e))
    click.echo(f"report: {report}")
