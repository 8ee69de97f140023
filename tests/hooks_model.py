"""A test-side model, `--model hooks_model:fastscnn` (or `hooks_model:zoo`, an smp model): csst's Fast-SCNN unchanged (the same parameters
and state dict as `--model fastscnn`), whose training forward passes can stop their own process at a
step the test chooses, as a kill or a scheduler's preemption would:

  HOOKS_KILL_BEFORE_STEP=N  SIGKILL as training step N starts: right after step N - 1 and any
                            checkpoint written at its end (nothing is written in between)
  HOOKS_TERM_IN_STEP=N      SIGTERM during step N: the trainer stops at the end of that step

Steps are counted from the start of the process (a resumed run counts from 1 again). Without the
variables the model trains exactly like `--model fastscnn`. A `csst train` subprocess imports this
module with `hooks_env(...)`, which puts tests/ on its PYTHONPATH.
"""

import os
import signal

import torch

from csst_train.models import build_model

KILL_BEFORE_STEP = "HOOKS_KILL_BEFORE_STEP"
TERM_IN_STEP = "HOOKS_TERM_IN_STEP"
MODEL = ("--model", "hooks_model:fastscnn")


def hooks_env(**variables):
    """os.environ with tests/ on PYTHONPATH and the given HOOKS_* variables (values as ints)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **{k: str(v) for k, v in variables.items()}}


def fastscnn(num_classes):
    return _hooked(build_model("fastscnn", num_classes))


def tiny(num_classes):
    """Conv-BN-ReLU-conv at the input size, no dropout (a dropout mask is drawn in memory order, so NHWC
    and NCHW runs would drop other units): quick to torch.compile, for the memory-format and compile tests."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16),
                               torch.nn.ReLU(), torch.nn.Conv2d(16, num_classes, 1))


def zoo(num_classes):
    """`smp:FPN:tu-mobilevit_xxs` (segmentation-models-pytorch over a timm encoder) with the same hooks."""
    return _hooked(build_model(ZOO, num_classes))


ZOO = "smp:FPN:tu-mobilevit_xxs"


def _hooked(model):
    kill, term = (int(os.environ[k]) if os.environ.get(k) else None for k in (KILL_BEFORE_STEP, TERM_IN_STEP))
    if kill is None and term is None:
        return model
    steps = 0

    def before_forward(module, args):
        nonlocal steps
        if not module.training:  # validation passes are not steps
            return
        steps += 1
        if steps == kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if steps == term:
            os.kill(os.getpid(), signal.SIGTERM)

    model.register_forward_pre_hook(before_forward)
    return model
