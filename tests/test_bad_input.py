"""Bad input never costs a run nor gives a silent wrong result (issue 15, the items done so far)."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_demo import synth
from csst_data.store.codecs import decode_image
from csst_data.store.locks import OutputLock, lock_path


def png(img, mode=None, **kw):
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img, mode=mode)).save(buf, format="PNG", **kw)
    return buf.getvalue()


# -- 1. every image mode a photo can have ------------------------------------------------------
def test_image_modes_decode_to_the_right_8_bit_rgb():
    import cv2

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    ok, grey16 = cv2.imencode(".png", wide)
    got = decode_image(grey16.tobytes())
    want = np.round(wide.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert got.shape == (6, 7, 3) and np.array_equal(got[..., 0], want) and np.array_equal(got[..., 2], want)
    rgb16 = rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    ok, data = cv2.imencode(".png", rgb16[..., ::-1])
    assert np.abs(decode_image(data.tobytes()).astype(int) - (rgb16 >> 8)).max() <= 1  # not all white
    la = Image.fromarray(rng.integers(0, 256, (6, 7, 2), dtype=np.uint8), mode="LA")
    assert np.array_equal(decode_image(png(la))[..., 1], np.asarray(la)[..., 0])
    colours = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120]], np.uint8)
    ids = rng.integers(0, 4, (6, 7), dtype=np.uint8)
    p = Image.fromarray(ids, mode="P")
    p.putpalette(colours.ravel().tolist() + [0] * 756)
    assert np.array_equal(decode_image(png(p, transparency=0)), colours[ids])  # transparency dropped, colours kept
    one = Image.fromarray(rng.integers(0, 2, (6, 7), dtype=np.uint8) * 255).convert("1")
    assert set(np.unique(decode_image(png(one)))) <= {0, 255}
    cmyk = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(cmyk, format="JPEG", quality=95)
    assert decode_image(cmyk.getvalue())[0, 0].tolist() == pytest.approx([255, 0, 255], abs=3)


# -- 5. two writers on one output ----------------------------------------------------------------
def test_a_second_writer_gets_the_lock_message_and_changes_nothing(tmp_path):
    synth.write_dataset(tmp_path / "d", synth.SynthOptions(3, 0, 0, size=(32, 64)))
    out = tmp_path / "i.zarr"
    with OutputLock(out):
        r = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "d" / "labeled"), "-o", str(out)])
    assert r.exit_code == 1 and f"is being written by process {os.getpid()}" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()


# Runs the CLI and stops itself (SIGSTOP) as soon as it holds its output lock: the test then
# starts the second writer while the first is known to hold the lock, and continues it (SIGCONT).
STOP_WHEN_LOCKED = """
import os, signal, sys
from csst_data.store import locks
enter = locks.OutputLock.__enter__
def stop_when_locked(self):
    held = enter(self)
    os.kill(os.getpid(), signal.SIGSTOP)
    return held
