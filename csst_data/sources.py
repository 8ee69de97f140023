"""Every kind of dataset csst reads labels (and images) from, in one place.

A source is a dict (`resolve_source` fills in the defaults and absolute paths):

| kind | fields | samples |
| --- | --- | --- |
| `shards` | path | a csst shard set (folder with manifest.json) |
| `masks` | path, pattern, images | mask PNGs (mode L, or palette P whose indices are class ids) in a folder (recursively) or matching a glob; optionally paired by file stem with the images in `images` |
| `cityscapes` | path, split | `leftImg8bit/{split}/{city}/*_leftImg8bit.png` with `gtFine/{split}/{city}/*_gtFine_labelIds.png`, label ids mapped to train ids |
| `voc` | path, split | a VOC-style root: `ImageSets/Segmentation/{split}.txt`, `SegmentationClass/*.png` (palette), `JPEGImages/*.jpg` |

A plain path is a shard set if it holds manifest.json, else a mask folder/glob.

Each source has a fingerprint (the sha256 of a shard set's manifest; for file
sources, of the names, sizes and modification times of its files) so an index
notices when its data changed. Samples are listed as columns (`list_samples`),
iterated in order (`iter_source`), or read by random access through an index
(`SampleReader`). Images are always the original bytes, never re-encoded;
labels are uint8 arrays already mapped to train ids (255 = ignore).
"""

import glob
import hashlib
import io
import json
import os

import numpy as np

from csst_data import IGNORE
from csst_data.codecs import decode_label, decode_label_png
from csst_data.shards import (MemberReader, ShardError, group_members, is_shard_set, read_manifest,
                             read_member)

KINDS = ("shards", "masks", "cityscapes", "voc")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")

# Cityscapes (cityscapesScripts labels.py): the 19 training classes.
CITYSCAPES_CLASS_NAMES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]
# Label id of each train id (train id i -> CITYSCAPES_TRAIN_TO_LABEL[i]).
CITYSCAPES_TRAIN_TO_LABEL = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
# Lookup table label id -> train id; every other id (void, parking, guard
# rail, caravan, ...) maps to the ignore label.
CITYSCAPES_LABEL_TO_TRAIN = np.full(256, IGNORE, np.uint8)
CITYSCAPES_LABEL_TO_TRAIN[CITYSCAPES_TRAIN_TO_LABEL] = np.arange(19, dtype=np.uint8)
CITYSCAPES_LABEL_TO_TRAIN.flags.writeable = False

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_PNG_MAGIC = b"\x89PNG"
_LABEL_MEMBERS = ("label.npy.zst", "label.png")
_IMAGE_MEMBERS = ("jpg", "jpeg", "png")


# -- specs -------------------------------------------------------------------
def _has_magic(path):
    return glob.has_magic(str(path))


