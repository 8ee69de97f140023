"""The GPU check (issue #24): one command, under 8 minutes on one GPU, a table and JSON.

    python benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json

Without a CUDA device it prints "no CUDA device" and exits 0; `--cpu` runs every
section tiny on the CPU instead (what the tests do, to keep the script working).
On synthetic 1024 x 2048 street scenes packed as csst shards, with bf16 autocast:

- train: crops/s and step time at crop 768 of the paper's teacher
  (smp:DeepLabV3Plus:resnext50_32x4d) and of csst's DeepLabV3+-R50, through the
  trainer's own step and crop loader (csst_train.bench.step_rates);
- schedule: the teacher's epoch time with a constant 768 crop against
  coarse2fine+ (384/576/768), from the per-size rates (the paper's 1.7x);
- loader: the share of the step spent waiting for data at 2, 4 and 8 workers;
- label: `csst label` against the teacher's forward pass alone
  (benchmarks/label.py; target overhead <= 5%);
- decode: crop windows decoded by the GPU's decoder
  (torchvision.io.decode_jpeg(device="cuda") through jpeg.window_decode's
  `decode=`) against the CPU path, per crop.

Each section records its error instead of stopping the others. The GPU
machine lacks some of csst's dependencies: carry them as wheels (see
/work/.library/device/README.md) and `pip install --no-deps -e .` there first.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import click
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
TEACHER = "smp:DeepLabV3Plus:resnext50_32x4d"
BASELINE = "deeplabv3plus-r50"


def _data(tmp, images, size):
    from csst_data.datasets import ShardSet
    from csst_data.index import CentroidIndex, build_index
    from csst_demo import synth

    synth.write_dataset(os.path.join(tmp, "d"), synth.SynthOptions(images, 0, 0, size=size, seed=0))
    shards = os.path.join(tmp, "d", "labeled")
    build_index([ShardSet(shards)], os.path.join(tmp, "i.zarr"), progress=False)
    return shards, CentroidIndex.open(os.path.join(tmp, "i.zarr"))


def _rates(index, model, s, sizes, workers):
    from csst_train.bench import StepBench, step_rates

    return step_rates(index, StepBench(model=model, crop=s["crop"], batch_size=s["batch"], sizes=sizes,
                                       workers=workers, device=s["device"], amp=s["amp"], warmup=s["warmup"],
                                       steps=s["steps"]))


def section_train(index, s):
    out = {}
    for model in (TEACHER, BASELINE):
        r = _rates(index, model, s, [s["crop"]], s["workers"])[str(s["crop"])]
        out[model] = {"crops_per_s": r["crops_per_s"], "step_ms": 1e3 / r["iterations_per_s"],
                      "data_wait_fraction": r["data_wait_fraction"], "batch": r["batch"]}
    return out


def section_schedule(index, s):
    from csst_train.bench import epoch_times

    rates = _rates(index, TEACHER, s, None, s["workers"])
    times = epoch_times(rates, samples=2975, epochs=180, crop=s["crop"], batch_size=s["batch"])
    return {"epoch_s": times, "speedup_coarse2fine_plus": times["constant"] / times["coarse2fine+"],
            "crops_per_s_by_size": {k: v["crops_per_s"] for k, v in rates.items()}}


def section_loader(index, s):
    return {str(w): _rates(index, BASELINE, s, [s["crop"]], w)[str(s["crop"])]["data_wait_fraction"]
            for w in s["loader_workers"]}


def section_label(s, tmp):
    path = os.path.join(tmp, "label.json")
    cmd = [sys.executable, os.path.join(HERE, "label.py"), "--device", s["device"], "--json", path]
    if s["quick"]:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "label.py failed")
    with open(path) as f:
        r = json.load(f)
    return {k: r[k] for k in ("overhead_fraction", "label_images_per_s", "forward_images_per_s") if k in r}


def section_decode(shards, s):
    """Per crop: window decodes of the same windows on the CPU (simplejpeg) and on the GPU decoder."""
    from csst_data.jpeg import parse
    from csst_data.store.shards import iter_samples

    datas = [smp["jpg"] for _, smp in zip(range(16), iter_samples(shards, decode=False))]
    rng = np.random.default_rng(0)
    crop = s["crop"]
    windows = []
    for data in datas:
        info = parse(data)
        y, x = int(rng.integers(0, info.height - crop)), int(rng.integers(0, info.width - crop))
        windows.append((data, info, y, x))
    out = {"cpu_ms_per_crop": _time_windows(windows, crop, None)}
    if not torch.cuda.is_available():
        out["gpu"] = "skipped: no CUDA device"
        return out
    import torchvision.io

    def gpu(jpeg, m):
        return torchvision.io.decode_jpeg(torch.frombuffer(bytearray(jpeg), dtype=torch.uint8), device="cuda")

    _time_windows(windows[:2], crop, gpu)  # warm the decoder
    out["gpu_ms_per_crop"] = _time_windows(windows, crop, gpu, sync=torch.cuda.synchronize)
    out["gpu_over_cpu"] = out["cpu_ms_per_crop"] / out["gpu_ms_per_crop"]
    return out


def _time_windows(windows, crop, decode, sync=None):
    from csst_data.jpeg import window_decode

    start = time.perf_counter()
    for data, info, y, x in windows:
        window_decode(data, y, y + crop, x, x + crop, info=info, decode=decode)
    if sync:
        sync()
    return 1e3 * (time.perf_counter() - start) / len(windows)


@click.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@click.option("--cpu", is_flag=True, help="No GPU: run every section tiny on the CPU (checks the script).")
def main(json_path, cpu):
    if not torch.cuda.is_available() and not cpu:
        click.echo("no CUDA device: nothing measured (run it on a GPU machine, or with --cpu to check the script)")
        return 0
    if cpu:
        s = {"device": "cpu", "amp": "off", "crop": 64, "batch": 2, "warmup": 1, "steps": 1, "workers": 1,
             "loader_workers": (1, 2), "quick": True, "images": 4, "size": (128, 256)}
    else:
        s = {"device": "cuda", "amp": "bf16", "crop": 768, "batch": 8, "warmup": 3, "steps": 10, "workers": 8,
             "loader_workers": (2, 4, 8), "quick": False, "images": 32, "size": (1024, 2048)}
    result = {"device": torch.cuda.get_device_name(0) if not cpu else "cpu (--cpu check run)", "settings": {
        k: v for k, v in s.items() if k not in ("images",)}}
    with tempfile.TemporaryDirectory() as tmp:
        shards, index = _data(tmp, s["images"], s["size"])
        sections = {"train": lambda: section_train(index, s), "schedule": lambda: section_schedule(index, s),
                    "loader": lambda: section_loader(index, s), "label": lambda: section_label(s, tmp),
                    "decode": lambda: section_decode(shards, s)}
        for name, fn in sections.items():
            start = time.perf_counter()
            try:
                result[name] = fn()
            except Exception as e:  # noqa: BLE001 - one section's failure is recorded, the others still run
                result[name] = {"error": f"{type(e).__name__}: {e}"}
            result[name + "_seconds"] = time.perf_counter() - start
    _print(result)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


def _print(result):
    table = Table(title=f"GPU check on {result['device']}")
    table.add_column("section")
    table.add_column("result")
    for name in ("train", "schedule", "loader", "label", "decode"):
        table.add_row(name, json.dumps(result.get(name), default=lambda v: round(v, 4) if isinstance(v, float)
                                       else str(v))[:300])
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