locks.OutputLock.__enter__ = stop_when_locked
from csst_cli.main import cli
cli.main(sys.argv[1:], prog_name="csst")
"""


def _wait_stopped(proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.02)
    raise AssertionError(f"process {proc.pid} never stopped holding its lock (exit status {proc.poll()})")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process state from /proc")
def test_two_index_builds_started_together(tmp_path):
    synth.write_dataset(tmp_path / "d", synth.SynthOptions(4, 0, 0, size=(32, 64)))
    args = ["index", "build", str(tmp_path / "d" / "labeled"), "-o", str(tmp_path / "i.zarr"), "--no-progress"]
    first = subprocess.Popen([sys.executable, "-c", STOP_WHEN_LOCKED, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_stopped(first)  # the first holds the lock
        second = subprocess.run([sys.executable, "-m", "csst_cli.main", *args], capture_output=True, text=True)
    finally:
        first.send_signal(signal.SIGCONT)
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 1 and f"is being written by process {first.pid}" in second.stderr
    r = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "d" / "labeled"), "-o", str(tmp_path / "one.zarr")])
    assert r.exit_code == 0
    from test_index import assert_same_index

    assert_same_index(tmp_path / "i.zarr", tmp_path / "one.zarr")


def test_a_killed_writers_lock_never_blocks_and_no_lock_file_beside_the_output(tmp_path):
    out = tmp_path / "i.zarr"
    code = ("import os, signal, sys; from csst_data.store.locks import OutputLock; "
            "OutputLock(sys.argv[1]).__enter__(); os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code, str(out)])
    assert killed.returncode == -signal.SIGKILL
    assert os.path.exists(lock_path(out))  # left behind by the killed writer, still holding its pid
    with OutputLock(out):  # the kernel dropped its lock with the process
        pass
    assert sorted(os.listdir(tmp_path)) == [".csst-locks"]  # no i.zarr.lock beside the output
    os.symlink(tmp_path, tmp_path / "alias")
    with OutputLock(tmp_path / "alias" / "i.zarr") as again:
        assert again.path == lock_path(out)  # one output, one lock, however it is spelled


# -- 12. no orphaned workers ---------------------------------------------------------------------
def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killed_label_leaves_no_worker_behind(tmp_path):
    from csst_train.checkpoints import save_checkpoint
    from csst_train.models import build_model

    model = build_model("fastscnn", 3)
    save_checkpoint({"model": model.state_dict(), "args": {"model": "fastscnn"}, "num_classes": 3,
                     "class_names": ["a", "b", "c"]}, tmp_path / "t.pt")
    os.makedirs(tmp_path / "in")
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(tmp_path / "in" / f"{i}.png")
    proc = subprocess.Popen([sys.executable, "-m", "csst_cli.main", "label", "--checkpoint", str(tmp_path / "t.pt"),
                             "--input", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--workers", "2",
                             "--batch-size", "1", "--device", "cpu", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    deadline = time.time() + 60
    while len(workers) < 2 and time.time() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "the label run ended before its workers were seen"
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{w}") and _alive(w) for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}") and _alive(w)]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- 4. class mismatches --------------------------------------------------------------------------
def test_eval_refuses_a_checkpoint_of_other_classes(tmp_path):
    from csst_train.checkpoints import save_checkpoint
    from csst_train.models import build_model

    synth.write_dataset(tmp_path / "d", synth.SynthOptions(0, 0, 2, size=(32, 64)))  # 19 classes named like Cityscapes'
    save_checkpoint({"model": build_model("fastscnn", 41).state_dict(), "args": {"model": "fastscnn"},
                     "num_classes": 41, "class_names": [str(i) for i in range(41)]}, tmp_path / "c41.pt")
    r = CliRunner().invoke(cli, ["eval", "--checkpoint", str(tmp_path / "c41.pt"), "--data", str(tmp_path / "d" / "val"),
                                 "--json", str(tmp_path / "e.json"), "--no-progress"])
    assert r.exit_code == 1 and "has 19 classes" in r.output and "c41.pt has 41" in r.output
    assert not (tmp_path / "e.json").exists()


# -- 3. validation data is checked before the first step ---------------------------------------------
@pytest.mark.parametrize("problem", ["no images", "class id out of range", "sizes differ"])
def test_bad_val_fails_before_the_first_step(tmp_path, problem):
    synth.write_dataset(tmp_path / "d", synth.SynthOptions(4, 0, 0, size=(32, 64)))
    build = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "d" / "labeled"), "-o", str(tmp_path / "i.zarr")])
    assert build.exit_code == 0
    masks, images = tmp_path / "val" / "masks", tmp_path / "val" / "images"
    os.makedirs(masks)
    os.makedirs(images)
    for i in range(2):
        label = np.zeros((32, 64), np.uint8)
        if problem == "class id out of range" and i == 1:
            label[3, 3] = 40
        Image.fromarray(label, mode="L").save(masks / f"v{i}.png")
        size = (64, 32) if not (problem == "sizes differ" and i == 1) else (60, 32)
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(images / f"v{i}.jpg")
    extra = [] if problem == "no images" else ["--images", str(images)]
    r = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "d" / "labeled"), "--index", str(tmp_path / "i.zarr"),
                                 "--val", str(masks), *extra, "-o", str(tmp_path / "run"), "--epochs", "1", "--crop", "32",
                                 "--workers", "0", "--no-progress"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    message = {"no images": "v0.png: no image", "class id out of range": "v1.png': values [40]",
               "sizes differ": "v1.jpg: image is 32x60 but its label"}[problem]
    assert message in r.output, r.output
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


# -- 7. a truncated shard ------------------------------------------------------------------------
def test_truncated_shard_makes_the_index_stale_and_commands_say_so(tmp_path):
    synth.write_dataset(tmp_path / "d", synth.SynthOptions(0, 0, 4, size=(32, 64)))
    val = tmp_path / "d" / "val"
    assert CliRunner().invoke(cli, ["index", "build", str(val), "-o", str(tmp_path / "i.zarr")]).exit_code == 0
    shard = val / "shard-000000.tar"
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    r = CliRunner().invoke(cli, ["index", "stats", str(tmp_path / "i.zarr")])
    assert r.exit_code == 1 and "index is stale" in r.output and "Traceback" not in r.output
    from csst_train.checkpoints import save_checkpoint
    from csst_train.models import build_model

    save_checkpoint({"model": build_model("fastscnn", 19).state_dict(), "args": {"model": "fastscnn"},
                     "num_classes": 19, "class_names": list(synth.CLASS_NAMES)}, tmp_path / "c.pt")
    for argv in (["eval", "--checkpoint", str(tmp_path / "c.pt"), "--data", str(val), "--no-progress"],
                 ["label", "--checkpoint", str(tmp_path / "c.pt"), "--input", str(val), "-o", str(tmp_path / "p"),
                  "--workers", "0", "--no-progress"]):
        r = CliRunner().invoke(cli, argv)
        assert r.exit_code == 1 and "shard-000000.tar" in r.output and "Traceback" not in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output


# -- 10. failed.jsonl lists this run's failures ---------------------------------------------------------
def test_failed_jsonl_is_rewritten_by_each_run(tmp_path):
    from test_pack import scene_folder

    argv = scene_folder(tmp_path, 3) + ["-o", str(tmp_path / "p"), "--no-progress"]
    good = (tmp_path / "2.jpg").read_bytes()
    (tmp_path / "2.jpg").write_bytes(good[:200])
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 1 and (tmp_path / "p" / "failed.jsonl").read_text().count("\n") == 1
    (tmp_path / "2.jpg").write_bytes(good)  # the input is fixed
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 0 and "0 failed" in r.output
    assert not (tmp_path / "p" / "failed.jsonl").exists()


# -- 9. verify: unsafe member names, leftover temporary files, unfinished runs ---------------------
def test_verify_reports_unsafe_names_tmp_files_and_unfinished_runs(tmp_path):
    import tarfile

    from csst_data.store import codecs, shards

    with shards.ShardWriter(tmp_path / "s", shards.SetInfo(num_classes=3)) as w:
        w.write({"__key__": "a", "label.npy.zst": codecs.encode_label(np.zeros((2, 2), np.uint8))})
    (tmp_path / "s" / "shard-000001.tar.tmp").write_bytes(b"partial")
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "s"), "--no-progress"])
    assert r.exit_code == 0 and "ok: 1 shard(s), 1 samples verified" in r.output  # the .tmp file is not a shard
    # A member whose name escapes its folder.
    bad = tmp_path / "s" / "shard-000000.tar"
    with tarfile.open(bad, "w", format=tarfile.GNU_FORMAT) as tar:
        data = codecs.encode_label(np.zeros((2, 2), np.uint8))
        info = tarfile.TarInfo("../a.label.npy.zst")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    manifest = shards.read_manifest(tmp_path / "s")
    manifest["shards"][0].update(bytes=bad.stat().st_size, sha256=shards.file_sha256(bad))
    shards.atomic_write_json(tmp_path / "s" / "manifest.json", manifest)
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "s"), "--no-progress"])
    assert r.exit_code == 1 and "unsafe or invalid member name '../a.label.npy.zst'" in r.output
    r = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "s"), "-o", str(tmp_path / "i.zarr")])
    assert r.exit_code == 1 and "unsafe or invalid member name" in r.output
    # An unfinished two-rank run: rank 1 never finished.
    from csst_data.runs.pack import PackOptions, pack

    synth.write_dataset(tmp_path / "d", synth.SynthOptions(4, 0, 0, size=(32, 64)))
    pack([tmp_path / "d" / "labeled"], tmp_path / "p", PackOptions(workers=1), rank=0, world_size=2)
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "p"), "--no-progress"])
    assert r.exit_code == 1 and "unfinished multi-rank run: rank(s) [1] of 2 have not finished" in r.output
    r = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "p"), "-o", str(tmp_path / "j.zarr")])
    assert r.exit_code == 2 and "unfinished multi-rank run" in r.output and "no masks" not in r.output


# -- 11. messages that say what is wrong --------------------------------------------------------------
def test_shards_without_manifest_are_named_as_such(tmp_path):
    from csst_data.store import codecs, shards

    with shards.ShardWriter(tmp_path / "s", shards.SetInfo(num_classes=3)) as w:
        w.write({"__key__": "a", "label.npy.zst": codecs.encode_label(np.zeros((2, 2), np.uint8))})
    os.remove(tmp_path / "s" / "manifest.json")
    r = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "s"), "-o", str(tmp_path / "i.zarr")])
    assert r.exit_code == 2 and "holds .tar shards but no manifest.json" in r.output
    os.makedirs(tmp_path / "empty")
    r = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "empty"), "-o", str(tmp_path / "j.zarr")])
    assert r.exit_code == 1 and "no masks ending in '.png'" in r.output and "Traceback" not in r.output


def test_eval_names_the_file_of_an_out_of_range_class_id(tmp_path):
    from csst_train.checkpoints import save_checkpoint
    from csst_train.models import build_model

    os.makedirs(tmp_path / "m")
    os.makedirs(tmp_path / "i")
    for i, top in enumerate((2, 7)):
        Image.fromarray(np.full((16, 24), top, np.uint8), mode="L").save(tmp_path / "m" / f"x{i}.png")
        Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / "i" / f"x{i}.jpg")
    save_checkpoint({"model": build_model("fastscnn", 3).state_dict(), "args": {"model": "fastscnn"},
                     "num_classes": 3, "class_names": ["a", "b", "c"]}, tmp_path / "c.pt")
    r = CliRunner().invoke(cli, ["eval", "--checkpoint", str(tmp_path / "c.pt"), "--data", str(tmp_path / "m"),
                                 "--images", str(tmp_path / "i"), "--no-progress"])
    assert r.exit_code == 1 and "x1.png" in r.output and "values [7]" in r.output
    assert len(r.output.strip().splitlines()) == 1


# -- 6 (part) and 11: a corrupt or smaller image during training -----------------------------------------
@pytest.mark.parametrize("problem", ["corrupt", "half size"])
def test_training_names_the_bad_image_in_one_line(tmp_path, problem):
    from csst_data.store import codecs, shards
    from csst_data.index import build_index

    rng = np.random.default_rng(0)
    with shards.ShardWriter(tmp_path / "s", shards.SetInfo(num_classes=3), maxcount=4) as w:
        for i in range(4):
            label = rng.integers(0, 3, (32, 48)).astype(np.uint8)
            h, w_ = (16, 24) if problem == "half size" and i == 2 else (32, 48)
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (h, w_, 3), dtype=np.uint8)).save(buf, format="JPEG")
            data = buf.getvalue()
            if problem == "corrupt" and i == 2:
                data = data[:40] + b"\x00" * 30
            w.write({"__key__": f"k{i}", "jpg": data, "label.npy.zst": codecs.encode_label(label, 3)})
    build_index([tmp_path / "s"], tmp_path / "i.zarr")
    r = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "s"), "--index", str(tmp_path / "i.zarr"),
                                 "-o", str(tmp_path / "run"), "--epochs", "1", "--crop", "32", "--batch-size", "2",
                                 "--workers", "1", "--sampling", "uniform", "--no-progress"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "shard-000000.tar:k2 (image at byte" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    if problem == "half size":
        assert "image is 16x24 but its label is 32x48" in r.output


def test_index_build_check_images_finds_a_bad_image_before_training(tmp_path):
    from csst_data.store import codecs, shards

    rng = np.random.default_rng(1)
    with shards.ShardWriter(tmp_path / "s", shards.SetInfo(num_classes=3)) as w:
        for i in range(3):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)).save(buf, format="JPEG")
            data = buf.getvalue() if i != 1 else buf.getvalue()[:30]
            w.write({"__key__": f"k{i}", "jpg": data, "label.npy.zst": codecs.encode_label(np.zeros((16, 24), np.uint8))})
    argv = ["index", "build", str(tmp_path / "s"), "--no-progress"]
    assert CliRunner().invoke(cli, argv + ["-o", str(tmp_path / "a.zarr")]).exit_code == 0  # labels alone are fine
    r = CliRunner().invoke(cli, argv + ["-o", str(tmp_path / "b.zarr"), "--check-images"])
    assert r.exit_code == 1 and "shard-000000.tar:k1 (image at byte" in r.output and "cannot decode" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "b.zarr").exists()


# -- 2. EXIF orientation --------------------------------------------------------------------------
def _phone_jpeg(h, w, orientation, seed=0):
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def test_stored_pixels_and_labels_never_disagree_under_exif_orientation(tmp_path):
    from csst_data.jpeg import structure as jpeg
    from csst_data.runs.pack import PackOptions, pack

    os.makedirs(tmp_path / "m")
    data = _phone_jpeg(32, 48, 6)
    (tmp_path / "m" / "p.jpg").write_bytes(data)
    Image.fromarray(np.zeros((32, 48), np.uint8), mode="L").save(tmp_path / "m" / "p_gt.png")  # drawn on the stored pixels
    from csst_data.datasets import FolderOptions, parse_source

    ds = parse_source(str(tmp_path / "m"), FolderOptions(img_suffix=".jpg", seg_map_suffix="_gt.png", num_classes=3))
    s = pack([ds], tmp_path / "packed", PackOptions(workers=1))
    assert s["transcoded"] == 1
    import webdataset as wds

    from csst_data.store import shards

    (sample,) = wds.WebDataset(shards.shard_paths(tmp_path / "packed"), shardshuffle=False)
    # The stored copy shows in every viewer as csst reads it: the tag is reset, the pixels untouched.
    assert jpeg.exif_orientation(sample["jpg"]) == 1
    assert np.array_equal(decode_image(sample["jpg"]), decode_image(data))
    assert json.loads(sample["json"])["exif_orientation"] == 6
    # A mask drawn on the rotated view: a one-line error that says so.
    Image.fromarray(np.zeros((48, 32), np.uint8), mode="L").save(tmp_path / "m" / "p_gt.png")
    with pytest.raises(ValueError, match="EXIF orientation 6 rotates it.*exiftran"):
        ds.check(3)


# -- 8. disk full and read-only outputs (real small / read-only file systems) --------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, read_only) -> a tmpfs folder; unmounted afterwards. Skips where mounting is not allowed."""
    mounted = []

    def mount(size="256k", read_only=False):
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
        mounted.append(path)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _tiny_run(tmp_path):
    synth.write_dataset(tmp_path / "d", synth.SynthOptions(4, 0, 2, size=(32, 64)))
    from csst_data.index import build_index

    build_index([tmp_path / "d" / "labeled"], tmp_path / "i.zarr")
    return ["train", "--data", str(tmp_path / "d" / "labeled"), "--index", str(tmp_path / "i.zarr"), "--epochs", "1",
            "--crop", "32", "--batch-size", "2", "--workers", "0", "--no-progress"]


