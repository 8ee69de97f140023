"""The demo's classes: Cityscapes' 19 train ids, their colours and label ids, from csst_data's tables.

The class ids double as names for the drawing code (ROAD, SKY, ...). Two
internal void codes keep the ego vehicle and "static" clutter apart while
drawing, so the Cityscapes layout can write them as distinct void ids;
render_scene turns both into IGNORE.
"""

from __future__ import annotations

import numpy as np

from csst_data.datasets.tables import CITYSCAPES_CLASSES, CITYSCAPES_TRAIN_TO_LABEL, class_palette

CLASS_NAMES = CITYSCAPES_CLASSES
NUM_CLASSES = len(CLASS_NAMES)
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON,
 RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(NUM_CLASSES)

PALETTE = class_palette(CLASS_NAMES)  # uint8 19 x 3, Cityscapes' colour of each train id

# Cityscapes label id of each train id (the ids in *_gtFine_labelIds.png).
CITYSCAPES_LABEL_IDS = CITYSCAPES_TRAIN_TO_LABEL

EGO, STATIC = 250, 251  # internal void codes (above every class id, below IGNORE)
CITYSCAPES_LUT = np.zeros(256, np.uint8)  # train id or void code -> Cityscapes label id; 0 = "unlabeled"
CITYSCAPES_LUT[:NUM_CLASSES] = CITYSCAPES_LABEL_IDS
CITYSCAPES_LUT[EGO] = 1      # "ego vehicle"
CITYSCAPES_LUT[STATIC] = 4   # "static"
