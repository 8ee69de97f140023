"""Worker processes that do not outlive the command that started them."""

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(*_):
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


def chain(*inits):
    """One worker_init_fn / initializer that calls several."""
    def init(*args):
        for f in inits:
            f(*args)
    return init