def test_disk_full_while_training_is_one_line(tmp_path, tmpfs):
    out = tmpfs("512k") / "run"  # room for the run folder, not for a Fast-SCNN checkpoint (~5 MB)
    r = CliRunner().invoke(cli, _tiny_run(tmp_path) + ["-o", str(out)])
    assert r.exit_code == 1 and "last.pt: cannot write the checkpoint (no space left on device)" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (out / "last.pt").exists() and not (out / "last.pt.tmp").exists()


def test_read_only_outputs_are_refused_before_any_work(tmp_path, tmpfs):
    ro = tmpfs("64k", read_only=True)
    r = CliRunner().invoke(cli, _tiny_run(tmp_path) + ["-o", str(ro / "run")])
    assert r.exit_code == 2 and "not writable" in r.output and "Traceback" not in r.output
    from csst_train.checkpoints import save_checkpoint
    from csst_train.models import build_model

    save_checkpoint({"model": build_model("fastscnn", 19).state_dict(), "args": {"model": "fastscnn"},
                     "num_classes": 19, "class_names": list(synth.CLASS_NAMES)}, tmp_path / "c.pt")
    r = CliRunner().invoke(cli, ["eval", "--checkpoint", str(tmp_path / "c.pt"), "--data", str(tmp_path / "d" / "val"),
                                 "--json", str(ro / "e.json"), "--no-progress"])
    assert r.exit_code == 2 and "e.json: not writable" in r.output and "mIoU" not in r.output
    r = CliRunner().invoke(cli, ["index", "stats", str(tmp_path / "i.zarr"), "--plot", str(ro / "p.png")])
    assert r.exit_code == 2 and "p.png: not writable" in r.output


