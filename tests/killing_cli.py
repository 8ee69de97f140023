"""Run the csst CLI in this process and SIGKILL it at a counted call, from the test side.

    python tests/killing_cli.py writes=5 -- label --checkpoint ...   # killed after the 5th sample written
    python tests/killing_cli.py uploads=3 -- pack SRC -o s3://...    # killed after the 3rd object uploaded

`writes` counts ShardWriter.write calls that returned (a sample in the open
shard), `uploads` counts objects sent to a store (storage.upload and
storage.write). The library has no hook for this: the counting wrapper lives
here, so a kill lands at the same point on every run, however fast the machine.
"""

import functools
import os
import signal
import sys


def main(argv):
    what, count = argv[0].split("=")
    assert argv[1] == "--", argv
    if what == "writes":
        from csst_data.store.shards import ShardWriter

        _count_into(ShardWriter, "write", {"n": 0}, int(count))
    elif what == "uploads":
        from csst_data.store import storage

        counter = {"n": 0}
        for name in ("upload", "write"):
            _count_into(storage, name, counter, int(count))
    else:
        raise SystemExit(f"unknown count {what!r}")
    from csst_cli.main import cli

    cli.main(argv[2:], prog_name="csst")


def _count_into(owner, name, counter, count):
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        counter["n"] += 1
        if counter["n"] >= count:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    main(sys.argv[1:])
