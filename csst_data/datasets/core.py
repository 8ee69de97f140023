"""Every dataset csst reads, one small class per kind; every consumer goes through it.

| class | SOURCE string | samples |
| --- | --- | --- |
| `ShardSet` | a folder holding manifest.json, or an `s3://`, `gs://`, `az://`, `http(s)://` URL of one | a csst shard set (docs/formats.md; storage.py) |
| `FolderDataset` | a mask folder (with `--images`), a spec file (`.json`/`.toml`), `PRESET:ROOT[:SPLIT]` | images + masks as mmsegmentation reads them |

Both have the same few methods: `samples()` lists the samples as columns
(key, shard, byte ranges, relative paths), `fingerprint()` hashes what they were
built from, `read(reader, ...)` returns an image's or label's bytes,
`decode_label(data)` turns label bytes into class ids (uint8, 255 = ignore),
`iter()` yields decoded samples in order, and `classes` / `num_classes` name
the classes where the dataset declares them. `to_attrs` / `from_attrs` store a
dataset in an index's attributes and bring it back.

A `FolderDataset` has the fields of mmsegmentation's `BaseSegDataset` (same
names and meaning, so a config's values can be copied): `img_dir`, `ann_dir`,
`img_suffix`, `seg_map_suffix`, `split` (a text file of stems),
`reduce_zero_label`, `ignore_index`, `classes`, and csst's `label_map` (raw
value -> class id, unlisted values -> ignore) and `palette` (RGB colour ->
class id, for colour-coded masks). Presets (`cityscapes`, `voc`, `ade20k`,
`coco-stuff`, `loveda`) are folder datasets configured for each dataset's
official layout and label convention (tables in `dataset_tables.py`).

`parse_source(text, ...)` turns a SOURCE string into a dataset; it is the one
source grammar of every command.
"""

import glob
import hashlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from csst_data import IGNORE
from csst_data.datasets import tables
from csst_data.store import storage
from csst_data.store.codecs import decode_label, decode_label_png, is_png
from csst_data.store.shards import RangeReader, ShardError, group_members, is_shard_set, read_manifest

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
SPEC_EXTS = (".json", ".toml")
SAMPLE_COLUMNS = ("key", "shard", "label_offset", "label_size", "image_offset", "image_size",
                  "label_path", "image_path")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LABEL_MEMBERS = ("label.npy.zst", "label.png")
_IMAGE_MEMBERS = ("jpg", "jpeg", "png")
_KEY_SUB = re.compile(r"[.\s/\\]+")


def sanitise_key(stem):
    """Sample key from a file's stem: dots, whitespace and separators become '_'.

    `aachen/aachen_000000_000019_leftImg8bit` -> `aachen_aachen_000000_000019_leftImg8bit`
    (keys may not hold dots or separators; webdataset splits member names at the first dot).
    """
    key = _KEY_SUB.sub("_", stem).strip("_")
    if not key:
        raise ValueError(f"{stem!r}: cannot make a sample key from this path")
    return key


def _new_columns():
    return {k: [] for k in SAMPLE_COLUMNS}


def _int_columns(cols):
    for c in ("shard", "label_offset", "label_size", "image_offset", "image_size"):
        cols[c] = np.asarray(cols[c], dtype=np.int64)
    return cols


def _join_columns(parts):
    cols = _new_columns()
    for p in parts:
        for c in cols:
            cols[c].extend(p[c])
    return _int_columns(cols)


