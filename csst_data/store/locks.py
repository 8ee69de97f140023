"""One writer per output: an exclusive `fcntl.flock` lock held while a command writes.

    with OutputLock("runs/teacher", ".lock"):   # a folder csst writes into holds its lock
        ...
    with OutputLock("index.zarr"):              # .csst-locks/index.zarr.lock beside it
        ...                                     # a second writer gets OutputBusy naming this process

Where the lock lives:

- An output that is a folder csst writes into (a shard set, a run folder)
  holds its lock file, under the name the caller gives (`.lock`,
  `.lock-rank00000`).
- An output written under a temporary name and renamed into place (a
  centroid index) cannot hold its lock: the folder is replaced. Its lock is
  `.csst-locks/NAME.lock` in the folder that holds the output, NAME being the
  output's name after symlinks are resolved (so two spellings of one output
  share one lock). One hidden folder, whatever the number of outputs, instead
  of a `NAME.lock` beside each.

Why beside the output and not under a per-user cache or runtime folder: two
machines writing the same output on a shared filesystem (NFS, Lustre) must
contend for the same lock file, and only a file on that filesystem is seen
by both; a lock under one machine's ~/.cache or $XDG_RUNTIME_DIR would let
both write at once. (Linux's NFS client implements flock with the server's
byte-range locks, so the lock holds across machines there.)

The lock file holds the writer's process id, for the message. The kernel drops
the lock when the process dies, so a killed writer never blocks the next run;
the file itself is left in place (deleting it would let two writers hold locks
on two different files).
"""

from __future__ import annotations

import fcntl
import os

LOCK_FOLDER = ".csst-locks"  # beside an output renamed into place: where its lock lives


class OutputBusy(ValueError):
    """Another process is writing the same output."""


def lock_path(output: str | os.PathLike, name: str | None = None) -> str:
    """The lock file of `output`: `output/name` with a `name`, else `.csst-locks/NAME.lock` beside it."""
    output = os.fspath(output).rstrip(os.sep)
    if name:
        return os.path.join(output, name)
    real = os.path.realpath(output)
    return os.path.join(os.path.dirname(real), LOCK_FOLDER, os.path.basename(real) + ".lock")


class OutputLock:
    """Context manager: hold the exclusive lock of `output` (see the module docstring for where it lives)."""

    def __init__(self, output: str | os.PathLike, name: str | None = None) -> None:
        self.output = os.fspath(output).rstrip(os.sep)
        self.path = lock_path(self.output, name)
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
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
        return self

    def __exit__(self, *exc: object) -> bool:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False
