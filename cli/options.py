"""Options shared by several commands: list values, the source grammar, progress bars."""

import contextlib
import json
import os

import click


def parse_floats(text, name, positive=True):
    """'0.5,1.0,2.0' -> (0.5, 1.0, 2.0); a click error naming the option otherwise."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=name) from None
    if not values or (positive and min(values) <= 0):
        raise click.BadParameter(f"expected {'positive ' if positive else ''}numbers, got {text!r}", param_hint=name)
    return values


def parse_size(text, name):
    """'512' or '512,1024' -> (h, w); None stays None."""
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected N or H,W, got {text!r}", param_hint=name) from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise click.BadParameter(f"expected N or H,W of positive integers, got {text!r}", param_hint=name)
    return (parts[0], parts[-1])


def library_defaults(module, config):
    """{field: default} of a library options dataclass (PackOptions, LabelConfig, PredictConfig),
    so a command shows the library's defaults. The modules holding them import no torch."""
    import dataclasses
    import importlib

    cls = getattr(importlib.import_module(module), config)
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


# -- the one source grammar ----------------------------------------------------
SOURCE_HELP = ("a csst shard set (a folder, or its s3://, gs://, az:// or https:// URL), a dataset spec file "
               "(.json/.toml), a mask folder (with --images), "
               "or PRESET:ROOT[:SPLIT] (cityscapes, voc, ade20k, coco-stuff, loveda, camvid, bdd100k, mapillary, mapillary-v2)")


def _class_names(path):
    """Class names from a file: a JSON list, or one name per line."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise click.BadParameter(f"{path}: {e.strerror}", param_hint="--class-names") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise click.BadParameter(f"{path}: not a valid JSON list ({e})", param_hint="--class-names") from None
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names or not all(isinstance(n, str) for n in names):
        raise click.BadParameter(f"{path}: expected a list of class names", param_hint="--class-names")
    return tuple(names)


FOLDER_OPTIONS = ("images", "img_suffix", "seg_map_suffix", "reduce_zero_label", "num_classes", "class_names")


def folder_options(f):
    """The options that describe a bare mask-folder SOURCE (a spec file's fields on the command line)."""
    decorators = [
        click.option("--images", type=click.Path(file_okay=False),
                     help="Image folder paired with each mask-folder SOURCE by file stem."),
        click.option("--img-suffix", help="Image file ending, e.g. _img.jpg (default: any of .jpg .jpeg .png); "
                     "without --images the images are looked for next to the masks."),
        click.option("--seg-map-suffix", help="Mask file ending, e.g. _gt.png [default: .png]."),
        click.option("--reduce-zero-label", is_flag=True,
                     help="Mask value 0 is 'no label' and classes start at 1 (mmseg's reduce_zero_label)."),
        click.option("--num-classes", type=click.IntRange(1, 255),
                     help="Number of classes of mask folders (shard sets, presets and spec files declare theirs)."),
        click.option("--class-names", type=click.Path(dir_okay=False),
                     help="File of class names: a JSON list or one name per line."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def pop_folder_options(kw):
    """Remove the folder options from a command's keyword arguments -> FolderOptions."""
    from csst_data.datasets import FolderOptions

    o = {k: kw.pop(k) for k in FOLDER_OPTIONS}
    return FolderOptions(images=o["images"], img_suffix=o["img_suffix"], seg_map_suffix=o["seg_map_suffix"],
                         reduce_zero_label=o["reduce_zero_label"], num_classes=o["num_classes"],
                         classes=_class_names(o["class_names"]))


def parse_sources(texts, options, role="labels", param="SOURCE", check_images=True):
    """SOURCE strings -> datasets; a bad one is a usage error naming it. With `check_images`,
    --images given but paired with no mask folder is an error too."""
    from csst_data.datasets import parse_source

    out = []
    for text in texts:
        try:
            out.append(parse_source(text, options, role=role))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=param) from None
    if check_images and role == "labels":
        check_images_used(options, out)
    return out


def check_images_used(options, datasets):
    if options.images is not None and not any(
            getattr(d, "spec", None) is not None and d.spec.img_dir == os.path.realpath(options.images) for d in datasets):
        raise click.BadParameter("--images pairs mask folders with images, but no SOURCE is a mask folder",
                                 param_hint="--images")


def check_writable(path, param, folder=False):
    """Refuse, before any work, an output whose folder cannot be written (read-only, no permission)."""
    target = os.path.abspath(path) if folder else os.path.dirname(os.path.abspath(path))
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise click.BadParameter(f"{path}: not writable ({existing} is read-only or not ours)", param_hint=param)


def progress_option(f):
    return click.option("--progress/--no-progress", default=True, show_default=True,
                        help="Show a progress bar (on stderr).")(f)


@contextlib.contextmanager
def progress_bar(label, unit, enabled=True):
    """A rich progress bar on stderr; yields a `progress(done, total)` callback."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.1f} {unit}/s" if task.speed else f"- {unit}/s")

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), Rate(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), transient=False, disable=not enabled)
    task = bar.add_task(label, total=None)

    def progress(done, total):
        if not bar.live.is_started:
            # Only once work begins, so set-up errors print cleanly; work done
            # before (a resumed run's) counts as done but not in the rate.
            bar.reset(task, total=total, completed=done)
            bar.start()
        else:
            bar.update(task, completed=done, total=total)

    try:
        yield progress
    finally:
        if bar.live.is_started:
            bar.stop()
