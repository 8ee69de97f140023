"""Worker processes that do not outlive the command that started them, their priority, and the rank."""

from __future__ import annotations

import ctypes
import multiprocessing.context
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(*_: object) -> None:
    """Initialiser for DataLoader and pool workers: the kernel sends SIGKILL to this process when
    its parent dies (Linux prctl PR_SET_PDEATHSIG), so a killed or preempted command leaves no
    orphaned workers behind on a cluster node. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


class worker_init:
    """The initializer of every csst worker (DataLoader worker_init_fn or Pool initializer).

    It makes the worker die with its parent, gives it the object-store
    environment (AWS_*, GOOGLE_*, AZURE_*, CSST_STORAGE*) that the parent had
    when the pool was made, then calls `inits` with the worker's arguments. The
    environment is carried by hand because a fork server is started once per
    process and forks every later worker with the environment of that moment:
    a process that changed its endpoint or credentials since (a notebook, a
    test session) would otherwise send its workers to the old server. A class,
    so that a fork server can pickle it.
    """

    def __init__(self, *inits: Callable) -> None:
        from csst_data.store import storage

        self.environment = storage.environment()
        self.inits = inits

    def __call__(self, *args: object) -> None:
        from csst_data.store import storage

        die_with_parent()
        storage.set_environment(self.environment)
        for f in self.inits:
            f(*args)


# Modules a forkserver imports once, so that each worker it forks starts warm.
_PRELOAD = ["csst_data.forkserver_init", "numpy", "torch", "csst_data.datasets", "csst_data.loader.crop_loader"]


def lower_priority(level: int, *_: object) -> None:
    """Renice the calling thread (Linux: only that thread) or worker process by `level`.

    On the CPU the model's threads use every core; background work (decode,
    compression, writing) at a lower priority then fills the cycles they leave
    idle instead of preempting them, which stalls every parallel region.
    """
    if level:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + level))
        except (OSError, AttributeError):
            pass


def mp_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context for worker processes (pools and DataLoaders).

    "fork" where the platform has it: cheap, and workers inherit compiled
    kernels. "forkserver" once this process has talked to an object store
    (storage.py): its client runs a tokio runtime, and a forked child inherits
    the runtime without its threads, so its first request hangs. A forkserver
    is a fresh process that never touched the store; it forks the workers.
    """
    import multiprocessing as mp

    from csst_data.store import storage

    methods = mp.get_all_start_methods()
    if storage.in_use() and "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return mp.get_context("fork" if "fork" in methods else None)


def rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the given values, else torchrun's RANK / WORLD_SIZE, else (0, 1).

    The one place csst reads the launcher's environment; a rank outside 0..world_size - 1 is an error.
    """
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if rank is None:
        rank = int(os.environ.get("RANK", "0")) if world_size > 1 else 0
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size})")
    return rank, world_size
