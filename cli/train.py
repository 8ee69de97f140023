"""`csst train`: train a teacher or a student."""

import os
import sys

import click

from csst_data.loader.sampling import STRATEGIES
from csst_data.loader.schedules import SCHEDULES
from csst_cli.options import (SOURCE_HELP, check_images_used, check_writable, folder_options, parse_floats,
                              parse_sources, pop_folder_options, progress_option)
from csst_train.config import TrainConfig

D = TrainConfig  # the defaults, declared once in the library
# Exit status of a run stopped by a signal after writing last.pt (sysexits.h EX_TEMPFAIL: try again).
EXIT_PREEMPTED = 75


@click.command("train", help=f"""Train a segmentation model on real (and pseudo) labels with class-balanced crops.

    --data and --val take SOURCEs: {SOURCE_HELP}. The index must have been
    built from exactly the --data sources (without --index one is built in
    OUTPUT/index.zarr).

    \b
    csst train --data DATA/labeled --val DATA/val -o runs/teacher
    csst train --data DATA/labeled PSEUDO --index index.zarr --schedule coarse2fine+ -o runs/student
    csst train --data cityscapes:/data/cs:train --val cityscapes:/data/cs:val -o runs/cs

    Under torchrun every process trains on its own slice of each epoch (DDP).

    On SIGTERM, SIGINT or SIGUSR1 (a scheduler's preemption) every process
    stops at the next step, last.pt is written, and the exit status is
    {EXIT_PREEMPTED}; `--resume` continues exactly where it stopped.
    """)
@click.option("--data", "data", multiple=True, help="Training SOURCE. Repeat, or list several after one --data.")
@click.argument("more_data", nargs=-1)
@click.option("--val", multiple=True, help="Validation SOURCE (repeatable); its mIoU decides best.pt.")
@folder_options
@click.option("--index", type=click.Path(exists=True), help="Centroid index of the --data sources.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Run folder: checkpoints, metrics.jsonl.")
@click.option("--model", default=D.model, show_default=True,
              help="fastscnn (Fast-SCNN, the paper's real-time student), deeplabv3plus-r18, deeplabv3plus-r50; "
                   "smp:ARCH:ENCODER from segmentation-models-pytorch and timm (pip install 'csst[models]'), e.g. "
                   "smp:DeepLabV3Plus:resnext50_32x4d (the paper's teacher), smp:PSPNet:resnet101, "
                   "smp:Segformer:mit_b5, smp:UPerNet:convnext_base, smp:FPN:tu-hrnet_w48 (tu-: a timm encoder); "
                   "or package.module:factory taking num_classes.")
@click.option("--pretrained", help="smp:... models: encoder weights to fetch, e.g. imagenet (into the torch hub and "
                                   "Hugging Face caches; offline, give a local file with --init).")
@click.option("--init", type=click.Path(exists=True, dir_okay=False),
              help="Local state dict to start from: a csst checkpoint, a torchvision ResNet, an smp or timm state dict "
                   "(whole model or encoder). Tensors that do not fit (another class count) start anew; the log "
                   "says which.")
@click.option("--epochs", default=D.epochs, show_default=True, type=click.IntRange(min=1))
@click.option("--crop", default=D.crop, show_default=True, type=click.IntRange(min=32), help="Full crop size (pixels, square).")
@click.option("--batch-size", default=D.batch_size, show_default=True, type=click.IntRange(min=1),
              help="Crops per process at the full crop; smaller crops of a fast schedule get larger batches.")
@click.option("--lr", type=float, help="Base learning rate. Default 0.02 from scratch, 0.002 with --init.")
@click.option("--momentum", default=D.momentum, show_default=True)
@click.option("--weight-decay", default=D.weight_decay, show_default=True)
@click.option("--sampling", type=click.Choice(STRATEGIES), default=D.sampling, show_default=True,
              help="centroid: N/C crops per class per epoch (CSST); uniform; class-uniform; rare-class (DAFormer).")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=D.schedule, show_default=True,
              help="Crop-size schedule; coarse2fine+ is the paper's fastest.")
@click.option("--sizes", help="Crop sizes of the schedule, comma-separated. Default: 1/2, 3/4, 1 x --crop.")
@click.option("--length", type=click.IntRange(min=1), help="Samples per epoch (all ranks). Default: number of images.")
@click.option("--class-uniform-p", "p", default=D.p, show_default=True, help="Centroid fraction for --sampling class-uniform.")
@click.option("--temperature", default=D.temperature, show_default=True, help="Temperature for --sampling rare-class.")
@click.option("--source-weights", help="Relative sampling weight per index source, comma-separated (e.g. 1,0.5).")
@click.option("--loss", type=click.Choice(["ohem", "ce"]), default=D.loss, show_default=True)
@click.option("--min-kept", default=D.min_kept, show_default=True, help="OHEM: pixels kept at least, per batch.")
@click.option("--pseudo-loss", type=click.Choice(["hard", "soft-topk", "hard+mr", "online"]), default=D.pseudo_loss,
              show_default=True,
              help="Loss on pseudo-labelled samples (paper Table 2). online: no stored pseudo labels; crops of the "
                   "--unlabeled images are labelled by the network's own current predictions (or its mean "
                   "teacher's, --online-teacher ema) where confident (consistency regularisation, Eq. 4).")
