"""`csst bench io|loader|train`: throughput on your own data, storage and hardware."""

import json

import click
from rich.console import Console
from rich.table import Table

from csst_cli.options import (SOURCE_HELP, folder_options, parse_floats, parse_sources, pop_folder_options,
                              progress_bar, progress_option)
from csst_data.store.shards import atomic_write_bytes


def _ints(text, name):
    values = [int(v) for v in parse_floats(text, name, positive=False)]
    if min(values) < 0:
        raise click.BadParameter(f"expected numbers >= 0, got {text!r}", param_hint=name)
    return values


def _write_json(path, result):
    if path:
        atomic_write_bytes(path, (json.dumps(result, indent=1) + "\n").encode("utf-8"))


def _plot(path, title, series, xlabel, ylabel):
    """A line per series {name: {x: y}}, as PNG."""
    import io as _io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in series.items():
        xs = list(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=name)
    ticks = sorted({x for points in series.values() for x in points})
    ax.set_xticks(ticks)  # worker counts and crop sizes are whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _open_index(path):
    from csst_data.index import CentroidIndex

    try:
        return CentroidIndex.open(path)
    except ValueError as e:
        raise click.ClickException(str(e))


@click.group("bench")
def bench():
    """Measure IO, loader and training throughput on your own data.

    \b
    csst bench io cityscapes:/data/cityscapes:train cs-packed --workers 1,2,4 --json io.json
    csst bench loader --index cs.zarr --crop 768 --schedule coarse2fine+ --workers 2,4,8 --json loader.json
    csst bench train --index cs.zarr --model deeplabv3plus-r50 --device cuda --amp bf16 --json train.json
    """


@bench.command("io", help=f"""Read and decode the image and label of every sample of each SOURCE: samples/s and MB/s,
    in order and in a random order, for each --workers count; the label decode alone; bytes per sample.

    Each SOURCE is {SOURCE_HELP}. Compare a shard set with the same data as files.""")
@click.argument("sources", nargs=-1, required=True)
@folder_options
@click.option("--workers", default="1,2", show_default=True, help="Worker processes to try, comma-separated.")
@click.option("--samples", type=click.IntRange(min=1), help="Samples per pass (default: all).")
@click.option("--drop-caches", is_flag=True, help="Drop the page cache before each pass (root only): cold reads.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write samples/s by worker count as PNG.")
@progress_option
def io(sources, workers, samples, drop_caches, json_path, plot, progress, **kw):
    from csst_data import bench as m

    datasets = parse_sources(sources, pop_folder_options(kw))
    counts = _ints(workers, "--workers")
    result = {"sources": [], "workers": counts}
    table = Table(title="csst bench io")
    for col in ("source", "order", "workers", "samples/s", "MB/s", "KB/sample"):
        table.add_column(col, justify="left" if col in ("source", "order") else "right")
    try:
        for ds in datasets:
            entry = {"source": ds.name, "runs": []}
            for order in ("sequential", "random"):
                for w in counts:
                    note = m.page_cache_note(None, drop_caches)
                    with progress_bar(f"{order}, {w} workers", "samples", progress) as bar:
                        r = m.io_throughput(ds, max(w, 1), order, samples, progress=bar)
                    entry["runs"].append({"order": order, "workers": w, "cache": note, **r})
                    table.add_row(ds.name, order, str(w), f"{r['samples_per_s']:.1f}", f"{r['mb_per_s']:.1f}",
                                  f"{r['bytes_per_sample'] / 1e3:.0f}")
            entry["label_decode_ms"] = m.label_decode_ms(ds) if any(r for r in entry["runs"]) else None
            entry["bytes_per_sample"] = entry["runs"][0]["bytes_per_sample"]
            entry["cache"] = entry["runs"][-1]["cache"]
            result["sources"].append(entry)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    console = Console()
    console.print(table)
    for e in result["sources"]:
        console.print(f"{e['source']}: label decode {e['label_decode_ms']:.2f} ms; page cache: {e['cache']}")
    _write_json(json_path, result)
    if plot:
        _plot(plot, "read + decode", {f"{e['source']} ({o})": {r["workers"]: r["samples_per_s"] for r in e["runs"]
                                                            if r["order"] == o}
                                      for e in result["sources"] for o in ("sequential", "random")},
              "workers", "samples/s")


