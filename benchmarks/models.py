"""What each named model costs: parameters and CPU training-step time at crop 256, side by side.

    python benchmarks/models.py --json benchmarks/results/models.json

One run, this machine's CPU, batch 2 at 256 x 256, random weights and random
crops in memory (the model's cost alone; the loader is measured elsewhere):
each model takes the trainer's own `train_step` (forward, cross-entropy,
backward, SGD), 1 warm-up step and `--steps` timed ones, median reported. The
zoo's models (smp:...) need the models extra; without it they are listed as
not installed.
"""

import sys
import time

import click
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from csst_train.models import build_model, count_parameters, normalisation
from csst_data.store.shards import atomic_write_json
from csst_train.step import Step, train_step

MODELS = ("fastscnn", "deeplabv3plus-r18", "deeplabv3plus-r50", "smp:DeepLabV3Plus:resnext50_32x4d",
          "smp:PSPNet:resnet101", "smp:UPerNet:tu-convnext_tiny", "smp:Segformer:mit_b0", "smp:FPN:tu-hrnet_w18")


def step_ms(name, crop, batch, steps, classes=19):
    torch.manual_seed(0)
    net = build_model(name, classes).train()
    step = Step(net, torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9),
                torch.amp.GradScaler("cuda", enabled=False), torch.device("cpu"), None, loss="ce",
                stats=normalisation(name))
    g = torch.Generator().manual_seed(0)
    batch_of = lambda: {"image": torch.randint(0, 256, (batch, crop, crop, 3), dtype=torch.uint8, generator=g),  # noqa: E731
                        "label": torch.randint(0, classes, (batch, crop, crop), dtype=torch.uint8, generator=g)}
    train_step(step, batch_of())
    times = []
    for _ in range(steps):
        b = batch_of()
        start = time.perf_counter()
        train_step(step, b)
        times.append(1e3 * (time.perf_counter() - start))
    return count_parameters(net), float(np.median(times))


@click.command()
@click.option("--crop", default=256, show_default=True)
@click.option("--batch", default=2, show_default=True)
@click.option("--steps", default=3, show_default=True, help="Timed steps per model (median reported).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Tiny smoke run: crop 64, two models, one step.")
def main(crop, batch, steps, json_path, quick):
    models = MODELS
    if quick:
        crop, steps, models = 64, 1, ("fastscnn", "smp:Segformer:mit_b0")
    rows = {}
    for name in models:
        try:
            params, ms = step_ms(name, crop, batch, steps)
            rows[name] = {"parameters": params, "step_ms": ms}
        except ValueError as e:  # the zoo's models without the models extra
            rows[name] = {"error": str(e)}
    result = {"device": f"cpu ({torch.get_num_threads()} threads)", "crop": crop, "batch": batch, "steps": steps,
              "models": rows}
    table = Table(title=f"training step on the CPU, batch {batch} at {crop} x {crop}")
    for col in ("model", "parameters (M)", "step ms (median)"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, r in rows.items():
        if "error" in r:
            table.add_row(name, "-", r["error"][:60])
        else:
            table.add_row(name, f"{r['parameters'] / 1e6:.1f}", f"{r['step_ms']:.0f}")
    Console().print(table)
    if json_path:
        atomic_write_json(json_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
