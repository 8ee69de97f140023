"""Presets: each public dataset in its official layout, as a folder dataset.

`PRESETS` is the registry (name -> `Preset`); `PRESET:ROOT[:SPLIT]` in the
source grammar finds a preset there. The label tables are in `tables`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from csst_data.datasets import tables
from csst_data.datasets.folder import FolderDataset, FolderSpec


@dataclass(frozen=True)
class Preset:
    """A public dataset's official layout and label convention."""

    name: str
    help: str                                   # one line for --help texts
    layout: Callable[[str, str], FolderSpec]    # (real root folder, split) -> the dataset's fields
    default_split: str                          # the split when none is given
    split_aliases: Mapping[str, str] = field(default_factory=dict)  # short names of the official split names

    def split(self, split: str | None) -> str:
        """The official name of `split` (None: the default split)."""
        split = split or self.default_split
        return self.split_aliases.get(split, split)

    def spec(self, root: str, split: str | None = None) -> FolderSpec:
        """The fields of this dataset at the real folder `root`."""
        return replace(self.layout(root, self.split(split)), preset=self.name)


def _first_dir(*paths):
    return next((p for p in paths if os.path.isdir(p)), paths[0])


def _cityscapes(root, split):
    return FolderSpec(
        data_root=root, img_dir=os.path.join(root, "leftImg8bit", split), ann_dir=os.path.join(root, "gtFine", split),
        img_suffix="_leftImg8bit.png", seg_map_suffix="_gtFine_labelIds.png",
        label_map={label: train for train, label in enumerate(tables.CITYSCAPES_TRAIN_TO_LABEL)},
        classes=tables.CITYSCAPES_CLASSES, split_name=split)


def _voc(root, split):
    # ROOT is VOC2012 (or the VOCdevkit above it). Splits ending in "aug" read
    # SBD's SegmentationClassAug (class-id PNGs), as mmseg's voc_aug converter writes it.
    root = _first_dir(os.path.join(root, "VOC2012"), root) if not os.path.isdir(os.path.join(root, "JPEGImages")) else root
    ann = "SegmentationClassAug" if split.endswith("aug") else "SegmentationClass"
    return FolderSpec(
        data_root=root, img_dir=os.path.join(root, "JPEGImages"), ann_dir=os.path.join(root, ann),
        img_suffix=".jpg", split=os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"),
        classes=tables.VOC_CLASSES, split_name=split,
        # Masks saved as RGB instead of palette PNGs: the VOC colours; the border colour is ignore.
        palette=tables.VOC_PALETTE, unknown_color="ignore")


def _ade20k(root, split):
    if not os.path.isdir(os.path.join(root, "images")):
        root = _first_dir(os.path.join(root, "ADEChallengeData2016"), root)
    return FolderSpec(
        data_root=root, img_dir=os.path.join(root, "images", split), ann_dir=os.path.join(root, "annotations", split),
        img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=True, classes=tables.ADE20K_CLASSES,
        split_name=split)


def _coco_stuff(root, split):
    # COCO-Stuff 164k: images/{train2017,val2017}/*.jpg and annotations/ with either
    # mmseg's converted *_labelTrainIds.png (171 ids) or the official *.png (raw ids 0..181).
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
    common = dict(data_root=root, img_suffix=".png", seg_map_suffix=".png", reduce_zero_label=True,
                  classes=tables.LOVEDA_CLASSES, split_name=split)
    if os.path.isdir(os.path.join(root, "img_dir")):
        return FolderSpec(img_dir=os.path.join(root, "img_dir", split), ann_dir=os.path.join(root, "ann_dir", split),
                          **common)
    official = os.path.join(root, split.capitalize())
    return FolderSpec(img_dir=os.path.join(official, "*", "images_png", "*.png"),
                      ann_dir=os.path.join(official, "*", "masks_png", "*.png"), **common)


PRESETS = {p.name: p for p in (
    Preset("cityscapes", "ROOT with leftImg8bit/ and gtFine/; labelIds -> 19 train ids (default split train)",
           _cityscapes, "train"),
    Preset("voc", "VOC2012 (or VOCdevkit) root; 21 classes; splits train, val, trainval, aug (SegmentationClassAug)",
           _voc, "train"),
    Preset("ade20k", "ADEChallengeData2016 root; 150 classes, reduce_zero_label (splits training/train, validation/val)",
           _ade20k, "training", {"train": "training", "val": "validation"}),
    Preset("coco-stuff", "COCO-Stuff 164k root (images/, annotations/); 171 classes (splits train2017/train, val2017/val)",
           _coco_stuff, "train2017", {"train": "train2017", "val": "val2017"}),
    Preset("loveda", "LoveDA root (mmseg img_dir/ann_dir or official Train/Val); 7 classes, reduce_zero_label",
           _loveda, "train"),
)}
PRESET_HELP = {name: p.help for name, p in PRESETS.items()}


def preset(name: str, root: str | os.PathLike, split: str | None = None) -> FolderDataset:
    """The folder dataset of preset `name` at `root`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    real = os.path.realpath(os.fspath(root))
    if not os.path.isdir(real):
        raise ValueError(f"{name}:{root}: no such folder")
    return FolderDataset(PRESETS[name].spec(real, split or None))
