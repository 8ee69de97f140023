"""Images and masks in folders, as mmsegmentation reads them.

A `FolderDataset` has the fields of mmsegmentation's `BaseSegDataset` (same
names and meaning, so a config's values can be copied): `img_dir`, `ann_dir`,
`img_suffix`, `seg_map_suffix`, `split` (a text file of stems),
`reduce_zero_label`, `ignore_index`, `classes`, and csst's `label_map` (raw
value -> class id, unlisted values -> ignore) and `palette` (RGB colour ->
class id, for colour-coded masks). Spec files (`specs`) and presets
(`presets`) are two ways of filling in a `FolderSpec`.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from csst_data import IGNORE
from csst_data.datasets.base import (CONTENT_PREFIX, Columns, Dataset, absolute_path, file_digests, int_columns,
                                    new_columns, relative_path, sanitise_key, source_name)
from csst_data.store.codecs import LabelDecoder, decode_label_bytes, is_npy_zst, wide_grey
from csst_data.store.shards import RangeReader

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class FolderSpec:
    """The fields of an images + masks dataset (a spec file holds the same keys).

    Paths are absolute here; in a spec file they are relative to `data_root`,
    itself relative to the spec file's folder.
    """

    data_root: str                       # stored paths are relative to it
    img_dir: str | None = None           # folder (or glob) of images; None: masks only
    ann_dir: str | None = None           # folder (or glob) of masks; None: images only
    img_suffix: str | None = None        # e.g. ".jpg", "_leftImg8bit.png"; None: any of .jpg .jpeg .png
    seg_map_suffix: str = ".png"         # e.g. "_gtFine_labelIds.png"
    split: str | None = None             # text file of stems (relative paths without suffix), one a line
    reduce_zero_label: bool = False      # 0 -> ignore, v -> v - 1 (ADE20K, LoveDA, ...)
    label_map: dict | None = None        # raw value -> class id; unlisted values -> ignore
    palette: tuple | None = None         # [(r, g, b)] whose index is the class id, for RGB masks
    unknown_color: str = "error"         # an RGB colour not in the palette: "error" or "ignore"
    classes: tuple | None = None         # class names; their number is num_classes
    num_classes: int | None = None       # when there are no names
    ignore_index: int = IGNORE           # the raw value that means "not labelled"
    keys: str = "name"                   # "name": file name less suffix; "path": path below the folder
    preset: str | None = None            # which preset made it (for messages)
    split_name: str | None = None        # the preset's split (for messages)


def split_glob(path: str | os.PathLike) -> tuple[str, str | None]:
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
    root, pattern = split_glob(folder)
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
                stem = rel[: -len(s)]
                if stem in out:  # x.jpg beside x.png: which one is the sample is not ours to guess
                    raise ValueError(f"{name}: two {what}s have the key {os.path.basename(stem)!r}: "
                                     f"{out[stem]} and {p}")
                out[stem] = p
                break
    return root, out


def _palette_codes(palette):
    return np.array([(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in palette], np.int64)


class FolderDataset(Dataset):
    """Images and masks in folders, paired by stem, read as mmsegmentation reads them."""

    kind = "folder"

    def __init__(self, spec: FolderSpec) -> None:
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
    def name(self) -> str:
        return source_name(vars(self.spec))

    @property
    def classes(self) -> list[str] | None:
        return list(self.spec.classes) if self.spec.classes is not None else None

    @property
    def num_classes(self) -> int | None:
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
        for stem in (self._split_stem(t, img_suffixes) for t in stems):
            lab = img = None
            if want_labels:
                lab = os.path.join(s.ann_dir, stem + s.seg_map_suffix)
                if not os.path.isfile(lab):
                    raise ValueError(f"{self.name}: {lab} (listed in {os.path.basename(s.split)}) is missing")
            if want_images:
                found = [os.path.join(s.img_dir, stem + x) for x in img_suffixes
                         if os.path.isfile(os.path.join(s.img_dir, stem + x))]
                if len(found) > 1:
                    raise ValueError(f"{self.name}: two images have the key {self._key(stem)!r}: "
                                     f"{found[0]} and {found[1]}")
                img = found[0] if found else None
                if img is None:
                    raise ValueError(f"{self.name}: image {os.path.join(s.img_dir, stem + img_suffixes[0])} "
                                     f"(listed in {os.path.basename(s.split)}) is missing")
            key = self._key(stem)
            if key in seen:
                raise ValueError(f"{self.name}: {s.split} lists {stem!r} and {seen[key]!r}, both key {key!r}")
            seen[key] = stem
            out.append((key, lab, img))
        return sorted(out, key=lambda t: t[0])

    def _split_stem(self, token, img_suffixes):
        """A split file's entry -> the stem below img_dir. Entries are stems ("aachen/aachen_000000_000019"),
        or image paths as the semi-supervised codebases list them, relative to the dataset's root or
        absolute ("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png", SegNet's
        "/SegNet/CamVid/train/0001TP_006690.png"): the suffix is dropped and the path's longest tail
        that names an image under img_dir is the stem."""
        img_dir = self.spec.img_dir
        if img_dir is None:
            return token
        base = next((token[:-len(x)] for x in img_suffixes if token.lower().endswith(x.lower())), token)
        parts = [p for p in base.replace("\\", "/").split("/") if p]
        for i in range(len(parts)):
            tail = os.path.join(*parts[i:])
            if any(os.path.isfile(os.path.join(img_dir, tail + x)) for x in img_suffixes):
                return tail
        return token

    def samples(self, labels: bool | None = True) -> Columns:
        if labels is None:  # labels where the dataset has them
            labels = self.spec.ann_dir is not None
        cols = new_columns()
        root = self.spec.data_root
        for key, lab, img in self._pairs(labels):
            cols["key"].append(key)
            cols["shard"].append(-1)
            for c in ("label_offset", "label_size", "image_offset", "image_size"):
                cols[c].append(-1)
            cols["label_path"].append(os.path.relpath(lab, root) if lab else "")
            cols["image_path"].append(os.path.relpath(img, root) if img else "")
        return int_columns(cols)

    def read(self, reader: RangeReader, shard: int, offset: int, size: int, path: str) -> bytes:
        if not path:
            raise ValueError(f"{self.name}: sample has no such file")
        return reader.read(os.path.join(self.spec.data_root, path))

    def image_refs(self) -> list[tuple[str, str]]:
        return [(key, img) for key, _, img in self._pairs(labels=False)]

    def describe(self, cols: Mapping, i: int, what: str = "label") -> str:
        return os.path.join(self.spec.data_root, cols[f"{what}_path"][i])

    # -- labels --
    def decode_label(self, data: bytes, name: str | None = None, decode: LabelDecoder | None = None) -> np.ndarray:
        if is_npy_zst(data):
            raw = (decode or decode_label_bytes)(data, name)
        else:
            raw = self._decode_image_mask(data, name)
            if raw.ndim == 3:
                ids = self._colours_to_ids(raw, name)
                # A palette numbers the colours; a label_map then maps those numbers to classes
                # (CamVid's 32 colours -> 11 classes).
                return self.lut[ids] if self.spec.label_map is not None and self.lut is not None else ids
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
            grey = wide_grey(img, scale=False)
            if grey is not None:
                return grey
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
    def fingerprint(self, content: bool = False, workers: int = 1) -> str:
        """sha256 of the relative names and the sizes and modification times of every file
        (with `content`: the sha256 of each file's bytes)."""
        files = [p for _, lab, img in self._pairs(labels=self.spec.ann_dir is not None)
                 for p in (lab, img) if p is not None]
        if content:
            what = file_digests(files, workers)
        else:
            what = [f"{st.st_size}\0{st.st_mtime_ns}" for st in map(os.stat, files)]
        sha = hashlib.sha256()
        for p, w in zip(files, what):
            sha.update(f"{os.path.relpath(p, self.spec.data_root)}\0{w}\n".encode("utf-8"))
        return (CONTENT_PREFIX if content else "") + sha.hexdigest()

    def to_attrs(self, base: str | None) -> dict:
        out = {"kind": self.kind}
        for k, v in asdict(self.spec).items():
            if v is None:
                continue
            if k in ("data_root", "img_dir", "ann_dir", "split"):
                v = relative_path(v, base)
            elif k == "label_map":
                v = {str(a): int(b) for a, b in sorted(v.items(), key=lambda t: int(t[0]))}
            elif k in ("palette", "classes"):
                v = [list(c) for c in v] if k == "palette" else list(v)
            out[k] = v
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping, base: str | None) -> FolderDataset:
        kw = {k: v for k, v in attrs.items() if k != "kind"}
        for k in ("data_root", "img_dir", "ann_dir", "split"):
            if kw.get(k) is not None:
                kw[k] = absolute_path(kw[k], base)
        if kw.get("palette") is not None:
            kw["palette"] = tuple(tuple(c) for c in kw["palette"])
        if kw.get("classes") is not None:
            kw["classes"] = tuple(kw["classes"])
        return cls(FolderSpec(**kw))
