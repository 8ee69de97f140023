"""The one SOURCE grammar of every command, and datasets brought back from an index.

`parse_source(text, ...)` turns a SOURCE string into a dataset:

| SOURCE | dataset |
| --- | --- |
| a folder holding manifest.json, or an `s3://`, `gs://`, `az://`, `http(s)://` URL of one | `ShardSet` |
| a spec file (`.json` / `.toml`) | `FolderDataset` (`specs`) |
| `PRESET:ROOT[:SPLIT]` | `FolderDataset` (`presets`) |
| any other folder, glob or file (a mask folder, with `--images`) | `FolderDataset` |
| any of these + `@LIST` / `@~LIST` | `Subset`: the samples a list names / the others (`subsets`) |
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from csst_data.datasets.base import Dataset
from csst_data.datasets.folder import FolderDataset, FolderSpec, split_glob
from csst_data.datasets.presets import PRESETS, preset
from csst_data.datasets.shardset import ShardSet
from csst_data.datasets.specs import SPEC_EXTS, read_spec
from csst_data.datasets.subsets import Subset, split_subset, subset
from csst_data.store import storage
from csst_data.store.shards import is_shard_set

_PRESET_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]+")  # PRESET in PRESET:ROOT (one letter: a Windows drive)
KINDS = {c.kind: c for c in (ShardSet, FolderDataset, Subset)}  # what `to_attrs` stores as "kind" -> the class


def from_attrs(attrs: Mapping, base: str | None) -> Dataset:
    """The dataset an index stored with `to_attrs(base)`."""
    cls = KINDS.get(attrs.get("kind"))
    if cls is None:
        raise ValueError(f"unknown dataset kind {attrs.get('kind')!r} (this index needs a newer csst, "
                         "or was built by an older one: rebuild it)")
    return cls.from_attrs(attrs, base)


@dataclass(frozen=True)
class FolderOptions:
    """Options that describe a bare folder SOURCE (the command line's equivalents of spec fields)."""

    images: str | None = None
    img_suffix: str | None = None
    seg_map_suffix: str | None = None
    reduce_zero_label: bool = False
    num_classes: int | None = None
    classes: tuple | None = None
    keys: str | None = None


def parse_source(text: str | os.PathLike | Dataset, options: FolderOptions = FolderOptions(),
                 role: str = "labels") -> Dataset:
    """A SOURCE string -> Dataset. The one grammar of every command:

    - `PRESET:ROOT[:SPLIT]` (a name in presets.PRESETS);
    - a spec file (`.json` / `.toml`);
    - a folder holding manifest.json, or an object-store URL of one: a csst shard set;
    - any other folder, glob or file: with role "labels" a mask folder (paired
      with `options.images` when given), with role "images" an image folder;
    - any of these followed by `@LIST` (the samples a list file names) or
      `@~LIST` (the others): a `Subset` (`subsets`).
    """
    if isinstance(text, Dataset):
        return text
    text = os.fspath(text)
    picked = split_subset(text)
    if picked is not None:  # SOURCE@LIST, SOURCE@~LIST
        source, listed, rest = picked
        return subset(parse_source(source, options, role), listed, rest)
    named = _named_source(text)
    if named is not None:
        return named
    _check_not_shards(text)
    return _folder_source(text, options, role)


def _named_source(text):
    """The dataset that `text` names by its form (URL, preset, spec file, shard set), or None."""
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
    if sep and _PRESET_NAME.fullmatch(head) and not os.path.exists(text):
        raise ValueError(f"{text}: unknown preset {head!r} (known: {', '.join(PRESETS)})")
    if text.lower().endswith(SPEC_EXTS) and os.path.isfile(text):
        return read_spec(text)
    if is_shard_set(text):
        return ShardSet(text)
    return None


def _check_not_shards(text):
    """Say what a folder that looks like shards is, rather than "no masks in it"."""
    if not os.path.isdir(text):
        return
    from csst_data.runs.shardrun import unfinished_run

    problem = unfinished_run(text)
    if problem:
        raise ValueError(problem)
    if glob.glob(os.path.join(glob.escape(text), "*.tar")):
        raise ValueError(f"{text} holds .tar shards but no manifest.json, so it is not a csst shard set "
                         "(a writer killed before its first shard finished, or shards from another tool)")


def _folder_source(text, options, role):
    """A bare folder, glob or file: masks (role "labels", paired with `options.images`) or images."""
    root, pattern = split_glob(text)
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


def as_dataset(source: str | os.PathLike | Dataset, role: str = "labels") -> Dataset:
    """A Dataset, or a SOURCE string / path parsed with default options."""
    return source if isinstance(source, Dataset) else parse_source(source, role=role)


def describe_grammar() -> str:
    """The SOURCE forms, for --help texts."""
    return ("SOURCE is a csst shard set (folder with manifest.json, or its s3://, gs://, az:// or https:// URL), "
            "a dataset spec file (.json/.toml), "
            "a folder of masks (pair it with images by --images), or PRESET:ROOT[:SPLIT] with PRESET one of "
            + ", ".join(PRESETS) + ".")
