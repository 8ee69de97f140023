"""One scene from start to finish: layout, background, objects far to near, texture and noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from csst_data import IGNORE
from csst_demo.background import ego, facades, ground, sky, skyline, walls
from csst_demo.classes import BUILDING, CITYSCAPES_LUT, EGO, PERSON, VEGETATION
from csst_demo.objects import (SHADOWS, Figure, bicycle, bus, car, human, motorcycle, outfit, shadow, static,
                               streetlight, traffic_light, traffic_sign, train, tree, truck)
from csst_demo.scene import BUILDING_COLORS, CAM, PARKING, Scene, smooth_noise, upsample

# -- scene layout ---------------------------------------------------------------
def _layout(rng):
    """Street geometry and building segments, in world units."""
    lane = rng.uniform(2.5, 3.0)
    lanes_left = int(rng.choice([0, 1, 1, 2, 2, 3]))  # oncoming lanes; ours is centred on X = 0
    park_l, park_r = rng.random() < 0.5, rng.random() < 0.6  # parking lanes along the curbs
    p = {
        "lane": lane, "lanes_left": lanes_left, "park_l": park_l, "park_r": park_r,
        "rl": lane * (0.5 + lanes_left) + rng.uniform(0.0, 0.4) + PARKING * park_l,  # road edges
        "rr": lane * 0.5 + rng.uniform(0.2, 0.6) + PARKING * park_r,
        "kind": rng.choice(["city", "city", "suburb", "open"]),
        "sunny": rng.random() < 0.6,
        "sun_side": rng.choice([-1, 1]),
        "solid_centre": rng.random() < 0.5,
    }
    for s in ("l", "r"):
        p["s" + s] = rng.uniform(1.3, 3.2)                         # sidewalk width
        p["g" + s] = 0.0 if rng.random() < 0.5 else rng.uniform(0.6, 4.0)  # grass strip
        p["x" + s] = (p["rl"] if s == "l" else p["rr"]) + p["s" + s] + p["g" + s]  # facade plane
        p["segs" + s] = _segments(rng, "suburb" if p["kind"] == "open" else p["kind"])
    if p["kind"] == "open":  # no buildings on one side: grass up to the skyline
        p["segs" + rng.choice(["l", "r"])] = []
    p["rails"] = rng.random() < 0.06  # trams are the rarest class: in ~5 % of scenes
    p["rail_x"] = -lane * rng.integers(0, lanes_left + 1) if p["rails"] else 0.0
    p["zebra"] = rng.uniform(5, 25) if rng.random() < 0.3 else None
    return p


def _segments(rng, kind):
    """Building / vegetation segments along one side: dicts with z0, z1, kind, height, colour."""
    segs, z = [], rng.uniform(0.5, 3.0)
    end = rng.uniform(70, 160)
    hmin, hmax, p_veg = {"city": (7, 22, 0.12), "suburb": (4, 9, 0.45)}.get(kind, (4, 9, 0.45))
    while z < end:
        if rng.random() < p_veg:
            length = rng.uniform(4, 15)
            segs.append({"z0": z, "z1": z + length, "kind": VEGETATION, "height": rng.uniform(2.5, 7)})
        else:
            length = rng.uniform(8, 30)
            segs.append({
                "z0": z, "z1": z + length, "kind": BUILDING, "height": rng.uniform(hmin, hmax),
                "color": BUILDING_COLORS[rng.integers(len(BUILDING_COLORS))] * rng.uniform(0.8, 1.15)
                + rng.normal(0, 8, 3),
                "win_z": rng.uniform(1.6, 3.2), "win_y": rng.uniform(2.2, 3.0),
                "win_a": rng.uniform(0.35, 0.7), "win_b": rng.uniform(0.45, 0.7), "shop": rng.random() < 0.5,
            })
        z += length + (rng.uniform(1, 6) if rng.random() < 0.2 else 0.0)
    return segs



@dataclass(frozen=True)
class Placed:
    """One object of a scene: its depth, the function that draws it and that function's arguments after the scene."""

    z: float
    draw: Callable
    args: tuple


class _Placer:
    """Collects the objects of a scene; `depth` draws a depth, more objects near than far, as on a street."""

    def __init__(self, s):
        self.s, self.rng, self.objs = s, s.rng, []
        self.zmin = 0.9 * s.f * CAM / (s.h - s.yh)  # 0.9 x the depth of the ground at the bottom row

    def depth(self, lo, hi):
        zmin = self.zmin
        return float(np.exp(self.rng.uniform(np.log(max(lo, zmin)), np.log(max(hi, zmin + 1)))))

    def add(self, z, fn, *args):
        self.objs.append(Placed(z, fn, args))


