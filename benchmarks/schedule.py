"""Fast-schedule benchmark: wall time per epoch of Fast-SCNN training for each crop schedule.

On the same synthetic data and the same number of samples per epoch, one
`csst train` run (the trainer's own function) per schedule: `constant` at the
full crop, and coarse2fine, fine2coarse, coarse2fine+, fine2coarse+ over the
default sizes (1/2, 3/4, 1 x the full crop) with batch sizes scaled so the
pixels per step stay constant. The device is the GPU when one is present,
else this machine's CPU; the JSON names it.

    python benchmarks/schedule.py --json benchmarks/results/schedule.json
"""

import json
import os
import sys
import tempfile

import click
import torch
from rich.console import Console
from rich.table import Table

from csst_demo import synth
from csst_data.index import build_index
from csst_data.loader.schedules import SCHEDULES, default_sizes
from csst_train.config import TrainConfig
from csst_train.trainer import train


def device_name(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def run(data, index, out, schedule, epochs, crop, batch, samples, workers, device, amp):
    train(TrainConfig(out=out, data=[data], index=index, epochs=epochs, crop=crop, batch_size=batch, schedule=schedule,
                      length=samples, workers=workers, device=device, amp=amp, loss="ohem"), log=lambda s: None)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return rows


@click.command()
@click.option("--images", default=64, show_default=True, help="Synthetic images.")
@click.option("--size", default="512x1024", show_default=True, help="Synthetic image size HxW.")
@click.option("--crop", default=512, show_default=True, help="Full crop.")
@click.option("--batch", default=8, show_default=True, help="Batch at the full crop.")
@click.option("--samples", default=64, show_default=True, help="Samples per epoch (the same for every schedule).")
@click.option("--epochs", default=3, show_default=True, help="Epochs per run (3 covers each size once).")
@click.option("--workers", default=1, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--amp", default="off", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Tiny smoke run.")
def main(images, size, crop, batch, samples, epochs, workers, device, amp, json_path, quick):
    if quick:
        images, size, crop, batch, samples = 8, "128x256", 128, 4, 16
    h, w = (int(v) for v in size.lower().split("x"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    console = Console()
    results = {}
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "synth")
        synth.write_dataset(data,
                            synth.SynthOptions(labeled=images, unlabeled=0, val=0, size=(h, w), seed=0), progress=False)
        data = os.path.join(data, "labeled")
        index = os.path.join(work, "index.zarr")
        build_index([data], index, progress=False)
        # Warm-up: thread pools, allocator, first-iteration costs.
        run(data, index, os.path.join(work, "warmup"), "constant", 1, crop, batch, batch * 2, workers, device, amp)
        for schedule in SCHEDULES:
            rows = run(data, index, os.path.join(work, schedule), schedule, epochs, crop, batch, samples,
                       workers, device, amp)
            results[schedule] = rows
            console.print(f"{schedule}: " + ", ".join(f"{r['crop']}px x{r['batch']} {r['epoch_s']:.1f}s" for r in rows))
    epoch_s = {s: sum(r["epoch_s"] for r in rows) / len(rows) for s, rows in results.items()}
    table = Table(title=f"Fast-SCNN training, {samples} samples/epoch, full crop {crop}, batch {batch}, {device_name(device)}")
    for col in ("schedule", "crops x batch per epoch", "s / epoch", "speedup"):
        table.add_column(col, justify="right")
    for s, rows in results.items():
        table.add_row(s, ", ".join(f"{r['crop']}x{r['batch']}" for r in rows), f"{epoch_s[s]:.2f}",
                      f"{epoch_s['constant'] / epoch_s[s]:.2f}x")
    console.print(table)
    result = {
        "device": device_name(device), "samples_per_epoch": samples, "full_crop": crop, "batch": batch,
        "sizes": default_sizes(crop), "epochs": epochs, "image_size": [h, w], "epoch_s": epoch_s,
        "speedup": {s: epoch_s["constant"] / v for s, v in epoch_s.items()},
        "speedup_coarse2fine_plus": epoch_s["constant"] / epoch_s["coarse2fine+"],
        "per_epoch": {s: [{k: r[k] for k in ("crop", "batch", "epoch_s", "crops_per_s", "loss")} for r in rows]
                      for s, rows in results.items()},
    }
    result["targets"] = {"speedup_coarse2fine_plus>=1.5": result["speedup_coarse2fine_plus"] >= 1.5}
    console.print(result["targets"])
    if json_path:
        from csst_data.store.shards import atomic_write_json

        atomic_write_json(json_path, result)


if __name__ == "__main__":
    sys.exit(main())