def test_max_bad_samples_skips_and_records(tmp_path):
    from csst_data.store import codecs, shards
    from csst_data.index import build_index

    rng = np.random.default_rng(0)
    with shards.ShardWriter(tmp_path / "s", shards.SetInfo(num_classes=3), maxcount=8) as w:
        for i in range(6):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(buf, format="JPEG")
            data = buf.getvalue() if i != 3 else buf.getvalue()[:40] + b"\x00" * 30
            w.write({"__key__": f"k{i}", "jpg": data, "label.npy.zst": codecs.encode_label(
                rng.integers(0, 3, (32, 48)).astype(np.uint8), 3)})
    build_index([tmp_path / "s"], tmp_path / "i.zarr")
    argv = ["train", "--data", str(tmp_path / "s"), "--index", str(tmp_path / "i.zarr"), "--epochs", "2", "--crop", "32",
            "--batch-size", "2", "--workers", "1", "--sampling", "uniform", "--no-progress"]
    r = CliRunner().invoke(cli, argv + ["-o", str(tmp_path / "run"), "--max-bad-samples", "1"])
    assert r.exit_code == 0, r.output
    bad = [json.loads(line) for line in open(tmp_path / "run" / "bad_samples.jsonl")]
    assert {b["key"] for b in bad} == {"k3"} and all("cannot decode" in b["reason"] for b in bad)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(rows) == 2 and all(r_["crops"] == 6 for r_ in rows)  # every crop was made, from readable images