@click.option("--unlabeled", multiple=True, help="--pseudo-loss online: unlabelled image SOURCE (repeatable); each "
                                                 "step adds a batch of its crops.")
@click.option("--online-teacher", type=click.Choice(["self", "ema"]), default=D.online_teacher, show_default=True,
              help="--pseudo-loss online: who labels the unlabelled crops.")
@click.option("--online-threshold", default=D.online_threshold, show_default=True, type=click.FloatRange(0, 1),
              help="--pseudo-loss online: least predicted top probability for an unlabelled pixel to count.")
@click.option("--online-weight", default=D.online_weight, show_default=True, help="--pseudo-loss online: weight of the unlabelled loss.")
@click.option("--ema-decay", default=D.ema_decay, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="--online-teacher ema: the mean teacher's decay per step.")
@click.option("--mr-weight", default=D.mr_weight, show_default=True, help="Weight of the model regulariser for hard+mr.")
@click.option("--min-confidence", type=click.FloatRange(0, 1),
              help="Ignore pseudo-label pixels whose stored teacher confidence (top probability) is under this; "
                   "no relabelling (csst label stores each pixel's confidence).")
@click.option("--class-fraction", type=click.FloatRange(0, 1, min_open=True),
              help="Class-balanced thresholds (CBST): per class keep this fraction of its most confident "
                   "pseudo-label pixels, over all pseudo-labelled images; with --min-confidence the higher floor wins.")
@click.option("--workers", default=D.workers, show_default=True, type=click.IntRange(min=0), help="DataLoader workers per process.")
@click.option("--max-bad-samples", default=D.max_bad_samples, show_default=True, type=click.IntRange(min=0),
              help="Unreadable samples to skip (each replaced by the next of the epoch plan, listed in "
                   "OUTPUT/bad_samples.jsonl); 0 stops at the first with its file named.")
@click.option("--seed", default=D.seed, show_default=True)
@click.option("--device", default=D.device, show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default=D.amp, show_default=True, help="Autocast on CUDA.")
@click.option("--val-every", default=D.val_every, show_default=True, type=click.IntRange(min=1), help="Validate every N epochs (and at the end).")
@click.option("--val-crop", type=int, help="Sliding-window size for validation on large images (default: whole image).")
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT from last.pt.")
@click.option("--save-every", default=D.save_every, show_default=True, type=click.IntRange(min=0),
              help="Also write last.pt every N iterations, mid-epoch (0: at the end of each epoch only).")
@click.option("--channels-last", is_flag=True, help="NHWC memory format for the model and its inputs (faster on GPUs).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model: a slow first step, faster after.")
@click.option("--tensorboard", is_flag=True, help="Write scalars (loss, lr, crops/s, data wait, validation IoU) to OUTPUT/tb.")
@progress_option
def train(data, more_data, val, unlabeled, output, sizes, source_weights, model, compile_, progress, **kw):
    from csst_train.trainer import train as run

    if ":" in model and not model.startswith("smp:") and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # let --model find the user's local module
    check_writable(output, "-o/--output", folder=True)
    options = pop_folder_options(kw)
    datasets = parse_sources(data + more_data, options, param="--data", check_images=False)
    val_sets = parse_sources(val, options, param="--val", check_images=False) if val else []
    kw["unlabeled"] = parse_sources(unlabeled, options, role="images", param="--unlabeled") if unlabeled else ()
    check_images_used(options, datasets + val_sets)
    kw["sizes"] = [int(v) for v in parse_floats(sizes, "--sizes")] if sizes else None
    kw["source_weights"] = dict(enumerate(parse_floats(source_weights, "--source-weights", positive=False))) if source_weights else None
    from csst_train.trainer import Preempted

    bar = _EpochBar() if progress else None
    try:
        run(TrainConfig(out=output, data=datasets, val=val_sets, model=model, compile=compile_, **kw),
            log=lambda s: bar.log(s) if bar else click.echo(s, err=True), progress=bar, on_validation=_print_table)
    except Preempted as e:
        if bar:
            bar.close()
        click.echo(f"csst train: {e}", err=True)
        sys.exit(EXIT_PREEMPTED)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    finally:
        if bar:
            bar.close()


class _EpochBar:
    """A rich progress bar per epoch: steps, loss, learning rate, crops/s."""

    def __init__(self):
        self.bar, self.epoch = None, None

    def __call__(self, epoch, epochs, step, steps, info):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self.epoch != epoch:
            self.close()
            self.bar = Progress(TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True,
                                console=Console(stderr=True))
            self.task = self.bar.add_task("train", total=steps, info="")
            self.bar.start()
            self.epoch = epoch
        self.bar.update(self.task, completed=step,
                        info=f"loss {info['loss']:.4f}  lr {info['lr']:.2e}  {info['crops_per_s']:.1f} crops/s  "
                             f"data wait {100 * info['data_wait']:.0f}%")

    def log(self, line):
        self.close()  # the epoch is over: its summary line replaces the bar
        click.echo(line, err=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()
            self.bar, self.epoch = None, None


def _print_table(epoch, result, class_names, last):
    """The full per-class table once, after the last validation (a summary line is logged every epoch)."""
    if not last:
        return
    import numpy as np
    from rich.console import Console

    from csst_cli.tables import iou_table

    Console().print(iou_table([np.nan if v is None else v for v in result["iou"]], class_names,
                              title=f"validation, epoch {epoch + 1}"))