class Dataset:
    """What every kind of dataset offers (see the module docstring)."""

    kind = None

    @property
    def name(self):
        """Short human-readable name, for messages."""
        raise NotImplementedError

    @property
    def classes(self):
        """Class names the dataset declares, or None."""
        return None

    @property
    def num_classes(self):
        return len(self.classes) if self.classes is not None else None

    @property
    def pseudo(self):
        """Whether the labels are a teacher's (csst label), not human labels."""
        return False

    def ident(self):
        """What makes two datasets the same (absolute paths and reading options)."""
        return json.dumps(self.to_attrs(None), sort_keys=True)

    def blocks(self, labels=True, reader=None):
        """The samples as blocks in order: [(count, function returning the block's columns, shard file or None)].

        One block by default; a shard set has one per shard, listed only when needed (with the
        pass's `reader`, which then keeps a remote shard for the reads that follow).
        """
        cols = self.samples(labels)
        return [(len(cols["key"]), lambda: cols, None)]

    def samples(self, labels=True):
        """Columns of every sample; with labels=True a sample without a label is an error,
        with None labels are listed where there are some."""
        raise NotImplementedError

    def read(self, reader, shard, offset, size, path):
        """Bytes of one image or label, given its columns (shard, byte range, relative path)."""
        raise NotImplementedError

    def read_ranges(self, reader, shard, ranges):
        """The bytes of several (offset, size) ranges of one shard (a shard set's), by as few reads as possible."""
        return [self.read(reader, shard, o, n, "") for o, n in ranges]

    def decode_label(self, data, name=None, decode=None):
        """Label bytes -> uint8 H x W class ids (255 = ignore). `decode` may replace
        the plain `.npy.zst` decoder (e.g. `label_decoder()` reusing a buffer)."""
        raise NotImplementedError

    def image_refs(self):
        """[(key, ref)] of every image: ref is a file path or (tar path, offset, size, member name)."""
        raise NotImplementedError

    has_topk = False  # whether samples may carry top-k soft labels

    def topk(self, reader, shard, key):
        """(top-k class ids bytes, probabilities bytes) of a sample's soft label, or None."""
        return None

    def iter(self, images=True, labels=True, reader=None):
        """Yield dicts in order: key, image (bytes or None), label (class ids or None),
        meta (a shard sample's decoded .json member, or None), dataset."""
        own = reader is None
        reader = reader or RangeReader()
        try:
            for count, columns, _ in self.blocks(labels, reader):
                cols = columns()
                for i in range(count):
                    yield self._sample(cols, i, images, labels, reader)
        finally:
            if own:
                reader.close()

    def check(self, num_classes):
        """Read every sample once, before it is needed (a validation set before training):
        labelled, with an image, image and label of one size, class ids < num_classes or 255.
        Raises ValueError naming the file (or shard member) and the problem."""
        from PIL import Image

        from csst_data.store.codecs import check_label

        reader = RangeReader()
        try:
            for count, columns, _ in self.blocks(True, reader):
                cols = columns()
                for i in range(count):
                    where = self.describe(cols, i)
                    if cols["image_size"][i] == -1 and not cols["image_path"][i]:
                        raise ValueError(f"{where}: no image for this label")
                    s = self._sample(cols, i, True, True, reader)
                    check_label(s["label"], num_classes, where)
                    try:
                        w, h = Image.open(io.BytesIO(s["image"])).size  # the header only
                    except Exception as e:
                        raise ValueError(f"{self.describe(cols, i, 'image')}: not a readable image ({e})") from None
                    if (h, w) != s["label"].shape:
                        from csst_data.jpeg.structure import size_mismatch

                        raise ValueError(f"{self.describe(cols, i, 'image')}: "
                                         f"{size_mismatch(s['image'], (h, w), s['label'].shape)} ({where})")
        finally:
            reader.close()

    def _sample(self, cols, i, images, labels, reader):
        key = cols["key"][i]
        name = self.describe(cols, i, "label" if labels else "image")
        out = {"key": key, "image": None, "label": None, "meta": None, "dataset": self, "name": name}
        if images and cols["image_size"][i] != -1 or images and cols["image_path"][i]:
            out["image"] = self.read(reader, cols["shard"][i], cols["image_offset"][i], cols["image_size"][i],
                                     cols["image_path"][i])
        if labels:
            data = self.read(reader, cols["shard"][i], cols["label_offset"][i], cols["label_size"][i],
                             cols["label_path"][i])
            out["label"] = self.decode_label(data, name)
        return out

    def describe(self, cols, i, what="label"):
        """Where sample i's label (or image) lives, for messages."""
        raise NotImplementedError

    def locate(self, what, key, shard=-1, offset=-1, path=""):
        """`describe` of one sample given its column values."""
        cols = {"key": [key], "shard": [shard], f"{what}_offset": [offset], f"{what}_path": [path]}
        return self.describe(cols, 0, what)

    def fingerprint(self):
        raise NotImplementedError

    def to_attrs(self, base):
        """JSON-able description; paths relative to `base` (None: absolute)."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.name})"


def declared_classes(datasets, num_classes=None, class_names=None):
    """(class count, class names) that the given values and the datasets declare, each None where
    nobody does; a dataset that disagrees with the others or with the given values is an error."""
    for ds in datasets:
        c, names = ds.num_classes, ds.classes
        if c is not None and num_classes is not None and c != num_classes:
            raise ValueError(f"{ds.name} has {c} classes, but {num_classes} were asked for"
                             if class_names is None else f"{ds.name} has {c} classes, not {num_classes}")
        num_classes = c if num_classes is None else num_classes
        if names is not None:
            if class_names is not None and list(names) != list(class_names):
                raise ValueError(f"{ds.name}: its class names differ from those of the other sources or options "
                                 f"({list(names)[:3]}... vs {list(class_names)[:3]}...)")
            class_names = list(names)
    return num_classes, class_names


def source_name(fields):
    """A dataset's name from its fields (a FolderSpec's, or the attributes an index stores):
    `PRESET:ROOT[:SPLIT]` for a preset, else its folder."""
    if fields.get("preset"):
        split = fields.get("split_name")
        return f"{fields['preset']}:{fields['data_root']}" + (f":{split}" if split else "")
    return fields.get("path") or fields.get("ann_dir") or fields.get("img_dir")


def _rel(path, base):
    if path is None or base is None:
        return path
    return os.path.relpath(path, os.path.realpath(base))


def _abs(path, base):
    if path is None or base is None:
        return path
    return os.path.normpath(os.path.join(os.path.realpath(base), path))


# -- csst shard sets -----------------------------------------------------------------
def is_pseudo(manifest):
    """Whether a shard set holds pseudo labels (written by `csst label`).

    True when the manifest says `"pseudo": true`, carries top-k soft labels, or
    its producer names a checkpoint or the `label` command.
    """
    if manifest.get("pseudo"):
        return True
    fields_ = manifest.get("fields") or []
    if any(str(f).startswith("topk") for f in fields_):
        return True
    producer = manifest.get("producer")
    if isinstance(producer, dict):
        return "checkpoint" in producer or producer.get("command") in ("label", "csst label")
    return isinstance(producer, str) and producer.startswith("csst label")


def decode_label_bytes(data, name=None):
    """`.npy.zst` or PNG (mode L / P) label bytes -> uint8 mask, values as stored."""
    head = bytes(data[:4])
    if head == _ZSTD_MAGIC:
        return decode_label(data, key=name)
    if is_png(data):
        return decode_label_png(data, key=name)
    raise ValueError(f"label {name!r}: neither a .npy.zst nor a PNG")


def label_decoder():
    """A `.npy.zst` label decoder for a stream of masks that reuses one buffer.

    `decode(data, name)` is `decode_label_bytes`, but a mask comes back as a
    read-only view into the buffer, valid until the next call. A fresh 2 MB
    array per 1024x2048 mask costs more in page faults than the zstd decode
    itself; the index build decodes masks one after another.
    """
    from numcodecs import zstd

    state = {"buf": np.empty(0, np.uint8), "headers": {}}

    def decode(data, name=None):
        if bytes(data[:4]) != _ZSTD_MAGIC:
            return decode_label_bytes(data, name)
        try:
            raw = zstd.decompress(data, state["buf"])
        except (ValueError, RuntimeError):
            # First mask, or a larger one (or a frame without its size): size the buffer for it.
            raw = np.frombuffer(zstd.decompress(data), np.uint8)
            state["buf"] = np.empty(len(raw), np.uint8)
            state["buf"][:] = raw
            raw = state["buf"]
        if bytes(raw[:8]) != b"\x93NUMPY\x01\x00":  # not a version 1.0 .npy: the general path
            return decode_label_bytes(data, name)
        end = 10 + int(raw[8]) + 256 * int(raw[9])
        header = bytes(raw[10:end])
        parsed = state["headers"].get(header)
        if parsed is None:
            fp = io.BytesIO(bytes(raw[:end]))
            np.lib.format.read_magic(fp)
            parsed = state["headers"][header] = np.lib.format.read_array_header_1_0(fp)
        shape, fortran, dtype = parsed
        if len(shape) != 2 or fortran or dtype != np.uint8:
            return decode_label_bytes(data, name)  # raises the usual clear error
        size = shape[0] * shape[1]
        if end + size > len(raw):
            raise ValueError(f"label {name!r}: truncated .npy.zst")
        mask = raw[end:end + size].reshape(shape)
        mask.flags.writeable = False
        return mask

    return decode


class ShardSet(Dataset):
    """A csst shard set: `{prefix}-NNNNNN.tar` files listed in manifest.json."""

    kind = "shards"

    def __init__(self, path):
        path = os.fspath(path)
        self.remote = storage.is_url(path)  # an object-store URL (storage.py), read by ranged GETs
        self.path = path.rstrip("/") if self.remote else os.path.realpath(path)
        if not self.remote and not os.path.isdir(self.path):
            raise ValueError(f"{path}: no such folder")
        try:
            self.manifest = read_manifest(self.path)
        except ShardError as e:
            raise ValueError(str(e)) from e
        self.shard_files = [storage.join(self.path, s["name"]) for s in self.manifest["shards"]]

    def __getstate__(self):
        return {"path": self.path, "remote": self.remote, "manifest": self.manifest, "shard_files": self.shard_files}

    @property
    def has_topk(self):
        return any(str(f).startswith("topk") for f in self.manifest.get("fields") or [])

    def topk(self, reader, shard, key):
        if not self.has_topk:
            return None
        # The member map of each shard, read once per process (the index holds no top-k offsets).
        cache = self.__dict__.setdefault("_members", {})
        shard = int(shard)
        if shard not in cache:
            cache[shard] = group_members(self.shard_files[shard])  # remote: one whole read, not kept
        members = cache[shard].get(key, {})
        if "topk_idx.npy.zst" not in members or "topk_prob.npy.zst" not in members:
            return None
        path = self.shard_files[shard]
        return reader.read(path, *members["topk_idx.npy.zst"]), reader.read(path, *members["topk_prob.npy.zst"])

    @property
    def name(self):
        return self.path

    @property
    def classes(self):
        names = self.manifest.get("class_names")
        if names:
            return list(names)
        return None

    @property
    def num_classes(self):
        return self.manifest.get("num_classes")

    @property
    def pseudo(self):
        return is_pseudo(self.manifest)

    def shard_columns(self, number, labels=True, reader=None):
        """The samples of shard `number` as columns (`reader`: see shards.member_offsets)."""
        path = self.shard_files[number]
        cols = _new_columns()
        for key, members in group_members(path, reader).items():
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

    def blocks(self, labels=True, reader=None):
        return [(int(s["samples"]), (lambda n=n: self.shard_columns(n, labels, reader)), self.shard_files[n])
                for n, s in enumerate(self.manifest["shards"])]

    def samples(self, labels=True):
        return _join_columns(self.shard_columns(n, labels) for n in range(len(self.shard_files)))

    def read(self, reader, shard, offset, size, path):
        if offset < 0:
            raise ValueError(f"{self.path}: sample has no such member")
        return reader.read(self.shard_files[int(shard)], int(offset), int(size))

    def read_ranges(self, reader, shard, ranges):
        return reader.read_ranges(self.shard_files[int(shard)], ranges)

    def decode_label(self, data, name=None, decode=None):
        return (decode or decode_label_bytes)(data, name)

    def iter(self, images=True, labels=True, reader=None):
        # Also yields each sample's .json member (`meta`).
        own = reader is None
        reader = reader or RangeReader()
        try:
            for number, path in enumerate(self.shard_files):
                for key, members in group_members(path, reader).items():
                    out = {"key": key, "image": None, "label": None, "meta": None, "dataset": self,
                           "name": f"{path}:{key}"}
                    img = next((members[m] for m in _IMAGE_MEMBERS if m in members), None)
                    if images and img is not None:
                        out["image"] = reader.read(path, *img)
                    if labels:
                        lab = next((members[m] for m in _LABEL_MEMBERS if m in members), None)
                        if lab is None:
                            raise ValueError(f"{path}: sample {key!r} has no label member")
                        out["label"] = decode_label_bytes(reader.read(path, *lab), key)
                    if "json" in members:
                        out["meta"] = json.loads(reader.read(path, *members["json"]))
                    yield out
        finally:
            if own:
                reader.close()

    def image_refs(self):
        refs = []
        for path in self.shard_files:
            for key, members in group_members(path).items():
                suffix = next((s for s in _IMAGE_MEMBERS if s in members), None)
                if suffix is None:
                    raise ValueError(f"{path}: sample {key!r} has no image member (.jpg/.jpeg/.png)")
                refs.append((key, (path, *members[suffix], f"{key}.{suffix}")))
        return refs

    def describe(self, cols, i, what="label"):
        where = f"{self.shard_files[int(cols['shard'][i])]}:{cols['key'][i]}"
        offset = cols.get(f"{what}_offset")
        return where if offset is None or offset[i] < 0 else f"{where} ({what} at byte {int(offset[i])})"

    def fingerprint(self):
        """sha256 of manifest.json and of every listed shard's size: a truncated or
        replaced shard makes an index built on the set stale, not silently wrong."""
        sha = hashlib.sha256()
        if self.remote:
            # The manifest's bytes, and each shard's size and ETag (one LIST, or a HEAD per shard
            # where the store cannot list): a rewritten object gets a new ETag.
            sha.update(storage.read(storage.join(self.path, "manifest.json")))
            listing = storage.listdir(self.path)
            for path in self.shard_files:
                name = storage.basename(path)
                if listing is not None:
                    meta = listing.get(name, {"size": -1, "etag": None})
                else:
                    try:
                        meta = storage.head(path)
                    except storage.NotFound:
                        meta = {"size": -1, "etag": None}
                sha.update(f"\0{name}\0{meta['size']}\0{meta['etag']}".encode())
            return sha.hexdigest()
        with open(os.path.join(self.path, "manifest.json"), "rb") as f:
            sha.update(f.read())
        for path in self.shard_files:
            size = os.path.getsize(path) if os.path.exists(path) else -1
            sha.update(f"\0{os.path.basename(path)}\0{size}".encode())
        return sha.hexdigest()

    def to_attrs(self, base):
        # A URL is stored as it is; a folder relative to the index.
        return {"kind": self.kind, "path": self.path if self.remote else _rel(self.path, base)}

    @classmethod
    def from_attrs(cls, attrs, base):
        return cls(attrs["path"] if storage.is_url(attrs["path"]) else _abs(attrs["path"], base))


# -- images + masks in folders (mmsegmentation's conventions) --------------------------
@dataclass(frozen=True)
class FolderSpec:
    """The fields of an images + masks dataset (a spec file holds the same keys).

    Paths are absolute here; in a spec file they are relative to `data_root`,
    itself relative to the spec file's folder.
    """

    data_root: str                       # stored paths are relative to it
    img_dir: str = None                  # folder (or glob) of images; None: masks only
    ann_dir: str = None                  # folder (or glob) of masks; None: images only
    img_suffix: str = None               # e.g. ".jpg", "_leftImg8bit.png"; None: any of .jpg .jpeg .png
    seg_map_suffix: str = ".png"         # e.g. "_gtFine_labelIds.png"
    split: str = None                    # text file of stems (relative paths without suffix), one a line
    reduce_zero_label: bool = False      # 0 -> ignore, v -> v - 1 (ADE20K, LoveDA, ...)
    label_map: dict = None               # raw value -> class id; unlisted values -> ignore
    palette: tuple = None                # [(r, g, b)] whose index is the class id, for RGB masks
    unknown_color: str = "error"         # an RGB colour not in the palette: "error" or "ignore"
    classes: tuple = None                # class names; their number is num_classes
    num_classes: int = None              # when there are no names
    ignore_index: int = IGNORE           # the raw value that means "not labelled"
    keys: str = "name"                   # "name": file name less suffix; "path": path below the folder
    preset: str = None                   # which preset made it (for messages)
    split_name: str = None               # the preset's split (for messages)


SPEC_KEYS = {f.name for f in fields(FolderSpec)} - {"preset", "split_name"}


def _split_glob(path):
    """A folder, glob or file -> (root folder, glob pattern or None)."""
    path = os.fspath(path)
    if glob.has_magic(path):
        parts = path.split(os.sep)
        i = next(i for i, p in enumerate(parts) if glob.has_magic(p))
        return os.sep.join(parts[:i]) or ".", os.sep.join(parts[i:])
    if os.path.isfile(path):
        return os.path.dirname(path) or ".", glob.escape(os.path.basename(path))
    return path, None


def _list_files(folder, suffixes, what, name):
    """{relative path less suffix: absolute path} of the files under `folder` ending in one of `suffixes`."""
    root, pattern = _split_glob(folder)
    if not os.path.isdir(root):
        raise ValueError(f"{name}: {what} folder {root} does not exist")
    root = os.path.realpath(root)
    if pattern is None:
        paths = glob.glob(os.path.join(glob.escape(root), "**", "*"), recursive=True)
    else:
        paths = glob.glob(os.path.join(glob.escape(root), pattern), recursive=True)
    out = {}
    for p in sorted(paths):
        rel = os.path.relpath(p, root)
        for s in suffixes:
            if rel.lower().endswith(s.lower()) and len(rel) > len(s) and os.path.isfile(p):
                out[rel[: -len(s)]] = p
                break
    return root, out


def _palette_codes(palette):
    return np.array([(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in palette], np.int64)


class FolderDataset(Dataset):
    """Images and masks in folders, paired by stem, read as mmsegmentation reads them."""

    kind = "folder"

    def __init__(self, spec):
        self.spec = spec
        s = spec
        if s.img_dir is None and s.ann_dir is None:
            raise ValueError(f"{self.name}: give an image folder, a mask folder or both")
        if s.keys not in ("name", "path"):
            raise ValueError(f"{self.name}: keys must be 'name' or 'path', not {s.keys!r}")
        if s.unknown_color not in ("error", "ignore"):
            raise ValueError(f"{self.name}: unknown_color must be 'error' or 'ignore', not {s.unknown_color!r}")
        if s.label_map is not None and s.reduce_zero_label:
            raise ValueError(f"{self.name}: give label_map or reduce_zero_label, not both "
                             "(label_map maps raw values to class ids by itself)")
        if not 0 <= int(s.ignore_index) <= 255:
            raise ValueError(f"{self.name}: ignore_index must be in 0..255, got {s.ignore_index}")
        if s.classes is not None and s.num_classes is not None and len(s.classes) != s.num_classes:
            raise ValueError(f"{self.name}: {len(s.classes)} classes named but num_classes is {s.num_classes}")
        self.lut = self._lookup_table()
        self.palette_codes = _palette_codes(s.palette) if s.palette is not None else None

    @property
    def name(self):
        return source_name(vars(self.spec))

    @property
    def classes(self):
        return list(self.spec.classes) if self.spec.classes is not None else None

    @property
    def num_classes(self):
        s = self.spec
        if s.classes is not None:
            return len(s.classes)
        if s.num_classes is not None:
            return int(s.num_classes)
        if s.palette is not None:
            return len(s.palette)
        return None

    def _lookup_table(self):
        """raw value -> class id (uint8[256]), or None when values are class ids already."""
        s = self.spec
        lut = np.arange(256, dtype=np.uint8)
        if s.label_map is not None:
            lut = np.full(256, IGNORE, np.uint8)
            for raw, cls in s.label_map.items():
                raw, cls = int(raw), int(cls)
                if not (0 <= raw <= 255 and 0 <= cls <= 255):
                    raise ValueError(f"{self.name}: label_map {raw} -> {cls}: values must be in 0..255")
                lut[raw] = cls
        if s.ignore_index != IGNORE:
            lut[IGNORE] = IGNORE if s.label_map is None else lut[IGNORE]
            lut[int(s.ignore_index)] = IGNORE
        if s.reduce_zero_label:
            # mmseg: 0 -> 255, v -> v - 1, and 255 stays 255.
            lut = np.where(lut == 0, IGNORE, np.where(lut == IGNORE, IGNORE, lut - 1)).astype(np.uint8)
        if np.array_equal(lut, np.arange(256)):
            return None
        lut.flags.writeable = False
        return lut

    # -- listing --
    def _key(self, stem):
        return sanitise_key(os.path.basename(stem) if self.spec.keys == "name" else stem)

    def _pairs(self, labels):
        """[(key, label path or None, image path or None)], sorted by key."""
        s = self.spec
        want_images = s.img_dir is not None
        want_labels = labels and s.ann_dir is not None
        if labels and s.ann_dir is None:
            raise ValueError(f"{self.name}: no mask folder (ann_dir), so no labels")
        img_suffixes = (s.img_suffix,) if s.img_suffix else IMAGE_EXTS
        if s.split is not None:
            return self._split_pairs(want_labels, want_images, img_suffixes)
        masks = _list_files(s.ann_dir, (s.seg_map_suffix,), "mask", self.name)[1] if want_labels else {}
        imgs = _list_files(s.img_dir, img_suffixes, "image", self.name)[1] if want_images else {}
        if want_labels and not masks:
            raise ValueError(f"{self.name}: no masks ending in {s.seg_map_suffix!r} in {s.ann_dir}")
        if want_images and not imgs:
            raise ValueError(f"{self.name}: no images ending in {' or '.join(img_suffixes)} in {s.img_dir}")
        by_key_m = self._by_key(masks, "mask")
        by_key_i = self._by_key(imgs, "image")
        if want_labels and want_images:
            lonely_m = sorted(set(by_key_m) - set(by_key_i))
            lonely_i = sorted(set(by_key_i) - set(by_key_m))
            if lonely_m or lonely_i:
                raise ValueError(f"{self.name}: unpaired files: " + "; ".join(
                    f"{len(names)} {what} without {other} ({', '.join(os.path.basename(p) for p in names[:5])}"
                    + (", ..." if len(names) > 5 else "") + ")"
                    for names, what, other in (([by_key_m[k] for k in lonely_m], "mask(s)", "an image"),
                                               ([by_key_i[k] for k in lonely_i], "image(s)", "a mask")) if names)
                    + f" (images end in {' or '.join(img_suffixes)}, masks in {s.seg_map_suffix!r})")
        keys = sorted(by_key_m if want_labels else by_key_i)
        return [(k, by_key_m.get(k), by_key_i.get(k)) for k in keys]

    def _by_key(self, files, what):
        out = {}
        for stem, path in files.items():
            key = self._key(stem)
            if key in out:
                raise ValueError(f"{self.name}: two {what}s have the key {key!r}: {out[key]} and {path}"
                                 + (' (set "keys": "path" to key files by their path)' if self.spec.keys == "name" else ""))
            out[key] = path
        return out

    def _split_pairs(self, want_labels, want_images, img_suffixes):
        s = self.spec
        try:
            with open(s.split, encoding="utf-8") as f:
                stems = [line.split()[0] for line in f if line.strip()]
        except OSError as e:
            raise ValueError(f"{self.name}: cannot read split file {s.split} ({e.strerror})") from e
        out, seen = [], {}
        for stem in stems:
            lab = img = None
            if want_labels:
                lab = os.path.join(s.ann_dir, stem + s.seg_map_suffix)
                if not os.path.isfile(lab):
                    raise ValueError(f"{self.name}: {lab} (listed in {os.path.basename(s.split)}) is missing")
            if want_images:
                img = next((os.path.join(s.img_dir, stem + x) for x in img_suffixes
                            if os.path.isfile(os.path.join(s.img_dir, stem + x))), None)
                if img is None:
                    raise ValueError(f"{self.name}: image {os.path.join(s.img_dir, stem + img_suffixes[0])} "
                                     f"(listed in {os.path.basename(s.split)}) is missing")
            key = self._key(stem)
            if key in seen:
                raise ValueError(f"{self.name}: {s.split} lists {stem!r} and {seen[key]!r}, both key {key!r}")
            seen[key] = stem
            out.append((key, lab, img))
        return sorted(out, key=lambda t: t[0])

    def samples(self, labels=True):
        if labels is None:  # labels where the dataset has them
            labels = self.spec.ann_dir is not None
        cols = _new_columns()
        root = self.spec.data_root
        for key, lab, img in self._pairs(labels):
            cols["key"].append(key)
            cols["shard"].append(-1)
            for c in ("label_offset", "label_size", "image_offset", "image_size"):
                cols[c].append(-1)
            cols["label_path"].append(os.path.relpath(lab, root) if lab else "")
            cols["image_path"].append(os.path.relpath(img, root) if img else "")
        return _int_columns(cols)

    def read(self, reader, shard, offset, size, path):
        if not path:
            raise ValueError(f"{self.name}: sample has no such file")
        return reader.read(os.path.join(self.spec.data_root, path))

    def image_refs(self):
        return [(key, img) for key, _, img in self._pairs(labels=False)]

    def describe(self, cols, i, what="label"):
        return os.path.join(self.spec.data_root, cols[f"{what}_path"][i])

    # -- labels --
    def decode_label(self, data, name=None, decode=None):
        if bytes(data[:4]) == _ZSTD_MAGIC:
            raw = (decode or decode_label_bytes)(data, name)
        else:
            raw = self._decode_image_mask(data, name)
            if raw.ndim == 3:
                return self._colours_to_ids(raw, name)
        return self.lut[raw] if self.lut is not None else raw

    def _decode_image_mask(self, data, name):
        from PIL import Image

        try:
            img = Image.open(io.BytesIO(data))
            mode = img.mode
            if mode in ("L", "P"):
                return np.asarray(img)
            if mode == "1":
                return np.asarray(img.convert("L")) // 255
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img)
                if arr.size and int(arr.max()) > 255:
                    raise ValueError(f"{mode} mask holds value {int(arr.max())} > 255")
                return arr.astype(np.uint8)
            if mode in ("RGB", "RGBA"):
                if self.palette_codes is None:
                    raise ValueError(f"colour-coded ({mode}) mask, but the dataset has no palette "
                                     "(give \"palette\" in a spec file)")
                return np.asarray(img.convert("RGB"))
            raise ValueError(f"mode {mode}, expected L, P, I;16 or RGB")
        except ValueError as e:
            raise ValueError(f"label {name}: {e}") from None
        except Exception as e:
            raise ValueError(f"label {name}: cannot decode ({e})") from e

    def _colours_to_ids(self, rgb, name):
        codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        uniq, inverse = np.unique(codes, return_inverse=True)
        order = np.argsort(self.palette_codes, kind="stable")
        sorted_codes = self.palette_codes[order]
        pos = np.clip(np.searchsorted(sorted_codes, uniq), 0, len(sorted_codes) - 1)
        found = sorted_codes[pos] == uniq
        ids = np.where(found, order[pos], IGNORE).astype(np.uint8)
        if not found.all() and self.spec.unknown_color == "error":
            c = int(uniq[~found][0])
            raise ValueError(f"label {name}: colour ({c >> 16}, {(c >> 8) & 255}, {c & 255}) is not in the palette"
                             + (f" ({int((~found).sum())} unknown colours)" if (~found).sum() > 1 else ""))
        return ids[inverse.reshape(rgb.shape[:2])]

    # -- identity --
    def fingerprint(self):
        """sha256 of the relative names, sizes and modification times of every file."""
        sha = hashlib.sha256()
        for _, lab, img in self._pairs(labels=self.spec.ann_dir is not None):
            for p in (lab, img):
                if p is not None:
                    st = os.stat(p)
                    rel = os.path.relpath(p, self.spec.data_root)
                    sha.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8"))
        return sha.hexdigest()

    def to_attrs(self, base):
        out = {"kind": self.kind}
        for k, v in asdict(self.spec).items():
            if v is None:
                continue
            if k in ("data_root", "img_dir", "ann_dir", "split"):
                v = _rel(v, base)
            elif k == "label_map":
                v = {str(a): int(b) for a, b in sorted(v.items(), key=lambda t: int(t[0]))}
            elif k in ("palette", "classes"):
                v = [list(c) for c in v] if k == "palette" else list(v)
            out[k] = v
        return out

    @classmethod
    def from_attrs(cls, attrs, base):
        kw = {k: v for k, v in attrs.items() if k != "kind"}
        for k in ("data_root", "img_dir", "ann_dir", "split"):
            if kw.get(k) is not None:
                kw[k] = _abs(kw[k], base)
        if kw.get("palette") is not None:
            kw["palette"] = tuple(tuple(c) for c in kw["palette"])
        if kw.get("classes") is not None:
            kw["classes"] = tuple(kw["classes"])
        return cls(FolderSpec(**kw))


KINDS = {c.kind: c for c in (ShardSet, FolderDataset)}


def from_attrs(attrs, base):
    """The dataset an index stored with `to_attrs(base)`."""
    cls = KINDS.get(attrs.get("kind"))
    if cls is None:
        raise ValueError(f"unknown dataset kind {attrs.get('kind')!r} (this index needs a newer csst, "
                         "or was built by an older one: rebuild it)")
    return cls.from_attrs(attrs, base)


# -- spec files -----------------------------------------------------------------------
def read_spec(path, **overrides):
    """A dataset spec file (JSON or TOML) -> FolderDataset. Relative paths
    resolve against `data_root`, which resolves against the file's folder."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from e
    try:
        if path.lower().endswith(".toml"):
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            obj = tomllib.loads(text.decode("utf-8"))
        else:
            obj = json.loads(text)
    except Exception as e:
        raise ValueError(f"{path}: not a valid spec file ({e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a spec file holds one object of dataset fields")
    unknown = sorted(set(obj) - SPEC_KEYS - {"type"})
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(SPEC_KEYS))})")
    here = os.path.dirname(os.path.realpath(path))
    root = os.path.normpath(os.path.join(here, obj.get("data_root") or "."))
    kw = {k: v for k, v in obj.items() if k in SPEC_KEYS}
    kw["data_root"] = root
    for k in ("img_dir", "ann_dir", "split"):
        if kw.get(k) is not None:
            kw[k] = os.path.normpath(os.path.join(root, kw[k]))
    try:
        spec = _checked_spec(kw, path)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    return FolderDataset(replace(spec, **{k: v for k, v in overrides.items() if v is not None}))