def _populate(s, p):
    """The objects of a scene, to be painted far to near (sorted by decreasing depth)."""
    pl = _Placer(s)
    for sgn, edge, walk in ((-1, p["rl"], p["sl"]), (1, p["rr"], p["sr"])):
        _street_furniture(pl, sgn, edge, walk)
        _on_the_sidewalk(pl, p, (sgn, edge, walk))
    _traffic(pl, p)
    _crossing(pl, p)
    pl.objs.sort(key=lambda o: -o.z)
    return pl.objs


def _street_furniture(pl, sgn, edge, walk):
    """Tree rows, street lights, signs and traffic lights along one side."""
    rng, zmin, add = pl.rng, pl.zmin, pl.add
    curb_x = sgn * (edge + 0.35)
    if rng.random() < 0.55:  # tree rows
        z = rng.uniform(zmin, zmin + 8)
        gap = rng.uniform(6, 14)
        while z < 70:
            add(z, tree, sgn * (edge + walk * rng.uniform(0.5, 0.85)), z)
            z += gap * rng.uniform(0.8, 1.2)
    if rng.random() < 0.45:  # street lights
        z = rng.uniform(zmin + 2, 25)
        while z < 90:
            add(z, streetlight, curb_x, z, -sgn)
            z += rng.uniform(20, 35)
    for _ in range(rng.poisson(0.8)):
        add_z = pl.depth(4, 60)
        add(add_z, traffic_sign, curb_x + sgn * rng.uniform(0, 0.3), add_z)
    if rng.random() < 0.3:
        z = pl.depth(7, 60)
        add(z, traffic_light, curb_x, z, -sgn)


def _on_the_sidewalk(pl, p, side):
    """Pedestrians, parked bicycles, clutter and parked cars along one side, given as (sign, road edge, walk width)."""
    rng, add, s = pl.rng, pl.add, pl.s
    sgn, edge, walk = side
    for _ in range(rng.poisson(1.3)):  # pedestrians on the sidewalk
        z = pl.depth(4, 50)
        pose = "walk" if rng.random() < 0.6 else "stand"
        add(z, human, sgn * (edge + rng.uniform(0.3, walk)), z, Figure(PERSON, rng.uniform(1.2, 1.5), outfit(s), pose))
    for _ in range(rng.poisson(0.12)):  # parked bicycles
        z = pl.depth(4, 30)
        add(z, bicycle, sgn * (edge + rng.uniform(0.4, walk)), z, rng.choice([-1, 1]), False)
    if rng.random() < 0.25:
        z = pl.depth(8, 40)
        add(z, static, sgn * (edge + rng.uniform(0.4, walk)), z)
    if p["park_l" if sgn < 0 else "park_r"]:  # parked cars along the curb
        z = rng.uniform(pl.zmin, pl.zmin + 6)
        while z < 60:
            if rng.random() < 0.75:
                add(z, car, sgn * (edge - PARKING / 2), z, 1 if sgn > 0 else rng.choice([-1, 1]))
            z += rng.uniform(4.6, 7)


def _traffic(pl, p):
    """Vehicles in the lanes: our direction (seen from behind) at X ~ 0, oncoming on the left; a tram on rails."""
    rng, add = pl.rng, pl.add
    lane = p["lane"]
    lanes = [(-k * lane, 1 if k == 0 else -1) for k in range(p["lanes_left"] + 1)]
    for x, facing in lanes:
        z = rng.uniform(pl.zmin + 3, 15)
        while z < 80:
            u = rng.random()
            xx = x + rng.uniform(-0.3, 0.3)
            if u < 0.045:
                add(z, truck, xx, z, facing)
                z += 9
            elif u < 0.08:
                add(z, bus, xx, z, facing)
                z += 14
            else:
                add(z, car, xx, z, facing)
            z += rng.uniform(6, 20)
    if p["rails"] and rng.random() < 0.8:
        z = pl.depth(14, 60)
        add(z, train, p["rail_x"], z, rng.choice([-1, 1]))


