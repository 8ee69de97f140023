"""Class-name, id-mapping and palette tables for the public datasets csst reads.

Data only: every table below is copied (names and numbers, not code) from the
dataset's own release or from MMSegmentation (open-mmlab/mmsegmentation), whose
tables are the same in mmsegmentation 0.30.0 and 1.2.2. Index i of each class
tuple is the class (train) id i; 255 is the ignore label everywhere.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the tables import nothing at run time
    from collections.abc import Sequence

    import numpy as np

# -- Cityscapes ----------------------------------------------------------------
# The 19 evaluated classes in train-id order (mcordts/cityscapesScripts,
# cityscapesscripts/helpers/labels.py: the labels whose trainId is 0..18; the
# same names as mmseg/datasets/cityscapes.py CityscapesDataset METAINFO classes
#).
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
)

# Cityscapes labelId (`id` in labels.py, the value in *_gtFine_labelIds.png) of
# each train id 0..18. Every other labelId (0-6 void, 9 parking, 10 rail track,
# 14 guard rail, 15 bridge, 16 tunnel, 18 polegroup, 29 caravan, 30 trailer,
# -1 license plate) has trainId 255 (ignore).
CITYSCAPES_TRAIN_TO_LABEL = (
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
)

# Cityscapes' colour of each train id (cityscapesScripts helpers/labels.py, the `color` column).
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# -- PASCAL VOC 2012 -------------------------------------------------------------
# mmseg/datasets/voc.py, PascalVOCDataset METAINFO classes. Index 0 is
# background; in SegmentationClass PNGs (palette mode, index = class id) 255 is
# the void/boundary colour and is ignored.
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

# mmseg/datasets/voc.py, PascalVOCDataset METAINFO palette: the standard VOC
# colormap (RGB; index = class id, so VOC_PALETTE[0] is background). The void
# index 255 is (224, 224, 192) in the VOC PNG palettes and is not listed here.
VOC_PALETTE = (
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0),
    (0, 0, 128), (128, 0, 128), (0, 128, 128), (128, 128, 128),
    (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0),
    (64, 0, 128), (192, 0, 128), (64, 128, 128), (192, 128, 128),
    (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0),
    (0, 64, 128),
)

# -- ADE20K (ADEChallengeData2016 / MIT SceneParsing, 150 classes) -------------
# mmseg/datasets/ade.py, ADE20KDataset METAINFO classes. These are the classes of
# CSAILVision/sceneparsing objectInfo150.txt (Idx 1..150) in the same order,
# named by the first synonym there, except Idx 90 "television, television
# receiver, ..." which mmseg names "television receiver". The annotation PNGs
# hold 0 = other/unlabelled and 1..150 = these classes; mmseg reads them with
# reduce_zero_label=True, so ADE20K_CLASSES[i] is PNG value i + 1 and 0 -> 255.
# Note: mmseg (and objectInfo150.txt) spell Idx 8 "bed " with a trailing space;
# it is stored here as "bed".
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea",
    "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
    "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

# -- COCO-Stuff 164k (171 classes) ---------------------------------------------
# mmseg/datasets/coco_stuff.py, COCOStuffDataset METAINFO classes, in train-id
# order (the ids of the *_labelTrainIds.png files, 255 = ignore). Each name
# equals nightrome/cocostuff labels.txt for the raw value mapped to it below.
COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush", "banner", "blanket", "branch", "bridge", "building-other", "bush",
    "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth",
    "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt",
    "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass",
    "gravel", "ground-other", "hill", "house", "leaves", "light", "mat", "metal",
    "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad",
    "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other",
    "skyscraper", "snow", "solid-other", "stairs", "stone", "straw", "structural-other",
    "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood",
    "water-other", "waterdrops", "window-blind", "window-other", "wood",
)

# (raw value, train id) pairs: mmseg's `clsID_to_trID` from
# tools/dataset_converters/coco_stuff164k.py (1.x; tools/convert_datasets/
# coco_stuff164k.py in 0.x, identical), which turns the official
# stuffthingmaps_trainval2017 PNGs into *_labelTrainIds.png. Raw values are
# 0..181 (the labels.txt id minus 1; 0..90 things, 91..181 stuff) and 255 =
# unlabelled, which the converter keeps as 255 (its `255: 255` entry, left out
# here so that the train ids are exactly 0..170, each once).
# Unused raw values (11 COCO thing classes without segmentation annotations):
# 11 street sign, 25 hat, 28 shoe, 29 eye glasses, 44 plate, 65 mirror,
# 67 window, 68 desk, 70 door, 82 blender, 90 hair brush. They have no entry
# (the converter would leave such pixels unchanged; they do not occur).
COCO_STUFF_ID_TO_TRAIN = (
    (0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7), (8, 8), (9, 9),
    (10, 10), (12, 11), (13, 12), (14, 13), (15, 14), (16, 15), (17, 16), (18, 17),
    (19, 18), (20, 19), (21, 20), (22, 21), (23, 22), (24, 23), (26, 24), (27, 25),
    (30, 26), (31, 27), (32, 28), (33, 29), (34, 30), (35, 31), (36, 32), (37, 33),
    (38, 34), (39, 35), (40, 36), (41, 37), (42, 38), (43, 39), (45, 40), (46, 41),
    (47, 42), (48, 43), (49, 44), (50, 45), (51, 46), (52, 47), (53, 48), (54, 49),
    (55, 50), (56, 51), (57, 52), (58, 53), (59, 54), (60, 55), (61, 56), (62, 57),
    (63, 58), (64, 59), (66, 60), (69, 61), (71, 62), (72, 63), (73, 64), (74, 65),
    (75, 66), (76, 67), (77, 68), (78, 69), (79, 70), (80, 71), (81, 72), (83, 73),
    (84, 74), (85, 75), (86, 76), (87, 77), (88, 78), (89, 79), (91, 80), (92, 81),
    (93, 82), (94, 83), (95, 84), (96, 85), (97, 86), (98, 87), (99, 88), (100, 89),
    (101, 90), (102, 91), (103, 92), (104, 93), (105, 94), (106, 95), (107, 96), (108, 97),
    (109, 98), (110, 99), (111, 100), (112, 101), (113, 102), (114, 103), (115, 104),
    (116, 105), (117, 106), (118, 107), (119, 108), (120, 109), (121, 110), (122, 111),
    (123, 112), (124, 113), (125, 114), (126, 115), (127, 116), (128, 117), (129, 118),
    (130, 119), (131, 120), (132, 121), (133, 122), (134, 123), (135, 124), (136, 125),
    (137, 126), (138, 127), (139, 128), (140, 129), (141, 130), (142, 131), (143, 132),
    (144, 133), (145, 134), (146, 135), (147, 136), (148, 137), (149, 138), (150, 139),
    (151, 140), (152, 141), (153, 142), (154, 143), (155, 144), (156, 145), (157, 146),
    (158, 147), (159, 148), (160, 149), (161, 150), (162, 151), (163, 152), (164, 153),
    (165, 154), (166, 155), (167, 156), (168, 157), (169, 158), (170, 159), (171, 160),
    (172, 161), (173, 162), (174, 163), (175, 164), (176, 165), (177, 166), (178, 167),
    (179, 168), (180, 169), (181, 170),
)

# -- LoveDA ----------------------------------------------------------------------
# mmseg/datasets/loveda.py, LoveDADataset METAINFO classes. The raw masks hold
# 0 = no-data (to be ignored) and 1..7 = these classes (Junjue-Wang/LoveDA
# README.md: "background – 1, building – 2, road – 3, water – 4, barren – 5,
# forest – 6, agriculture – 7. And the no-data regions were assigned 0"; its
# own loader subtracts 1), so mmseg reads them with reduce_zero_label=True:
# LOVEDA_CLASSES[i] is raw value i + 1 and 0 -> 255. (The README says
# "agriculture"; mmseg's name "agricultural" is kept.)
LOVEDA_CLASSES = (
    "background", "building", "road", "water", "barren", "forest", "agricultural",
)

# -- checks ----------------------------------------------------------------------
assert len(CITYSCAPES_CLASSES) == 19
assert len(CITYSCAPES_TRAIN_TO_LABEL) == 19
assert len(CITYSCAPES_PALETTE) == 19
assert len(set(CITYSCAPES_TRAIN_TO_LABEL)) == 19
assert len(VOC_CLASSES) == 21
assert len(VOC_PALETTE) == 21
assert all(len(rgb) == 3 for rgb in VOC_PALETTE)
assert len(ADE20K_CLASSES) == 150
assert len(set(ADE20K_CLASSES)) == 150
assert len(COCO_STUFF_CLASSES) == 171
assert len(set(COCO_STUFF_CLASSES)) == 171
assert len(COCO_STUFF_ID_TO_TRAIN) == 171
assert sorted(t for _, t in COCO_STUFF_ID_TO_TRAIN) == list(range(171))
assert len({r for r, _ in COCO_STUFF_ID_TO_TRAIN}) == 171
assert all(0 <= r <= 181 for r, _ in COCO_STUFF_ID_TO_TRAIN)
assert len(LOVEDA_CLASSES) == 7


def class_palette(class_names: "Sequence[str]") -> "np.ndarray":
    """uint8 C x 3: RGB per class. A dataset's own colours where its table has them (Cityscapes, VOC,
    CamVid, Mapillary Vistas),
    else Cityscapes' colours for the first 19 classes and fixed random ones beyond."""
    import numpy as np

    names = list(class_names)
    from csst_data.datasets import tables_paper as p

    for classes, colours in ((CITYSCAPES_CLASSES, CITYSCAPES_PALETTE), (VOC_CLASSES, VOC_PALETTE),
                             (p.CAMVID_CLASSES, p.CAMVID_PALETTE), (p.MAPILLARY_V12_CLASSES, p.MAPILLARY_V12_PALETTE),
                             (p.MAPILLARY_V20_CLASSES, p.MAPILLARY_V20_PALETTE)):
        if names == list(classes):
            return np.array(colours, np.uint8)
    base = np.array(CITYSCAPES_PALETTE, np.uint8)[:len(names)]
    extra = np.random.default_rng(0).integers(0, 256, (max(0, len(names) - len(base)), 3), dtype=np.uint8)
    return np.concatenate([base, extra])