def _checked_spec(kw, where):
    if kw.get("palette") is not None:
        pal = kw["palette"]
        if not all(isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
                   for c in pal):
            raise ValueError("palette must be a list of [r, g, b] with values in 0..255")
        kw["palette"] = tuple(tuple(c) for c in pal)
        if len(set(kw["palette"])) != len(kw["palette"]):
            raise ValueError("palette lists a colour twice")
    if kw.get("classes") is not None:
        if not all(isinstance(c, str) for c in kw["classes"]):
            raise ValueError("classes must be a list of names")
        kw["classes"] = tuple(kw["classes"])
    if kw.get("label_map") is not None:
        try:
            kw["label_map"] = {int(a): int(b) for a, b in dict(kw["label_map"]).items()}
        except (TypeError, ValueError):
            raise ValueError("label_map must map integer raw values to integer class ids") from None
    for k in ("reduce_zero_label",):
        if k in kw and not isinstance(kw[k], bool):
            raise ValueError(f"{k} must be true or false")
    return FolderSpec(**kw)


# -- presets: each public dataset in its official layout -------------------------------
def _first_dir(*paths):
    return next((p for p in paths if os.path.isdir(p)), paths[0])


def _cityscapes(root, split):
    split = split or "train"
    return FolderSpec(
        data_root=root, img_dir=os.path.join(root, "leftImg8bit", split), ann_dir=os.path.join(root, "gtFine", split),
        img_suffix="_leftImg8bit.png", seg_map_suffix="_gtFine_labelIds.png",
        label_map={label: train for train, label in enumerate(tables.CITYSCAPES_TRAIN_TO_LABEL)},
        classes=tables.CITYSCAPES_CLASSES, split_name=split)


