"""One writer per output: an exclusive `fcntl` lock held while a command writes.

    with OutputLock("index.zarr"):     # lock file index.zarr.lock beside it
        ...                            # a second writer gets OutputBusy naming this process

The lock file holds the writer's process id, for the message. The kernel drops
the lock when the process dies, so a killed writer never blocks the next run;
the file itself is left in place (deleting it would let two writers hold locks
on two different files).
"""

import fcntl
import os
import time

# Test hook: seconds to hold a lock once taken, so a test can start a second writer meanwhile.
HOLD_ENV = "CSST_LOCK_HOLD"


class OutputBusy(ValueError):
    """Another process is writing the same output."""


class OutputLock:
    def __init__(self, output, name=None):
        output = os.fspath(output).rstrip(os.sep)
        self.output = output
        # Folders a command writes into hold their lock; an index (renamed into place) has it beside.
        self.path = os.path.join(output, name) if name else f"{output}.lock"
        self.fd = None

    def __enter__(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise OutputBusy(f"{self.output} is being written by process {pid}; wait for it or write elsewhere") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        if os.environ.get(HOLD_ENV):
            time.sleep(float(os.environ[HOLD_ENV]))
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False