def resolve_source(spec, images=None):
    """A source spec (a path, or a dict with `kind` and `path`) -> normalised dict.

    Paths become absolute and resolved; missing folders raise ValueError.
    `images` pairs a mask folder given as a plain path with an image folder.
    """
    if isinstance(spec, dict):
        spec = dict(spec)
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ValueError(f"source {spec!r}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
        if not spec.get("path"):
            raise ValueError(f"source {spec!r}: no path")
    else:
        path = os.fspath(spec)
        kind = "shards" if is_shard_set(path) else "masks"
        spec = {"kind": kind, "path": path}
        if images is not None:
            spec["images"] = images
    path = os.fspath(spec["path"])
    out = {"kind": kind}
    if kind == "masks":
        if _has_magic(path):
            # A glob: its root is the folder above the first wildcard.
            parts = path.split(os.sep)
            i = next(i for i, p in enumerate(parts) if glob.has_magic(p))
            root = os.sep.join(parts[:i]) or "."
            pattern = os.sep.join(parts[i:])
        else:
            root = path
            pattern = spec.get("pattern") or "**/*.png"
        out["path"] = os.path.realpath(root)
        out["pattern"] = pattern
        out["images"] = os.path.realpath(spec["images"]) if spec.get("images") else None
        if out["images"] is not None and not os.path.isdir(out["images"]):
            raise ValueError(f"image folder {spec['images']} does not exist")
    else:
        out["path"] = os.path.realpath(path)
        if kind in ("cityscapes", "voc"):
            out["split"] = spec.get("split") or "train"
    if not os.path.isdir(out["path"]):
        raise ValueError(f"source {path}: no such folder")
    if kind == "shards":
        try:
            read_manifest(out["path"])  # a clear error if it is not a shard set
        except ShardError as e:
            raise ValueError(str(e)) from e
    return out


def source_name(src):
    """Short human-readable name of a resolved source, for messages."""
    extra = f" ({src['split']})" if src.get("split") else ""
    return f"{src['path']}{extra}"


def is_pseudo(manifest):
    """Whether a shard set holds pseudo labels (written by `csst label`).

    True when the manifest says `"pseudo": true`, carries top-k soft labels, or
    its producer names a checkpoint or the `label` command.
    """
    if manifest.get("pseudo"):
        return True
    fields = manifest.get("fields") or []
    if any(str(f).startswith("topk") for f in fields):
        return True
    producer = manifest.get("producer")
    if isinstance(producer, dict):
        return "checkpoint" in producer or producer.get("command") in ("label", "csst label")
    return isinstance(producer, str) and producer.startswith("csst label")


# -- listing -----------------------------------------------------------------
def _stem(path):
    name = os.path.basename(path)
    return name.rsplit(".", 1)[0] if "." in name else name


def _walk(root, pattern, exts):
    paths = glob.glob(os.path.join(root, pattern), recursive=True)
    return sorted(p for p in paths if p.lower().endswith(exts) and os.path.isfile(p))


def _by_stem(paths, what):
    out = {}
    for p in paths:
        s = _stem(p)
        if s in out:
            raise ValueError(f"{what}: two files share the stem {s!r}: {out[s]} and {p}")
        out[s] = p
    return out


def _file_pairs(src):
    """[(key, label path or None, image path or None)] of a file source, absolute paths."""
    kind, root = src["kind"], src["path"]
    if kind == "masks":
        masks = _walk(root, src["pattern"], (".png",))
        if not masks:
            raise ValueError(f"source {root}: no mask PNGs match {src['pattern']!r} "
                             "(and no manifest.json: not a shard set either)")
        _by_stem(masks, f"source {root}")
        if src.get("images") is None:
            return [(_stem(m), m, None) for m in masks]
        imgs = _by_stem(_walk(src["images"], "**/*", IMAGE_EXTS), f"image folder {src['images']}")
        out = []
        for m in masks:
            img = imgs.get(_stem(m))
            if img is None:
                raise ValueError(f"mask {m}: no image with stem {_stem(m)!r} in {src['images']}")
            out.append((_stem(m), m, img))
        return out
    if kind == "cityscapes":
        gt = os.path.join(root, "gtFine", src["split"])
        if not os.path.isdir(gt):
            raise ValueError(f"Cityscapes root {root}: no folder gtFine/{src['split']}")
        labels = sorted(glob.glob(os.path.join(gt, "*", "*_gtFine_labelIds.png")))
        if not labels:
            raise ValueError(f"Cityscapes root {root}: no *_gtFine_labelIds.png in gtFine/{src['split']}")
        out = []
        for lab in labels:
            city = os.path.basename(os.path.dirname(lab))
            key = os.path.basename(lab)[: -len("_gtFine_labelIds.png")]
            img = os.path.join(root, "leftImg8bit", src["split"], city, f"{key}_leftImg8bit.png")
            if not os.path.isfile(img):
                raise ValueError(f"Cityscapes label {lab}: image {img} is missing")
            out.append((key, lab, img))
        return out
    if kind == "voc":
        listing = os.path.join(root, "ImageSets", "Segmentation", f"{src['split']}.txt")
        if not os.path.isfile(listing):
            raise ValueError(f"VOC root {root}: no ImageSets/Segmentation/{src['split']}.txt")
        with open(listing) as f:
            ids = [line.split()[0] for line in f if line.strip()]
        out = []
        for key in ids:
            lab = os.path.join(root, "SegmentationClass", f"{key}.png")
            img = os.path.join(root, "JPEGImages", f"{key}.jpg")
            for p in (lab, img):
                if not os.path.isfile(p):
                    raise ValueError(f"VOC root {root}: {os.path.relpath(p, root)} (listed in {src['split']}.txt) is missing")
            out.append((key, lab, img))
        return out
    raise ValueError(f"not a file source: {src['kind']}")


def image_root(src):
    """The folder that a file source's image paths are relative to."""
    return src.get("images") or src["path"]


def fingerprint(src):
    """sha256 hex of what a source was built from (see the module docstring)."""
    if src["kind"] == "shards":
        with open(os.path.join(src["path"], "manifest.json"), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    sha = hashlib.sha256()
    for key, lab, img in _file_pairs(src):
        for p, root in ((lab, src["path"]), (img, image_root(src))):
            if p is not None:
                st = os.stat(p)
                sha.update(f"{os.path.relpath(p, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8"))
    return sha.hexdigest()


SAMPLE_COLUMNS = ("key", "shard", "label_offset", "label_size", "image_offset", "image_size",
                  "label_path", "image_path")


def _new_columns():
    return {k: [] for k in SAMPLE_COLUMNS}


def _int_columns(cols):
    for c in ("shard", "label_offset", "label_size", "image_offset", "image_size"):
        cols[c] = np.asarray(cols[c], dtype=np.int64)
    return cols


def shard_columns(path, number, labels=True):
    """The samples of one tar shard (number `number` in its manifest) as
    columns, in the layout of `list_samples`."""
    cols = _new_columns()
    for key, members in group_members(path).items():
        lab = next((members[m] for m in _LABEL_MEMBERS if m in members), None)
        img = next((members[m] for m in _IMAGE_MEMBERS if m in members), None)
        if lab is None and labels:
            raise ValueError(f"{path}: sample {key!r} has no label member ({' or '.join(_LABEL_MEMBERS)})")
        cols["key"].append(key)
        cols["shard"].append(number)
        cols["label_offset"].append(lab[0] if lab else -1)
        cols["label_size"].append(lab[1] if lab else -1)
        cols["image_offset"].append(img[0] if img else -1)
        cols["image_size"].append(img[1] if img else -1)
        cols["label_path"].append("")
        cols["image_path"].append("")
    return _int_columns(cols)


def list_samples(src, labels=True):
    """The samples of a resolved source as columns (lists / int64 arrays).

    Columns: key, shard, label_offset, label_size, image_offset, image_size
    (byte ranges inside a shard; -1 for file sources or missing members), and
    label_path, image_path (file sources: relative to the source's folder and
    to `image_root(src)`; "" otherwise). With `labels`, a sample without a
    label raises ValueError.
    """
    if src["kind"] == "shards":
        parts = [shard_columns(os.path.join(src["path"], shard["name"]), number, labels)
                 for number, shard in enumerate(read_manifest(src["path"])["shards"])]
        cols = _new_columns()
        for p in parts:
            for c in cols:
                cols[c].extend(p[c])
        return _int_columns(cols)
    cols = _new_columns()
    for key, lab, img in _file_pairs(src):
        cols["key"].append(key)
        cols["shard"].append(-1)
        for c in ("label_offset", "label_size", "image_offset", "image_size"):
            cols[c].append(-1)
        cols["label_path"].append(os.path.relpath(lab, src["path"]) if lab else "")
        cols["image_path"].append(os.path.relpath(img, image_root(src)) if img else "")
    return _int_columns(cols)


# -- decoding ----------------------------------------------------------------
def decode_label_bytes(data, key=None, kind="shards"):
    """Label member or file bytes (.npy.zst or PNG) -> uint8 mask in train ids.

    Values are not checked against num_classes here; the index build does it.
    """
    head = bytes(data[:4])
    if head == _ZSTD_MAGIC:
        mask = decode_label(data, key=key)
    elif head == _PNG_MAGIC:
        mask = decode_label_png(data, key=key)
    else:
        raise ValueError(f"label {key!r}: neither a .npy.zst nor a PNG")
    if kind == "cityscapes":
        mask = CITYSCAPES_LABEL_TO_TRAIN[mask]
    return mask


def label_decoder():
    """A label decoder for a stream of masks that reuses one buffer.

    `decode(data, key, kind)` is `decode_label_bytes`, but a `.npy.zst` mask
    comes back as a read-only view into the buffer, valid until the next call.
    A fresh 2 MB array per 1024x2048 mask costs more in page faults than the
    zstd decode itself; the index build decodes masks one after another.
    """
    from numcodecs import zstd

    state = {"buf": np.empty(0, np.uint8), "headers": {}}

    def decode(data, key=None, kind="shards"):
        if bytes(data[:4]) != _ZSTD_MAGIC:
            return decode_label_bytes(data, key, kind)
        try:
            raw = zstd.decompress(data, state["buf"])
        except ValueError:
            # First mask, or a larger one: size the buffer for it.
            raw = np.frombuffer(zstd.decompress(data), np.uint8)
            state["buf"] = np.empty(len(raw), np.uint8)
            state["buf"][:] = raw
            raw = state["buf"]
        if bytes(raw[:8]) != b"\x93NUMPY\x01\x00":  # not a version 1.0 .npy: the general path
            return decode_label_bytes(data, key, kind)
        end = 10 + int(raw[8]) + 256 * int(raw[9])
        header = bytes(raw[10:end])
        parsed = state["headers"].get(header)
        if parsed is None:
            fp = io.BytesIO(bytes(raw[:end]))
            np.lib.format.read_magic(fp)
            parsed = state["headers"][header] = np.lib.format.read_array_header_1_0(fp)
        shape, fortran, dtype = parsed
        if len(shape) != 2 or fortran or dtype != np.uint8:
            return decode_label_bytes(data, key, kind)  # raises the usual clear error
        size = shape[0] * shape[1]
        if end + size > len(raw):
            raise ValueError(f"label {key!r}: truncated .npy.zst")
        mask = raw[end:end + size].reshape(shape)
        mask.flags.writeable = False
        return CITYSCAPES_LABEL_TO_TRAIN[mask] if kind == "cityscapes" else mask

    return decode


def _read_file(path):
    with open(path, "rb") as f:
        return f.read()


# -- sequential iteration --------------------------------------------------
def iter_source(spec, images=True, labels=True):
    """Iterate a source's samples in order.

    Yields dicts: key, image (original bytes or None), label (uint8 H x W in
    train ids, or None), meta (a shard sample's .json member, decoded, or
    None), source (the resolved source dict). A sample without an image
    yields image=None; with `labels`, a sample without a label is an error.
    """
    src = resolve_source(spec)
    if src["kind"] == "shards":
        manifest = read_manifest(src["path"])
        for shard in manifest["shards"]:
            path = os.path.join(src["path"], shard["name"])
            fd = os.open(path, os.O_RDONLY)
            try:
                for key, members in group_members(path).items():
                    out = {"key": key, "image": None, "label": None, "meta": None, "source": src}
                    if images:
                        img = next((members[m] for m in _IMAGE_MEMBERS if m in members), None)
                        if img is not None:
                            out["image"] = read_member(fd, img[0], img[1], path)
                    if labels:
                        lab = next((members[m] for m in _LABEL_MEMBERS if m in members), None)
                        if lab is None:
                            raise ValueError(f"{path}: sample {key!r} has no label member")
                        out["label"] = decode_label_bytes(read_member(fd, lab[0], lab[1], path), key)
                    if "json" in members:
                        out["meta"] = json.loads(read_member(fd, *members["json"], path))
                    yield out
            finally:
                os.close(fd)
        return
    for key, lab, img in _file_pairs(src):
        yield {
            "key": key,
            "image": _read_file(img) if images and img else None,
            "label": decode_label_bytes(_read_file(lab), lab, src["kind"]) if labels else None,
            "meta": None,
            "source": src,
        }


# -- random access -----------------------------------------------------------
class SampleReader:
    """Random access to the images and labels of an index's images table.

    Picklable: file descriptors are opened lazily in each process (DataLoader
    workers), through `csst_data.shards.MemberReader`.

    >>> reader = SampleReader(CentroidIndex.open("index.zarr"))
    >>> reader.image_bytes(row), reader.label(row)
    """

    def __init__(self, index):
        images = index.images
        self.sources = [dict(s) for s in index.sources]
        self.shard_files = [
            [os.path.join(s["path"], sh["name"]) for sh in read_manifest(s["path"])["shards"]]
            if s["kind"] == "shards" else None
            for s in self.sources
        ]
        self.key = images["key"]
        self.source = np.asarray(images["source"])
        self.shard = np.asarray(images["shard"])
        self.offsets = {c: np.asarray(images[c]) for c in ("label_offset", "label_size", "image_offset", "image_size")}
        self.label_path = images.get("label_path")
        self.image_path = images.get("image_path")
        self.members = MemberReader()

    def __len__(self):
        return len(self.key)

    def _read(self, row, what):
        src = self.sources[self.source[row]]
        if src["kind"] == "shards":
            offset = int(self.offsets[f"{what}_offset"][row])
            size = int(self.offsets[f"{what}_size"][row])
            if offset < 0:
                raise ValueError(f"sample {self.key[row]!r} of {src['path']} has no {what}")
            return self.members.read(self.shard_files[self.source[row]][self.shard[row]], offset, size)
        rel = (self.label_path if what == "label" else self.image_path)[row]
        if not rel:
            raise ValueError(f"sample {self.key[row]!r} of {src['path']} has no {what}")
        root = src["path"] if what == "label" else image_root(src)
        return _read_file(os.path.join(root, rel))

    def image_bytes(self, row):
        """The original image bytes (JPEG or PNG) of index row `row`."""
        return self._read(int(row), "image")

    def label(self, row):
        """The label of index row `row`: uint8 H x W in train ids, 255 = ignore."""
        row = int(row)
        return decode_label_bytes(self._read(row, "label"), self.key[row], self.sources[self.source[row]]["kind"])

    def close(self):
        self.members.close()