def _voc(root, split):
    # ROOT is VOC2012 (or the VOCdevkit above it). Splits ending in "aug" read
    # SBD's SegmentationClassAug (class-id PNGs), as mmseg's voc_aug converter writes it.
    split = split or "train"
    root = _first_dir(os.path.join(root, "VOC2012"), root) if not os.path.isdir(os.path.join(root, "JPEGImages")) else root
    ann = "SegmentationClassAug" if split.endswith("aug") else "SegmentationClass"
    return FolderSpec(
        data_root=root, img_dir=os.path.join(root, "JPEGImages"), ann_dir=os.path.join(root, ann),
        img_suffix=".jpg", split=os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"),
        classes=tables.VOC_CLASSES, split_name=split,
        # Masks saved as RGB instead of palette PNGs: the VOC colours; the border colour is ignore.
        palette=tables.VOC_PALETTE, unknown_color="ignore")


def _ade20k(root, split):
    split = {"train": "training", "val": "validation"}.get(split or "training", split or "training")
    if not os.path.isdir(os.path.join(root, "images")):
        root = _first_dir(os.path.join(root, "ADEChallengeData2016"), root)
    return FolderSpec(
        data_root=root, img_dir=os.path.join(root, "images", split), ann_dir=os.path.join(root, "annotations", split),
        img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=True, classes=tables.ADE20K_CLASSES,
        split_name=split)


