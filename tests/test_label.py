import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import webdataset as wds
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data import IGNORE
from csst_data.store import codecs, shards
from csst_data.store.shards import file_sha256
from csst_train.checkpoints import save_checkpoint
from csst_train.inference import normalise
from csst_train.inference import predict_probs
from csst_data.runs.shardrun import merge_ranks, rank_of
from csst_train.images import list_inputs, path_key
from csst_train.label import _from_probs, label, predict_labels
from csst_train.run_configs import LabelConfig
from csst_train.models import build_model

C = 5
NAMES = [f"c{i}" for i in range(C)]
H, W = 64, 96


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """(checkpoint path, model) of an untrained fastscnn whose outputs vary enough to be useful."""
    torch.manual_seed(0)
    model = build_model("fastscnn", C).eval()
    with torch.no_grad():
        # Freshly initialised logits are ~0; scaling the classifier spreads the confidences.
        model.classifier[-1].weight.mul_(1000)
    path = tmp_path_factory.mktemp("ckpt") / "teacher.pt"
    save_checkpoint({"model": model.state_dict(), "args": {"model": "fastscnn"}, "num_classes": C,
                     "class_names": NAMES}, path)
    return str(path), model


def _encode(img, fmt):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_images(root, names, sizes=None, seed=0):
    """Write smooth random images at `root/name` (format from the extension); returns {name: bytes}."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(names):
        h, w = sizes[i] if sizes else (H, W)
        small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        data = _encode(img, "PNG" if name.endswith(".png") else "JPEG")
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        out[name] = data
    return out


def read_out(root):
    """{key: raw sample} through the official webdataset reader."""
    return {s["__key__"]: s for s in wds.WebDataset(shards.shard_paths(root), shardshuffle=False, empty_check=False)}


def logits_of(model, images):
    with torch.no_grad():
        return model(normalise(torch.from_numpy(np.stack(images))))


def _image(sample):
    data = sample.get("jpg", sample.get("png"))
    return data, np.array(codecs.decode_image(data))  # writable, for torch.from_numpy


def verify_ok(root):
    result = CliRunner().invoke(cli, ["verify", str(root)])
    assert result.exit_code == 0, result.output
    return result


def test_labels_equal_model_argmax_and_outputs_are_complete(tmp_path, teacher):
    ckpt, model = teacher
    # Keys sort as listed; sizes give batches of 4 that split into runs of equal size.
    names = ["a/i0.png", "a/i1.jpg", "a/i2.png", "b/i3.jpg", "b/i4.jpg", "b/i5.png", "c/i6.jpg"]
    sizes = [(H, W), (H, W), (48, 64), (48, 64), (48, 64), (H, W), (H, W)]
    files = write_images(tmp_path / "in", names, sizes)
    items = list_inputs([str(tmp_path / "in")])
    summary = label(ckpt, items, tmp_path / "out", LabelConfig(device="cpu", batch_size=4, workers=0, shard_size=3,
                                                        keep_bytes=True))
    assert summary["labelled"] == 7 and summary["failed"] == 0 and summary["shards"] == 3
    out = read_out(tmp_path / "out")
    keys = [path_key(n) for n in names]
    assert sorted(out) == sorted(keys)
    # The oracle: the model on the same batches (4 consecutive images, split where the size changes).
    batches = [[0, 1], [2, 3], [4], [5, 6]]
    for batch in batches:
        imgs = [_image(out[keys[i]])[1] for i in batch]
        want = logits_of(model, imgs).argmax(1).numpy()
        for j, i in enumerate(batch):
            s = out[keys[i]]
            data, img = _image(s)
            assert data == files[names[i]]  # bytes passed through, not re-encoded
            assert ("png" in s) == names[i].endswith(".png")
            lab = codecs.decode_label(s["label.npy.zst"], C)
            assert lab.shape == sizes[i]
            np.testing.assert_array_equal(lab, want[j])
            meta = json.loads(s["json"])
            assert (meta["height"], meta["width"]) == sizes[i]
            assert meta["source"] == os.path.abspath(tmp_path / "in" / names[i])
            assert meta["class_histogram"] == np.bincount(lab.ravel(), minlength=C).tolist()
            probs = logits_of(model, [img]).softmax(1)[0]
            assert abs(meta["mean_confidence"] - probs.max(0).values.mean().item()) < 1e-4
    manifest = shards.read_manifest(tmp_path / "out")
    assert manifest["pseudo"] is True and manifest["num_classes"] == C and manifest["class_names"] == NAMES
    producer = manifest["producer"]
    assert producer["name"] == "csst label" and producer["checkpoint_sha256"] == file_sha256(ckpt)
    assert producer["options"]["scales"] == [1.0] and producer["options"]["topk"] == 0
    verify_ok(tmp_path / "out")


def test_topk_round_trip_within_quantisation(tmp_path, teacher):
    ckpt, model = teacher
    write_images(tmp_path / "in", ["x0.png", "x1.png"])
    label(ckpt, list_inputs([str(tmp_path / "in")]), tmp_path / "out",
          LabelConfig(device="cpu", batch_size=1, keep_bytes=True, workers=0, topk=3))
    out = read_out(tmp_path / "out")
    assert shards.read_manifest(tmp_path / "out")["fields"][-2:] == ["topk_idx.npy.zst", "topk_prob.npy.zst"]
    for key in ("x0", "x1"):
        s = out[key]
        idx, prob = codecs.decode_topk(s["topk_idx.npy.zst"], s["topk_prob.npy.zst"])
        assert idx.shape == prob.shape == (3, H, W) and idx.dtype == np.uint8
        probs = logits_of(model, [_image(s)[1]]).softmax(1)[0].numpy()
        want_p, want_i = torch.from_numpy(probs).topk(3, dim=0)
        np.testing.assert_array_equal(idx, want_i.numpy())
        assert np.abs(prob - want_p.numpy()).max() <= 1 / 255
        np.testing.assert_array_equal(idx[0], codecs.decode_label(s["label.npy.zst"]))
        assert np.all(np.diff(prob, axis=0) <= 0)  # sorted, most likely first


def test_min_confidence_sets_exactly_the_low_pixels_to_ignore(tmp_path, teacher):
    ckpt, model = teacher
    write_images(tmp_path / "in", ["m0.png"])
    img = np.asarray(Image.open(tmp_path / "in" / "m0.png").convert("RGB"))
    probs = logits_of(model, [img]).softmax(1)[0]
    conf, arg = probs.max(0)
    # A threshold half-way between two neighbouring confidences near the median,
    # so float rounding of the confidence cannot move a pixel across it.
    c = np.sort(conf.numpy().ravel())
    mid = len(c) // 2 + int(np.argmax(np.diff(c[len(c) // 2:len(c) // 2 + 50])))
    p = float((c[mid] + c[mid + 1]) / 2)
    assert c[mid + 1] - c[mid] > 1e-6
    label(ckpt, list_inputs([str(tmp_path / "in")]), tmp_path / "out", LabelConfig(device="cpu", workers=0, min_confidence=p))
    s = read_out(tmp_path / "out")["m0"]
    lab = codecs.decode_label(s["label.npy.zst"], C)
    low = (conf < p).numpy()
    assert 0 < low.sum() < low.size
    np.testing.assert_array_equal(lab == IGNORE, low)
    np.testing.assert_array_equal(lab[~low], arg.numpy()[~low])
    assert json.loads(s["json"])["ignored_pixels"] == int(low.sum())


def _run_cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "csst_cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_killed_run_resumes_with_every_key_once(tmp_path, teacher):
    ckpt, _ = teacher
    names = [f"d{i // 4}/k{i}.jpg" for i in range(9)]
    write_images(tmp_path / "in", names)
    out = tmp_path / "out"
    args = ["label", "--checkpoint", ckpt, "--input", str(tmp_path / "in"), "-o", str(out), "--device", "cpu",
            "--workers", "0", "--batch-size", "2", "--shard-size", "2"]
    # SIGKILL after the 5th sample written (tests/killing_cli.py counts the writes).
    killer = os.path.join(os.path.dirname(__file__), "killing_cli.py")
    killed = subprocess.run([sys.executable, killer, "writes=5", "--", *args], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr
    before = shards.read_manifest(out)["shards"]
    assert len(before) == 2  # two finished shards; the third was open when killed
    assert any(n.endswith(".tar.tmp") for n in os.listdir(out))
    done = _run_cli(args)
    assert done.returncode == 0, done.stderr
    assert "4 already stored" in done.stdout
    after = shards.read_manifest(out)["shards"]
    assert after[:2] == before  # finished shards kept as they were
    keys = [s["__key__"] for s in wds.WebDataset(shards.shard_paths(out), shardshuffle=False)]
    assert sorted(keys) == sorted(path_key(n) for n in names) and len(keys) == len(set(keys))
    assert not any(n.endswith(".tmp") for n in os.listdir(out))
    verify_ok(out)


def test_two_ranks_are_disjoint_and_merge(tmp_path, teacher):
    ckpt, _ = teacher
    names = [f"r{i:02d}.png" for i in range(10)]
    write_images(tmp_path / "in", names)
    items = list_inputs([str(tmp_path / "in")])
    out = tmp_path / "out"
    r0 = label(ckpt, items, out, LabelConfig(device="cpu", workers=0, shard_size=3), rank=0, world_size=2)
    assert not r0["merged"] and not os.path.exists(out / "manifest.json")
    with pytest.raises(ValueError, match=r"rank\(s\) \[1\]"):
        merge_ranks(out)
    r1 = label(ckpt, items, out, LabelConfig(device="cpu", workers=0, shard_size=3), rank=1, world_size=2)
    assert r1["merged"]
    keys = [[k for s in shards.read_manifest(out)["shards"] if s["name"].startswith(f"rank{r:05d}")
             for k in shards.shard_keys(out / s["name"])] for r in range(2)]
    assert keys[0] and keys[1] and not set(keys[0]) & set(keys[1])
    assert sorted(keys[0] + keys[1]) == [k for k, _ in items]
    assert all(rank_of(k, 2) == r for r in range(2) for k in keys[r])
    manifest = shards.read_manifest(out)
    assert manifest["pseudo"] is True and "rank" not in manifest and manifest["world_size"] == 2
    verify_ok(out)
    # `csst label --merge` rebuilds the same manifest.
    os.remove(out / "manifest.json")
    result = CliRunner().invoke(cli, ["label", "--merge", str(out)])
    assert result.exit_code == 0, result.output
    assert shards.read_manifest(out) == manifest


def test_corrupt_image_is_recorded_and_the_others_labelled(tmp_path, teacher):
    ckpt, _ = teacher
    good = write_images(tmp_path / "in", ["ok0.jpg", "ok1.png", "ok2.jpg"])
    (tmp_path / "in" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    png = good["ok1.png"]
    (tmp_path / "in" / "trunc.png").write_bytes(png[: len(png) // 2])
    out = tmp_path / "out"
    args = ["label", "--checkpoint", ckpt, "--input", str(tmp_path / "in"), "-o", str(out), "--device", "cpu",
            "--workers", "1", "--batch-size", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    failed = [json.loads(line) for line in open(out / "failed.jsonl")]
    assert sorted(f["key"] for f in failed) == ["bad", "trunc"]
    assert {f["path"] for f in failed} == {str(tmp_path / "in" / "bad.jpg"), str(tmp_path / "in" / "trunc.png")}
    assert all(f["reason"] for f in failed)
    assert sorted(read_out(out)) == ["ok0", "ok1", "ok2"]
    verify_ok(out)
    # Allowed failures: exit 0; the rerun skips what is stored and retries the bad ones.
    again = CliRunner().invoke(cli, args + ["--max-failures", "2"])
    assert again.exit_code == 0, again.output
    assert sorted(read_out(out)) == ["ok0", "ok1", "ok2"]


def test_keys_from_nested_folders_are_unique_and_dot_free(tmp_path):
    names = ["a/b.c/x.y.png", "a/b/x_y.jpg", "a b/x.jpg", "top.jpeg", "deep/er/est/z.png"]
    write_images(tmp_path / "in", names)
    items = list_inputs([str(tmp_path / "in")])
    keys = [k for k, _ in items]
    assert len(keys) == len(set(keys)) == 5 and keys == sorted(keys)
    for k in keys:
        shards.check_key(k)
        assert "." not in k and "/" not in k
    assert dict(items)["a_b_c_x_y"] == str(tmp_path / "in" / "a/b.c/x.y.png")
    assert path_key("aachen/aachen_000000_000019_leftImg8bit.png") == "aachen_aachen_000000_000019_leftImg8bit"
    # A glob and a single file give keys relative to their folder.
    assert [k for k, _ in list_inputs([str(tmp_path / "in" / "deep" / "**" / "*.png")])] == ["er_est_z"]
    # Two files mapping to one key: the error names both.
    write_images(tmp_path / "in", ["a_b/x_y.png"])
    with pytest.raises(ValueError, match=r"a/b/x_y\.jpg.*a_b/x_y\.png|a_b/x_y\.png.*a/b/x_y\.jpg"):
        list_inputs([str(tmp_path / "in")])
    with pytest.raises(ValueError, match="no such file"):
        list_inputs([str(tmp_path / "missing")])


def test_cityscapes_and_shard_set_inputs(tmp_path, teacher):
    ckpt, _ = teacher
    root = tmp_path / "cs" / "leftImg8bit" / "train_extra"
    write_images(root, ["aachen/aachen_000000_000019_leftImg8bit.png", "bonn/bonn_000001_000002_leftImg8bit.png"])
    # The Cityscapes preset keys images by name less suffix, as its index does.
    items = list_inputs([f"cityscapes:{tmp_path / 'cs'}:train_extra"])
    assert [k for k, _ in items] == ["aachen_000000_000019", "bonn_000001_000002"]
    label(ckpt, items, tmp_path / "p1", LabelConfig(device="cpu", workers=0, keep_bytes=True))
    # A shard set as input: keys kept, image bytes passed through again.
    items2 = list_inputs([str(tmp_path / "p1")])
    assert [k for k, _ in items2] == [k for k, _ in items]
    label(ckpt, items2, tmp_path / "p2", LabelConfig(device="cpu", workers=0, keep_bytes=True))
    a, b = read_out(tmp_path / "p1"), read_out(tmp_path / "p2")
    assert a.keys() == b.keys()
    assert json.loads(b[items[0][0]]["json"])["source"].endswith(f"shard-000000.tar#{items[0][0]}.png")
    for k in a:
        assert a[k]["png"] == b[k]["png"] and a[k]["label.npy.zst"] == b[k]["label.npy.zst"]
    with pytest.raises(ValueError, match="leftImg8bit/val"):
        list_inputs([f"cityscapes:{tmp_path / 'cs'}:val"])


def test_resume_refuses_other_options(tmp_path, teacher):
    ckpt, _ = teacher
    write_images(tmp_path / "in", ["o0.png"])
    items = list_inputs([str(tmp_path / "in")])
    label(ckpt, items, tmp_path / "out", LabelConfig(device="cpu", workers=0))
    with pytest.raises(ValueError, match="topk"):
        label(ckpt, items, tmp_path / "out", LabelConfig(device="cpu", workers=0, topk=2))
    result = CliRunner().invoke(cli, ["label", "--checkpoint", ckpt, "-o", str(tmp_path / "o2")])
    assert result.exit_code != 0 and "--input" in result.output


def test_cpu_fast_path_matches_the_probability_path(teacher):
    _, model = teacher
    rng = np.random.default_rng(3)
    x = normalise(torch.from_numpy(rng.integers(0, 256, (2, 40, 56, 3)).astype(np.uint8)))
    probs = predict_probs(model, x, C)
    for p in (None, 0.22):
        fast = predict_labels(model, x, C, min_confidence=p)  # numba kernel on logits
        want = _from_probs(probs, p, 0)  # the torch path used on CUDA and with TTA
        np.testing.assert_array_equal(fast.ids, want.ids)
        np.testing.assert_allclose(fast.mean_confidence, want.mean_confidence, atol=1e-6)
        # The stored confidence: round(p * 255) of the top probability, one grey level apart at most
        # (a polynomial exp against torch's).
        assert np.abs(fast.confidence.astype(int) - want.confidence.astype(int)).max() <= 1
        np.testing.assert_array_equal(want.confidence, np.rint(probs.max(1).values.numpy() * 255).astype(np.uint8))
    assert 0 < (fast.ids == IGNORE).sum() < fast.ids.size


def test_scales_and_flip_average_probabilities(tmp_path, teacher):
    ckpt, model = teacher
    write_images(tmp_path / "in", ["t0.png"])
    label(ckpt, list_inputs([str(tmp_path / "in")]), tmp_path / "out",
          LabelConfig(device="cpu", workers=0, scales=(0.5, 1.0), flip=True, keep_bytes=True))
    s = read_out(tmp_path / "out")["t0"]
    x = normalise(torch.from_numpy(_image(s)[1][None]))
    want = predict_probs(model, x, C, scales=(0.5, 1.0), flip=True).argmax(1)[0].numpy()
    np.testing.assert_array_equal(codecs.decode_label(s["label.npy.zst"]), want)
    assert not np.array_equal(want, logits_of(model, [_image(s)[1]]).argmax(1)[0].numpy())
    assert shards.read_manifest(tmp_path / "out")["producer"]["options"]["flip"] is True


def test_merge_manifests_checks_the_parts(tmp_path):
    for r, names in enumerate((NAMES, NAMES)):
        info = shards.SetInfo(num_classes=C, class_names=names, fields=["png", "label.npy.zst"],
                              extra={"rank": r, "pseudo": True})
        with shards.ShardWriter(tmp_path, info, prefix=f"rank{r:05d}", manifest=f"manifest-rank{r:05d}.json") as w:
            w.write({"__key__": f"k{r}", "label.npy.zst": codecs.encode_label(np.zeros((2, 2), np.uint8))})
    merged = shards.merge_manifests(tmp_path, ["manifest-rank00000.json", "manifest-rank00001.json"], drop=("rank",))
    assert [s["name"] for s in merged["shards"]] == ["rank00000-000000.tar", "rank00001-000000.tar"]
    assert "rank" not in merged and merged["pseudo"] is True
    assert shards.read_manifest(tmp_path) == merged
    verify_ok(tmp_path)
    with pytest.raises(shards.ShardError, match="listed by two"):
        shards.merge_manifests(tmp_path, ["manifest-rank00000.json", "manifest-rank00000.json"])
    part = json.loads((tmp_path / "manifest-rank00001.json").read_text())
    part["num_classes"] = 7
    (tmp_path / "manifest-rank00001.json").write_text(json.dumps(part))
    with pytest.raises(shards.ShardError, match="num_classes"):
        shards.merge_manifests(tmp_path, ["manifest-rank00000.json", "manifest-rank00001.json"])
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_fused_kernel_confidence_per_pixel():
    from csst_train.label import _argmax_confidence

    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((2, 7, 300, 1)) * rng.choice([0.1, 3, 40], (2, 1, 300, 1))).astype(np.float32)
    logits[0, :, 0] = 1.5  # a tie: the lowest class wins, as in torch
    logits[1, 2, 1] = 200.0  # one dominant class: other terms underflow
    labels = np.empty((2, 300, 1), np.uint8)
    conf = np.empty((2, 300))  # one pixel per row: row sums are pixel confidences
    stored = np.empty((2, 300, 1), np.uint8)
    _argmax_confidence(logits, -1.0, labels, conf, stored)
    want = torch.from_numpy(logits).double().softmax(1).max(1)
    np.testing.assert_allclose(conf, want.values.numpy()[..., 0], rtol=1e-6)
    # round(p * 255), but for a p within float32 rounding of a half level
    assert np.abs(stored[..., 0].astype(int) - np.rint(want.values.numpy()[..., 0] * 255)).max() <= 1
    assert (stored[..., 0] == np.rint(want.values.numpy()[..., 0] * 255)).mean() > 0.99
    np.testing.assert_array_equal(labels, torch.from_numpy(logits).argmax(1).numpy())
    assert labels[0, 0, 0] == 0 and labels[1, 1, 0] == 2 and conf[1, 1] == 1.0


def test_images_are_stored_as_restart_marker_jpegs(tmp_path, teacher):
    """By default JPEG inputs are transcoded losslessly and PNG inputs encoded, as `csst pack` does."""
    from csst_data.jpeg import structure as jpeg

    ckpt, _ = teacher
    names = ["j0.jpg", "j1.jpg", "p0.png"]
    files = write_images(tmp_path / "in", names)
    items = list_inputs([str(tmp_path / "in")])
    label(ckpt, items, tmp_path / "out", LabelConfig(device="cpu", workers=0))
    label(ckpt, items, tmp_path / "kept", LabelConfig(device="cpu", workers=0, keep_bytes=True))
    out, kept = read_out(tmp_path / "out"), read_out(tmp_path / "kept")
    for name in names:
        key = path_key(name)
        s = out[key]
        assert "png" not in s and jpeg.can_splice(jpeg.parse(s["jpg"]))
        assert s["label.npy.zst"] == kept[key]["label.npy.zst"]
        how = json.loads(s["json"])["image"]
        if name.endswith(".jpg"):
            assert how == "transcoded"
            assert np.array_equal(codecs.decode_image(s["jpg"]), codecs.decode_image(files[name]))  # lossless
        else:
            assert how == "encoded"
    options = shards.read_manifest(tmp_path / "out")["producer"]["options"]
    assert options["keep_bytes"] is False and options["quality"] == 95
    verify_ok(tmp_path / "out")