@bench.command("loader")
@click.option("--index", "index_path", required=True, type=click.Path(exists=True), help="Centroid index of the data.")
@click.option("--crop", default=768, show_default=True, type=click.IntRange(min=32), help="Full crop size.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Batch at the full crop.")
@click.option("--schedule", default="coarse2fine+", show_default=True, help="Schedule whose crop sizes to measure.")
@click.option("--sizes", help="Crop sizes, comma-separated (default: the schedule's: 1/2, 3/4, 1 x --crop).")
@click.option("--workers", default="0,2", show_default=True, help="DataLoader workers to try, comma-separated.")
@click.option("--sampling", default="centroid", show_default=True, help="Sampling whose class coverage to report.")
@click.option("--samples", default=64, show_default=True, type=click.IntRange(min=1), help="Crops per timed pass.")
@click.option("--coverage-samples", type=click.IntRange(min=1), help="Crops of the coverage epoch (default: 50 per class).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write crops/s by crop size and workers as PNG.")
def loader(index_path, crop, batch_size, schedule, sizes, workers, sampling, samples, coverage_samples, json_path, plot):
    """Crops/s and pixels/s of the csst loader for each crop size and worker count, the time
    per crop split into read / decode / crop + augment, and one epoch's class coverage of
    --sampling against uniform sampling."""
    from csst_data import bench as m
    from csst_data.loader.schedules import batch_for_crop, default_sizes

    index = _open_index(index_path)
    size_list = [int(v) for v in parse_floats(sizes, "--sizes")] if sizes else default_sizes(crop)
    counts = _ints(workers, "--workers")
    result = {"index": index_path, "crop": crop, "schedule": schedule, "sizes": size_list, "workers": counts,
              "runs": [], "split": {}}
    table = Table(title=f"csst bench loader: {index.num_images} images")
    for col in ("crop", "workers", "crops/s", "Mpx/s", "read ms", "decode ms", "crop ms"):
        table.add_column(col, justify="right")
    for size in size_list:
        split = m.crop_time_split(index, size, min(samples, 32))
        result["split"][str(size)] = split
        for w in counts:
            r = m.loader_throughput(index, size, batch_for_crop(crop, batch_size, size), w, samples)
            result["runs"].append({"crop": size, "workers": w, **r})
            table.add_row(str(size), str(w), f"{r['crops_per_s']:.1f}", f"{r['pixels_per_s'] / 1e6:.1f}",
                          f"{split['read_ms']:.2f}", f"{split['decode_ms']:.2f}", f"{split['crop_ms']:.2f}")
    cov_n = coverage_samples or 50 * index.num_classes
    result["coverage"] = {sampling: m.class_coverage(index, sampling, cov_n, min(size_list)),
                          "uniform": m.class_coverage(index, "uniform", cov_n, min(size_list))}
    console = Console()
    console.print(table)
    console.print(f"min class coverage of one epoch: {sampling} {result['coverage'][sampling]['min_coverage']:.3f}, "
                  f"uniform {result['coverage']['uniform']['min_coverage']:.3f}")
    _write_json(json_path, result)
    if plot:
        _plot(plot, "csst loader", {f"{w} workers": {r["crop"]: r["crops_per_s"] for r in result["runs"] if r["workers"] == w}
                                    for w in counts}, "crop", "crops/s")


@bench.command("train")
@click.option("--index", "index_path", required=True, type=click.Path(exists=True), help="Centroid index of the data.")
@click.option("--model", default="fastscnn", show_default=True, help="Model to step.")
@click.option("--crop", default=768, show_default=True, type=click.IntRange(min=32), help="Full crop size.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Batch at the full crop.")
@click.option("--sizes", help="Crop sizes, comma-separated (default: 1/2, 3/4, 1 x --crop).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0), help="DataLoader workers.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True)
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0), help="Untimed steps per size.")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(min=1), help="Timed steps per size.")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1), help="Epochs of the schedules estimated.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write crops/s and data wait by crop size as PNG.")
@progress_option
def train(index_path, model, crop, batch_size, sizes, workers, device, amp, warmup, steps, epochs, json_path, plot,
          progress):
    """Iterations/s, crops/s and the data-wait share at each crop size of a fast schedule, the
    estimated epoch time of every schedule, and whether the loader keeps up at each size
    (data wait <= 10%) with the worker count that would."""
    from csst_data import bench as m
    from csst_data.loader.schedules import default_sizes
    from csst_train import bench as t

    index = _open_index(index_path)
    size_list = [int(v) for v in parse_floats(sizes, "--sizes")] if sizes else default_sizes(crop)
    try:
        with progress_bar("stepping", "sizes", progress) as bar:
            options = t.StepBench(model, crop, batch_size, size_list, workers, device, amp, warmup, steps)
            rates = t.step_rates(index, options, progress=bar)
    except (ValueError, RuntimeError) as e:
        raise click.ClickException(str(e))
    table = Table(title=f"csst bench train: {model}, {device}, amp {amp}, {workers} workers")
    for col in ("crop", "batch", "it/s", "crops/s", "data wait", "keeps up", "workers needed"):
        table.add_column(col, justify="right")
    for size in size_list:
        r = rates[str(size)]
        if not r["loader_keeps_up"]:
            loader_rate = m.loader_throughput(index, size, r["batch"], workers, 4 * r["batch"])["crops_per_s"]
            r["workers_needed"] = t.workers_needed(r["crops_per_s"] / max(1 - r["data_wait_fraction"], 1e-9),
                                                   loader_rate, workers)
        else:
            r["workers_needed"] = workers
        table.add_row(str(size), str(r["batch"]), f"{r['iterations_per_s']:.2f}", f"{r['crops_per_s']:.1f}",
                      f"{100 * r['data_wait_fraction']:.0f}%", "yes" if r["loader_keeps_up"] else "[red]no",
                      str(r["workers_needed"]))
    samples = index.num_images
    estimates = t.epoch_times(rates, samples, epochs, crop, batch_size, size_list)
    result = {"index": index_path, "model": model, "device": device, "amp": amp, "workers": workers,
              "sizes": size_list, "rates": rates, "epoch_s_by_schedule": estimates, "samples_per_epoch": samples}
    console = Console()
    console.print(table)
    console.print("estimated s/epoch: " + ", ".join(f"{k} {v:.1f}" for k, v in estimates.items()))
    _write_json(json_path, result)
    if plot:
        _plot(plot, f"csst bench train ({model})",
              {"crops/s": {s: rates[str(s)]["crops_per_s"] for s in size_list},
               "data wait %": {s: 100 * rates[str(s)]["data_wait_fraction"] for s in size_list}}, "crop", "")