def _coco_stuff(root, split):
    # COCO-Stuff 164k: images/{train2017,val2017}/*.jpg and annotations/ with either
    # mmseg's converted *_labelTrainIds.png (171 ids) or the official *.png (raw ids 0..181).
    split = {"train": "train2017", "val": "val2017"}.get(split or "train2017", split or "train2017")
    ann = os.path.join(root, "annotations", split)
    converted = bool(glob.glob(os.path.join(glob.escape(ann), "*_labelTrainIds.png")))
    return FolderSpec(
        data_root=root, img_dir=os.path.join(root, "images", split), ann_dir=ann, img_suffix=".jpg",
        seg_map_suffix="_labelTrainIds.png" if converted else ".png",
        label_map=None if converted else dict(tables.COCO_STUFF_ID_TO_TRAIN),
        classes=tables.COCO_STUFF_CLASSES, split_name=split)


def _loveda(root, split):
    # mmseg's layout img_dir/{train,val,test} + ann_dir/{train,val}, or the
    # official one: {Train,Val,Test}/{Urban,Rural}/{images_png,masks_png}.
    split = split or "train"
    common = dict(data_root=root, img_suffix=".png", seg_map_suffix=".png", reduce_zero_label=True,
                  classes=tables.LOVEDA_CLASSES, split_name=split)
    if os.path.isdir(os.path.join(root, "img_dir")):
        return FolderSpec(img_dir=os.path.join(root, "img_dir", split), ann_dir=os.path.join(root, "ann_dir", split),
                          **common)
    official = os.path.join(root, split.capitalize())
    return FolderSpec(img_dir=os.path.join(official, "*", "images_png", "*.png"),
                      ann_dir=os.path.join(official, "*", "masks_png", "*.png"), **common)