def _crossing(pl, p):
    """Two-wheelers (side view, mostly ridden) on the road edge or crossing, and people on the zebra crossing."""
    rng, add, s = pl.rng, pl.add, pl.s
    rl, rr = p["rl"], p["rr"]
    for _ in range(rng.poisson(0.3)):
        z = pl.depth(5, 40)
        x = rng.uniform(-rl + 0.5, rr + 0.5)
        add(z, bicycle, x, z, rng.choice([-1, 1]), rng.random() < 0.75)
    for _ in range(rng.poisson(0.15)):
        z = pl.depth(5, 40)
        x = rng.uniform(-rl + 0.5, rr + 0.5)
        add(z, motorcycle, x, z, rng.choice([-1, 1]), rng.random() < 0.7)
    if p["zebra"] is not None:  # people crossing
        for _ in range(rng.poisson(1.5)):
            z = p["zebra"] + rng.uniform(0.3, 2.0)
            add(z, human, rng.uniform(-rl, rr), z, Figure(PERSON, rng.uniform(1.2, 1.5), outfit(s), "walk"))


def _finish(s, rng):
    """Texture, lighting and sensor noise; returns the uint8 image."""
    h, w = s.h, s.w
    # Two octaves of smooth noise, summed at the coarse grid and upsampled once.
    fine_grid = smooth_noise(rng, 41, int(41 * w / h) + 1, 12) * 0.6
    fine_grid += rng.standard_normal(fine_grid.shape).astype(np.float32) * 0.8
    mot = upsample(fine_grid, h, w)
    light = s.light * (1 + s.mottle * mot)
    # Global light: brightness, a colour cast, and a soft left-right gradient.
    gain = rng.uniform(0.7, 1.2) * (1 + rng.uniform(-0.25, 0.25) * (np.arange(w, dtype=np.float32) / w - 0.5))
    light *= gain[None, :].astype(np.float32)
    # Channel-planar arithmetic: broadcasting over a trailing axis of 3 is slow.
    img = np.ascontiguousarray(s.color.transpose(2, 0, 1))
    img *= light
    img *= rng.uniform(0.93, 1.07, 3).astype(np.float32)[:, None, None]  # colour cast
    img += s.fine * ((rng.random((h, w), dtype=np.float32) - np.float32(0.5)) * np.float32(3.46))
    # Sensor noise, uniform (cheaper to draw than normal) with sd 1.5-4.
    img += (rng.random((3, h, w), dtype=np.float32) - np.float32(0.5)) * np.float32(rng.uniform(1.5, 4.0) * 3.46)
    np.clip(img, 0, 255, out=img)
    return np.ascontiguousarray(img.astype(np.uint8).transpose(1, 2, 0))


def shift_appearance(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """The whole scene's appearance shifted, as weather, time of day and cameras differ between
    drives: exposure, contrast, white balance and haze, each drawn with a spread of `strength`
    (0: unchanged; 1: dusk to glare, heavy casts, fog). Labels do not change."""
    exposure = np.exp(rng.normal(0.0, 0.4 * strength))
    contrast = np.exp(rng.normal(0.0, 0.35 * strength))
    cast = np.exp(rng.normal(0.0, 0.2 * strength, 3)).astype(np.float32)
    haze = rng.uniform(0.0, 0.6 * strength) if rng.random() < 0.5 else 0.0
    x = image.astype(np.float32)
    mean = x.mean()
    x = ((x - mean) * contrast + mean) * (exposure * cast)
    x = x * (1 - haze) + haze * np.float32(200.0)
    return np.clip(x, 0, 255).astype(np.uint8)


def render_raw(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image, label with internal void codes) of one scene."""
    s = Scene(height, width, rng)
    p = _layout(rng)
    sky(s, p)
    ground(s, p)
    skyline(s, p)
    facades(s, p)
    walls(s, p)
    for o in _populate(s, p):
        if o.draw in SHADOWS:  # vehicles darken the ground under them
            half, length = SHADOWS[o.draw]
            x = o.args[0]
            shadow(s, x - half - 0.1, x + half + 0.1, o.z - 0.2, o.z + length)
        o.draw(s, *o.args)
    if rng.random() < 0.5:
        ego(s)
    return _finish(s, rng), s.label


def render_scene(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (image uint8 H x W x 3 RGB, label uint8 H x W, 255 = ignore)."""
    if height < 16 or width < 16:
        raise ValueError(f"render_scene: size {height}x{width} is too small (at least 16x16)")
    image, label = render_raw(int(height), int(width), rng)
    label[label >= EGO] = IGNORE
    return image, label


def to_cityscapes_ids(label: np.ndarray) -> np.ndarray:
    """Train-id label (255 = ignore) -> Cityscapes label ids (ignore -> 0, "unlabeled")."""
    return CITYSCAPES_LUT[label]
