import io
import json
import os
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import webdataset as wds
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data.store import codecs, shards

NAMES = [f"c{i}" for i in range(5)]


def make_sample(i, h=24, w=32):
    rng = np.random.default_rng(i)
    img = rng.integers(0, 255, (h, w, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    label = rng.integers(0, 5, (h, w)).astype(np.uint8)
    label[:2] = 255
    return {"__key__": f"s{i:05d}", "jpg": buf.getvalue(), "label.npy.zst": codecs.encode_label(label, 5),
            "json": {"i": i}}, label


def write_set(root, n, maxcount=4, **kw):
    labels = {}
    with shards.ShardWriter(root, shards.SetInfo(num_classes=5, class_names=NAMES), maxcount=maxcount, **kw) as w:
        for i in range(n):
            sample, label = make_sample(i)
            w.write(sample)
            labels[sample["__key__"]] = (sample, label)
    return labels


def test_webdataset_reader_returns_every_sample(tmp_path):
    written = write_set(tmp_path, 10)
    manifest = shards.read_manifest(tmp_path)
    assert [s["samples"] for s in manifest["shards"]] == [4, 4, 2]
    assert manifest["num_classes"] == 5 and manifest["class_names"] == NAMES
    urls = shards.shard_paths(tmp_path)
    raw = {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}
    assert set(raw) == set(written)
    for key, (sample, label) in written.items():
        assert raw[key]["jpg"] == sample["jpg"]  # byte-identical images
    decoded = wds.WebDataset(urls, shardshuffle=False).decode(*codecs.wds_handlers(), "rgb8")
    n = 0
    for s in decoded:
        assert np.array_equal(s["label.npy.zst"], written[s["__key__"]][1])
        assert s["jpg"].shape == (24, 32, 3)
        n += 1
    assert n == 10
    assert [s["__key__"] for s in shards.iter_samples(tmp_path)] == sorted(written)


def test_manifest_hash_and_size_match_files(tmp_path):
    import hashlib

    write_set(tmp_path, 6)
    for s in shards.read_manifest(tmp_path)["shards"]:
        data = open(tmp_path / s["name"], "rb").read()
        assert len(data) == s["bytes"] and hashlib.sha256(data).hexdigest() == s["sha256"]


def test_tar_headers_are_gnu_or_ustar_not_pax(tmp_path):
    write_set(tmp_path, 3)
    path = shards.shard_paths(tmp_path)[0]
    data = open(path, "rb").read()
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert members and all(m.type == tarfile.REGTYPE for m in members)
    assert all(m.pax_headers == {} for m in members)
    for m in members:  # magic field of each raw header
        assert data[m.offset + 257:m.offset + 263] in (b"ustar ", b"ustar\x00")
        assert data[m.offset + 156:m.offset + 157] == b"0"  # no 'x'/'g' PAX records


def test_shards_are_byte_reproducible(tmp_path):
    write_set(tmp_path / "a", 5)
    write_set(tmp_path / "b", 5)
    for s in ("shard-000000.tar", "shard-000001.tar"):
        assert (tmp_path / "a" / s).read_bytes() == (tmp_path / "b" / s).read_bytes()


def test_maxsize_rotation(tmp_path):
    write_set(tmp_path, 6, maxcount=100, maxsize=1)
    assert [s["samples"] for s in shards.read_manifest(tmp_path)["shards"]] == [1] * 6


def test_member_offsets_allow_random_access(tmp_path):
    written = write_set(tmp_path, 7)
    reader = shards.RangeReader()
    seen = 0
    for path in shards.shard_paths(tmp_path):
        for key, members in shards.group_members(path).items():
            off, size = members["jpg"]
            assert reader.read(path, off, size) == written[key][0]["jpg"]
            off, size = members["label.npy.zst"]
            assert np.array_equal(codecs.decode_label(reader.read(path, off, size)), written[key][1])
            seen += 1
    reader.close()
    assert seen == 7


@pytest.mark.parametrize("key", ["a.b", "dir/x", "", "with space", None])
def test_bad_keys_rejected(tmp_path, key):
    with shards.ShardWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="invalid sample key"):
            w.write({"__key__": key, "txt": "x"})


def test_duplicate_key_rejected(tmp_path):
    with shards.ShardWriter(tmp_path) as w:
        w.write({"__key__": "a", "txt": "x"})
        with pytest.raises(ValueError, match="duplicate sample key 'a'"):
            w.write({"__key__": "a", "txt": "y"})


def test_refuses_to_overwrite_existing_set(tmp_path):
    write_set(tmp_path, 2)
    with pytest.raises(FileExistsError, match="resume=True"):
        shards.ShardWriter(tmp_path)


def test_exception_mid_shard_then_resume(tmp_path):
    with pytest.raises(RuntimeError):
        with shards.ShardWriter(tmp_path, shards.SetInfo(num_classes=5), maxcount=4) as w:
            for i in range(10):
                if i == 6:
                    raise RuntimeError("boom")
                w.write(make_sample(i)[0])
    manifest = shards.read_manifest(tmp_path)
    assert [s["samples"] for s in manifest["shards"]] == [4]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    _resume_and_check(tmp_path, 10)


KILLER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_shards import make_sample
from csst_data.store import shards
w = shards.ShardWriter({root!r}, shards.SetInfo(num_classes=5), maxcount=4)
for i in range(10):
    if i == 6:
        os.kill(os.getpid(), signal.SIGKILL)
    w.write(make_sample(i)[0])
"""


def test_killed_writer_then_resume(tmp_path):
    code = KILLER.format(tests=os.path.dirname(__file__), root=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -signal.SIGKILL
    assert [s["samples"] for s in shards.read_manifest(tmp_path)["shards"]] == [4]
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tar.tmp")]  # the unfinished shard
    _resume_and_check(tmp_path, 10)


def _resume_and_check(root, n):
    w = shards.ShardWriter(root, maxcount=4, resume=True)
    assert w.existing_keys == {f"s{i:05d}" for i in range(4)}
    assert not [p for p in os.listdir(root) if p.endswith(".tmp")]
    for i in range(n):
        sample = make_sample(i)[0]
        if sample["__key__"] not in w.existing_keys:
            w.write(sample)
    w.close()
    keys = [s["__key__"] for s in shards.iter_samples(root)]
    assert sorted(keys) == [f"s{i:05d}" for i in range(n)]
    assert len(keys) == len(set(keys))
    manifest = shards.read_manifest(root)
    assert manifest["num_classes"] == 5 and sum(s["samples"] for s in manifest["shards"]) == n
    assert CliRunner().invoke(cli, ["verify", str(root)]).exit_code == 0


def test_verify_passes_on_clean_set(tmp_path):
    write_set(tmp_path, 9)
    res = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "9 samples verified" in res.output


def test_verify_fails_on_flipped_byte(tmp_path):
    write_set(tmp_path, 9)
    path = tmp_path / "shard-000001.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF  # inside the first member's data
    path.write_bytes(bytes(data))
    res = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert res.exit_code == 1
    assert "shard-000001.tar" in res.output and "checksum mismatch" in res.output


def test_verify_fails_on_truncated_shard(tmp_path):
    write_set(tmp_path, 9)
    path = tmp_path / "shard-000000.tar"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    res = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert res.exit_code == 1
    assert "shard-000000.tar" in res.output and "truncated" in res.output


def test_verify_fails_on_missing_unlisted_and_undecodable(tmp_path):
    write_set(tmp_path, 9)
    os.rename(tmp_path / "shard-000002.tar", tmp_path / "shard-000009.tar")
    res = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert res.exit_code == 1
    assert "missing" in res.output and "unlisted" in res.output
    # A bad label whose checksum is consistent: only decoding finds it.
    other = tmp_path / "other"
    with shards.ShardWriter(other, shards.SetInfo(num_classes=5)) as w:
        w.write({"__key__": "bad", "label.npy.zst": b"garbage"})
    res = CliRunner().invoke(cli, ["verify", str(other)])
    assert res.exit_code == 1 and "undecodable member bad.label.npy.zst" in res.output


def test_verify_fails_on_count_mismatch(tmp_path):
    write_set(tmp_path, 4)
    mpath = tmp_path / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["shards"][0]["samples"] = 5
    mpath.write_text(json.dumps(manifest))
    res = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert res.exit_code == 1 and "count mismatch" in res.output


def test_verify_not_a_shard_set(tmp_path):
    res = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert res.exit_code == 1 and "not a csst shard set" in res.output