PRESETS = {"cityscapes": _cityscapes, "voc": _voc, "ade20k": _ade20k, "coco-stuff": _coco_stuff, "loveda": _loveda}
PRESET_HELP = {
    "cityscapes": "ROOT with leftImg8bit/ and gtFine/; labelIds -> 19 train ids (default split train)",
    "voc": "VOC2012 (or VOCdevkit) root; 21 classes; splits train, val, trainval, aug (SegmentationClassAug)",
    "ade20k": "ADEChallengeData2016 root; 150 classes, reduce_zero_label (splits training/train, validation/val)",
    "coco-stuff": "COCO-Stuff 164k root (images/, annotations/); 171 classes (splits train2017/train, val2017/val)",
    "loveda": "LoveDA root (mmseg img_dir/ann_dir or official Train/Val); 7 classes, reduce_zero_label",
}


def preset(name, root, split=None):
    """The folder dataset of preset `name` at `root`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    real = os.path.realpath(os.fspath(root))
    if not os.path.isdir(real):
        raise ValueError(f"{name}:{root}: no such folder")
    return FolderDataset(replace(PRESETS[name](real, split or None), preset=name))


# -- the source grammar ----------------------------------------------------------------
@dataclass(frozen=True)
class FolderOptions:
    """Options that describe a bare folder SOURCE (the command line's equivalents of spec fields)."""

    images: str = None
    img_suffix: str = None
    seg_map_suffix: str = None
    reduce_zero_label: bool = False
    num_classes: int = None
    classes: tuple = None
    keys: str = None


def parse_source(text, options=FolderOptions(), role="labels"):
    """A SOURCE string -> Dataset. The one grammar of every command:

    - `PRESET:ROOT[:SPLIT]` (cityscapes, voc, ade20k, coco-stuff, loveda);
    - a spec file (`.json` / `.toml`);
    - a folder holding manifest.json, or an object-store URL of one: a csst shard set;
    - any other folder, glob or file: with role "labels" a mask folder (paired
      with `options.images` when given), with role "images" an image folder.
    """
    if isinstance(text, Dataset):
        return text
    text = os.fspath(text)
    if storage.is_url(text):
        # Object storage holds csst shard sets (pack a folder dataset first: `csst pack SOURCE -o URL`).
        if not is_shard_set(text):
            raise ValueError(f"{text}: no manifest.json there; only csst shard sets are read from object storage "
                             "(make one with `csst pack SOURCE -o URL`)")
        return ShardSet(text)
    head, sep, rest = text.partition(":")
    if sep and head in PRESETS:
        root, _, split = rest.partition(":")
        if not root:
            raise ValueError(f"{text}: give the dataset's root folder, e.g. {head}:/data/{head}")
        return preset(head, root, split or None)
    if text.lower().endswith(SPEC_EXTS) and os.path.isfile(text):
        return read_spec(text)
    if is_shard_set(text):
        return ShardSet(text)
    if os.path.isdir(text):
        # Say what a folder that looks like shards is, rather than "no masks in it".
        from csst_data.runs.shardrun import unfinished_run

        problem = unfinished_run(text)
        if problem:
            raise ValueError(problem)
        if glob.glob(os.path.join(glob.escape(text), "*.tar")):
            raise ValueError(f"{text} holds .tar shards but no manifest.json, so it is not a csst shard set "
                             "(a writer killed before its first shard finished, or shards from another tool)")
    root, pattern = _split_glob(text)
    if not os.path.exists(text) and pattern is None:
        raise ValueError(f"{text}: no such file or folder")
    if not os.path.isdir(root):
        raise ValueError(f"{text}: no such folder")
    o = options
    path = os.path.join(os.path.realpath(root), pattern) if pattern else os.path.realpath(root)
    images = None
    if role == "images":
        images, masks = path, None
    else:
        masks = path
        if o.images is not None:
            if not os.path.isdir(o.images):
                raise ValueError(f"--images {o.images}: no such folder")
            images = os.path.realpath(o.images)
        elif o.img_suffix is not None:
            images = os.path.realpath(root)  # images named by a suffix live next to their masks
    # Stored paths are relative to the deepest folder holding both, as a spec file's data_root.
    base = os.path.commonpath([os.path.realpath(root)] + ([images] if images and role != "images" else []))
    spec = FolderSpec(data_root=base, img_dir=images, ann_dir=masks, img_suffix=o.img_suffix,
                      seg_map_suffix=o.seg_map_suffix or ".png", reduce_zero_label=o.reduce_zero_label,
                      classes=o.classes, num_classes=o.num_classes,
                      keys=o.keys or ("path" if role == "images" else "name"))
    return FolderDataset(spec)


def as_dataset(source, role="labels"):
    """A Dataset, or a SOURCE string / path parsed with default options."""
    return source if isinstance(source, Dataset) else parse_source(source, role=role)


def describe_grammar():
    """The SOURCE forms, for --help texts."""
    return ("SOURCE is a csst shard set (folder with manifest.json, or its s3://, gs://, az:// or https:// URL), "
            "a dataset spec file (.json/.toml), "
            "a folder of masks (pair it with images by --images), or PRESET:ROOT[:SPLIT] with PRESET one of "
            + ", ".join(PRESETS) + ".")
