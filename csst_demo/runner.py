"""`csst demo`: the whole self-training pipeline on the embedded synthetic data.

Every stage is the real `csst` command, run as a subprocess, with its output
kept under the demo folder; the exact commands are printed and written to
`commands.sh` so any stage can be rerun by hand:

  synth -> index (labelled) -> train teacher (centroid sampling) -> label the
  unlabelled split (pixels below 70 % confidence left unlabelled) -> index
  (real + pseudo) -> train student (centroid sampling, coarse2fine+, about
  half of the samples from the real labels) -> eval teacher and student ->
  report.
"""

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

# Stage sizes: the default run fits in ~10 minutes on 2 CPU cores, --quick in ~2.
SETTINGS = {
    "default": dict(labeled=100, unlabeled=400, val=50, size="256x512", crop=256, batch=8,
                    teacher_epochs=30, student_epochs=12, workers=1, min_confidence=0.7),
    "quick": dict(labeled=12, unlabeled=12, val=6, size="128x256", crop=128, batch=4,
                  # A 2-epoch teacher is sure of almost nothing: keep every pixel.
                  teacher_epochs=2, student_epochs=2, workers=0, min_confidence=0.0),
}


def csst_bin() -> str:
    """The `csst` executable next to this Python, so subprocesses use the same install."""
    return os.path.dirname(os.path.abspath(sys.executable))


def pipeline(out: str, s: dict, seed: int = 0) -> list[tuple[str, list[str]]]:
    """[(stage name, argv)] of the demo, argv[0] == "csst"."""
    d = lambda *p: os.path.join(out, *p)  # noqa: E731
    train_common = ["--crop", str(s["crop"]), "--batch-size", str(s["batch"]), "--workers", str(s["workers"]),
                    "--seed", str(seed), "--val", d("data", "val"), "--no-progress"]
    return [
        ("synth", ["csst", "synth", "-o", d("data"), "--labeled", str(s["labeled"]), "--unlabeled", str(s["unlabeled"]),
                   "--val", str(s["val"]), "--size", s["size"], "--seed", str(seed)]),
        ("index (labelled)", ["csst", "index", "build", d("data", "labeled"), "-o", d("teacher-index.zarr"),
                              "--no-progress"]),
        ("train teacher", ["csst", "train", "--data", d("data", "labeled"), "--index", d("teacher-index.zarr"),
                           "-o", d("runs", "teacher"), "--sampling", "centroid",
                           "--epochs", str(s["teacher_epochs"]), *train_common]),
        ("label", ["csst", "label", "--checkpoint", d("runs", "teacher", "best.pt"), "--input", d("data", "unlabeled"),
                   "-o", d("pseudo"), "--workers", str(s["workers"]), "--min-confidence", f"{s['min_confidence']:g}",
                   "--no-progress"]),
        ("index (real + pseudo)", ["csst", "index", "build", d("data", "labeled"), d("pseudo"), "-o", d("index.zarr"),
                                   "--no-progress"]),
        ("train student", ["csst", "train", "--data", d("data", "labeled"), d("pseudo"), "--index", d("index.zarr"),
                           "-o", d("runs", "student"), "--sampling", "centroid", "--schedule", "coarse2fine+",
                           # About half of the student's samples from the real labels (source 0).
                           "--source-weights", f"{s['unlabeled'] / s['labeled']:g},1",
                           "--epochs", str(s["student_epochs"]), *train_common]),
        ("eval teacher", ["csst", "eval", "--checkpoint", d("runs", "teacher", "best.pt"), "--data", d("data", "val"),
                          "--json", d("eval", "teacher.json")]),
        ("eval student", ["csst", "eval", "--checkpoint", d("runs", "student", "best.pt"), "--data", d("data", "val"),
                          "--json", d("eval", "student.json")]),
    ]


def run_demo(out: str, quick: bool = False, seed: int = 0, force: bool = False,
             log: Callable[[str], object] = print) -> str:
    """Run every stage into `out`; returns the path of the report.

    `force` replaces an earlier demo in `out` (a folder holding commands.sh);
    any other non-empty folder is refused.
    """
    from csst_demo.report import make_report

    out = os.path.abspath(out)
    if os.path.exists(out) and os.listdir(out):
        if not (force and os.path.isfile(os.path.join(out, "commands.sh"))):
            raise FileExistsError(f"{out} is not empty; choose another -o or remove it"
                                  + ("" if force else " (--force replaces an earlier demo)"))
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "eval"), exist_ok=True)
    settings = SETTINGS["quick" if quick else "default"]
    stages = pipeline(out, settings, seed)
    env = {**os.environ, "PATH": csst_bin() + os.pathsep + os.environ.get("PATH", "")}
    script = os.path.join(out, "commands.sh")
    with open(script, "w") as f:
        f.write("#!/usr/bin/env bash\n# The commands `csst demo` ran, in order; rerun any of them by hand.\n"
                f"set -euo pipefail\nexport PATH={shlex.quote(csst_bin())}:$PATH\n")
    os.chmod(script, 0o755)
    timings = []
    for name, argv in stages:
        line = shlex.join(argv)
        log(f"[{name}] $ {line}")
        with open(script, "a") as f:
            f.write(f"\n# {name}\n{line}\n")
        t = time.perf_counter()
        proc = subprocess.run(argv, env=env)
        timings.append({"stage": name, "seconds": time.perf_counter() - t, "command": line})
        if proc.returncode != 0:
            raise RuntimeError(f"stage '{name}' failed with exit status {proc.returncode}: {line}")
    t = time.perf_counter()
    report = make_report(out, timings=timings)
    log(f"[report] {report} ({time.perf_counter() - t:.1f} s)")
    return report
