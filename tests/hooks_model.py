"""A test-side model, `--model hooks_model:fastscnn`: csst's Fast-SCNN unchanged (the same parameters
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
    model = build_model("fastscnn", num_classes)
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
