"""How much does `csst label` cost beyond the teacher's forward pass?

    python benchmarks/label.py [--json PATH] [--quick] [--device auto] [--checkpoint CKPT]

On synthetic street scenes (csst_demo.synth, stored as JPEG files), in one run
and on one device, with the same model and batch size:

- forward: `model(normalise(x))` alone on pre-decoded uint8 batches already
  in memory (device-synchronised, after a warm-up batch);
- label: the whole `csst_train.label.label` call the CLI makes (model load,
  file reads, decode in DataLoader workers, forward, argmax + confidence,
  zstd compression, tar writing, manifest), images / wall-clock second.

overhead_fraction = 1 - label/forward; target <= 0.10 with fastscnn. Each side
is measured `--repeats` times, interleaved, and the best rate is kept (the
machine may be shared; the overhead of the medians is reported too). label_bytes_per_image is the mean size of the stored
`label.npy.zst`; without --checkpoint the teacher is an untrained fastscnn,
whose labels are not realistic, so the synthetic ground-truth labels encoded
the same way are reported next to it (gt_label_bytes_per_image).
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from csst_data.store import codecs, shards
from csst_demo import synth
from csst_data.store.shards import atomic_write_json
from csst_train.checkpoints import model_from_checkpoint, save_checkpoint
from csst_train.inference import normalise
from csst_train.distributed import pick_device
from csst_train.images import default_workers, list_inputs
from csst_train.label import label
from csst_train.run_configs import LabelConfig
from csst_train.models import build_model


def make_images(root, n, h, w, seed):
    """n synthetic scenes as JPEG files; returns the ground-truth labels."""
    os.makedirs(root, exist_ok=True)
    labels = []
    for i in range(n):
        image, lab = synth.render_scene(h, w, np.random.default_rng([seed, i]))
        with open(os.path.join(root, f"scene{i:05d}.jpg"), "wb") as f:
            f.write(synth.encode_jpeg(np.ascontiguousarray(image)))
        labels.append(lab)
    return labels


def forward_rate(model, batches, dev):
    """Images/s of normalise + forward on pre-decoded batches (first batch is a warm-up)."""
    with torch.no_grad():
        model(normalise(batches[0].to(dev)))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        n = 0
        for x in batches:
            model(normalise(x.to(dev, non_blocking=True)))
            n += x.shape[0]
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def label_rate(ckpt, items, out, dev, batch, workers):
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    s = label(ckpt, items, out, LabelConfig(device=str(dev), batch_size=batch, workers=workers, shard_size=1000))
    seconds = time.perf_counter() - start
    assert s["labelled"] == len(items) and s["failed"] == 0
    return len(items) / seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (8 small images, one repeat)")
    ap.add_argument("--images", type=int, default=192, help="images per pass (enough that start-up costs are amortised)")
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: csst label's default)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="fastscnn")
    ap.add_argument("--checkpoint", help="a trained teacher (default: an untrained --model with 19 classes)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.images, args.height, args.width, args.repeats = 8, 128, 256, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = pick_device(args.device)
    threads = torch.get_num_threads()  # read now: numba's OpenMP kernels in the label path may reset it
    workers = default_workers() if args.workers is None else args.workers
    tmp = tempfile.mkdtemp(prefix="csst-bench-label-")
    try:
        gt = make_images(os.path.join(tmp, "images"), args.images, args.height, args.width, args.seed)
        ckpt = args.checkpoint
        if ckpt is None:
            torch.manual_seed(args.seed)
            ckpt = os.path.join(tmp, "teacher.pt")
            save_checkpoint({"model": build_model(args.model, synth.NUM_CLASSES).state_dict(),
                             "args": {"model": args.model}, "num_classes": synth.NUM_CLASSES,
                             "class_names": list(synth.CLASS_NAMES)}, ckpt)
        model, meta = model_from_checkpoint(ckpt, dev)
        items = list_inputs([os.path.join(tmp, "images")])
        decoded = [torch.from_numpy(codecs.decode_image(open(ref, "rb").read())) for _, ref in items]
        batches = [torch.stack(decoded[i:i + args.batch_size]) for i in range(0, len(decoded), args.batch_size)]
        if dev.type == "cuda":
            batches = [b.pin_memory() for b in batches]
        out = os.path.join(tmp, "out")
        # Warm-up of the label path (allocator, kernel selection) on a few images.
        label_rate(ckpt, items[: 2 * args.batch_size], out, dev, args.batch_size, workers)
        fwd, lab = [], []
        for _ in range(args.repeats):
            fwd.append(forward_rate(model, batches, dev))
            lab.append(label_rate(ckpt, items, out, dev, args.batch_size, workers))
        sizes = [size for path in shards.shard_paths(out) for name, _, size in shards.member_offsets(path)
                 if name.endswith(".label.npy.zst")]
        result = {
            "label_images_per_s": max(lab), "forward_images_per_s": max(fwd),
            "overhead_fraction": 1 - max(lab) / max(fwd),
            "overhead_fraction_median": 1 - float(np.median(lab)) / float(np.median(fwd)),
            "label_bytes_per_image": float(np.mean(sizes)),
            "gt_label_bytes_per_image": float(np.mean([len(codecs.encode_label(g)) for g in gt])),
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
            "model": meta["args"]["model"], "images": args.images, "height": args.height, "width": args.width,
            "batch_size": args.batch_size, "workers": workers, "torch_threads": threads,
            "repeats": {"label_images_per_s": lab, "forward_images_per_s": fwd},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title=f"csst label vs forward: {result['model']}, {args.images} images "
                        f"{args.height}x{args.width}, batch {args.batch_size}, {result['device']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("forward alone (images/s)", f"{result['forward_images_per_s']:.2f}")
    table.add_row("csst label (images/s)", f"{result['label_images_per_s']:.2f}")
    ok = result["overhead_fraction"] <= 0.10
    table.add_row("overhead (target <= 0.10)", f"[{'green' if ok else 'red'}]{result['overhead_fraction']:.3f}")
    table.add_row("overhead, medians of the repeats", f"{result['overhead_fraction_median']:.3f}")
    table.add_row("bytes per stored label", f"{result['label_bytes_per_image']:.0f}")
    table.add_row("bytes per ground-truth label", f"{result['gt_label_bytes_per_image']:.0f}")
    Console().print(table)
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
