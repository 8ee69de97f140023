"""Objects standing on the ground: trees, poles, lights, signs, people, two-wheelers, vehicles, clutter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from csst_demo.classes import (BICYCLE, BUS, CAR, LIGHT, MOTORCYCLE, PERSON, POLE, RIDER, SIGN, STATIC, TRAIN,
                               TRUCK, VEGETATION)
from csst_demo.scene import CAR_COLORS, CLOTHES, GLASS, HEAVY_COLORS, SKIN, TWO_WHEEL_COLORS, Scene

def tree(s: Scene, X: float, Z: float) -> None:
    rng = s.rng
    trunk_h = rng.uniform(1.6, 3.0)
    r = rng.uniform(1.0, 2.2)
    bark = s.jitter((78, 66, 52), 8)
    s.fill(s.rect(X - 0.09, X + 0.09, 0, trunk_h + r * 0.5, Z), VEGETATION, bark, fine=8, mottle=0.15)
    leaf = s.jitter(rng.choice([[58, 96, 40], [72, 108, 45], [48, 80, 38], [110, 112, 45]]), 8)
    for _ in range(rng.integers(3, 7)):
        rad = r * rng.uniform(0.45, 0.8)
        s.fill(s.disk(X + rng.uniform(-0.6, 0.6) * r, trunk_h + r + rng.uniform(-0.4, 0.5) * r, Z, rad,
                      rad * rng.uniform(0.8, 1.1)),
               VEGETATION, leaf * rng.uniform(0.85, 1.15), fine=16, mottle=0.35)


def _pole(s, X, Z, height, width=0.07):
    color = s.jitter(s.rng.choice([[120, 120, 125], [55, 62, 55], [70, 70, 72]]), 6)
    s.fill(s.rect(X - width / 2, X + width / 2, 0, height, Z), POLE, color, fine=2, mottle=0.04)
    return color


def streetlight(s: Scene, X: float, Z: float, toward: int) -> None:
    height = s.rng.uniform(4.0, 6.5)
    color = _pole(s, X, Z, height)
    arm = X + toward * s.rng.uniform(0.6, 1.6)
    s.fill(s.segment((X, height - 0.05), (arm, height + 0.1), Z, 0.06), POLE, color, fine=2)
    s.fill(s.rect(min(arm, arm - toward * 0.5), max(arm, arm - toward * 0.5), height, height + 0.14, Z),
           POLE, color * 0.8, fine=2)


def traffic_light(s: Scene, X: float, Z: float, toward: int) -> None:
    rng = s.rng
    if rng.random() < 0.3:  # hanging over the road from an arm
        height = rng.uniform(4.5, 5.5)
        color = _pole(s, X, Z, height + 0.3, 0.1)
        cx = X + toward * rng.uniform(1.5, 3.5)
        s.fill(s.segment((X, height), (cx, height), Z, 0.08), POLE, color, fine=2)
        top = height
    else:
        top = rng.uniform(2.8, 3.4)
        _pole(s, X, Z, top - 0.1, 0.09)
        cx = X
    box = s.jitter(rng.choice([[32, 32, 32], [180, 150, 40], [60, 70, 60]]), 5)
    front = rng.random() < 0.8
    s.fill(s.rect(cx - 0.16, cx + 0.16, top - 0.85, top, Z), LIGHT, box, fine=2, mottle=0.03)
    if front:
        lit = rng.integers(3)
        for j, lamp in enumerate(([255, 40, 30], [255, 190, 30], [60, 230, 100])):
            c = np.array(lamp, np.float32) if j == lit else np.array(lamp, np.float32) * 0.25
            s.fill(s.disk(cx, top - 0.15 - 0.27 * j, Z, 0.085), LIGHT, c, fine=1, mottle=0.0)


def traffic_sign(s: Scene, X: float, Z: float) -> None:
    rng = s.rng
    top = rng.uniform(2.2, 2.9)
    _pole(s, X, Z, top - 0.2, 0.06)
    r = rng.uniform(0.22, 0.32)
    cy = top - r
    kind = rng.integers(5)
    if not rng.random() < 0.8:  # seen from behind: a grey plate
        s.fill(s.disk(X, cy, Z, r), SIGN, s.jitter((150, 150, 152), 6), fine=2)
    elif kind == 0:  # prohibitory: red ring, white disc
        s.fill(s.disk(X, cy, Z, r), SIGN, (200, 30, 35), fine=2)
        s.fill(s.disk(X, cy, Z, r * 0.72), SIGN, (235, 235, 232), fine=2)
    elif kind == 1:  # mandatory: blue disc, white arrow
        s.fill(s.disk(X, cy, Z, r), SIGN, (30, 75, 170), fine=2)
        s.fill(s.rect(X - r * 0.12, X + r * 0.12, cy - r * 0.55, cy + r * 0.5, Z), SIGN, (235, 235, 235), fine=2)
    elif kind == 2:  # warning: red triangle, white inside
        t = np.array([-1.0, 1.0, 0.0])
        s.fill(s.poly(X + t * r * 1.1, cy + np.array([-0.8, -0.8, 1.1]) * r, Z), SIGN, (200, 30, 35), fine=2)
        s.fill(s.poly(X + t * r * 0.7, cy + np.array([-0.55, -0.55, 0.65]) * r, Z), SIGN, (235, 235, 230), fine=2)
    elif kind == 3:  # information: blue square
        s.fill(s.rect(X - r, X + r, cy - r, cy + r, Z), SIGN, (30, 75, 170), fine=2)
        s.fill(s.rect(X - r * 0.3, X + r * 0.3, cy - r * 0.6, cy + r * 0.2, Z), SIGN, (235, 235, 235), fine=2)
    else:  # priority road: yellow diamond on white
        s.fill(s.poly(X + np.array([0, r, 0, -r]), cy + np.array([-r, 0, r, 0]), Z), SIGN, (235, 235, 230), fine=2)
        s.fill(s.poly(X + np.array([0, r, 0, -r]) * 0.6, cy + np.array([-r, 0, r, 0]) * 0.6, Z), SIGN,
               (235, 190, 30), fine=2)


@dataclass(frozen=True)
class Figure:
    """Who `human` draws: class (PERSON or RIDER), height, clothes (top, legs, skin colours) and pose."""

    cls: int
    height: float
    clothes: tuple
    pose: str = "stand"  # "stand", "walk", or "ride" (sitting at `seat`, facing `d`)
    d: int = 1  # a rider's direction: +1 to the right, -1 to the left
    seat: Optional[tuple] = None  # (X, Y) of a rider's hip
    helmet: float = 0.0  # a rider's chance of wearing a helmet


def human(s: Scene, X: float, Z: float, fig: Figure) -> None:
    """A person standing or walking, or (cls=RIDER) sitting on a two-wheeler at `fig.seat`."""
    head = _riding_body(s, Z, fig) if fig.pose == "ride" else _standing_body(s, X, Z, fig)
    _head(s, Z, fig, head)


def _riding_body(s, Z, fig):
    """Legs, torso and arm of a rider; returns the neck point."""
    top_c, legs_c, _ = fig.clothes
    cls, height, d = fig.cls, fig.height, fig.d
    hip = np.array(fig.seat, float)
    shoulder = hip + np.array([d * 0.22, 0.42]) * height / 1.4
    knee = hip + np.array([d * 0.28, -0.12]) * height / 1.4
    foot = knee + np.array([-d * 0.08, -0.38]) * height / 1.4
    s.fill(s.segment(hip, knee, Z, 0.16 * height / 1.4), cls, legs_c, fine=4)
    s.fill(s.segment(knee, foot, Z, 0.13 * height / 1.4), cls, legs_c, fine=4)
    s.fill(s.segment(hip, shoulder, Z, 0.27 * height / 1.4), cls, top_c, fine=4, mottle=0.06)
    hand = hip + np.array([d * 0.5, 0.2]) * height / 1.4
    s.fill(s.segment(shoulder, hand, Z, 0.08 * height / 1.4), cls, top_c * 0.9, fine=4)
    return shoulder + np.array([d * 0.04, 0.15]) * height / 1.4


def _standing_body(s, X, Z, fig):
    """Legs, torso and arms of a person standing or walking; returns the neck point."""
    top_c, legs_c, _ = fig.clothes
    cls, height = fig.cls, fig.height
    hx = 0.085 * height  # half the width of the hips
    stride = s.rng.uniform(0.05, 0.16) * height if fig.pose == "walk" else 0.02 * height
    hip_y = 0.48 * height
    for sx in (-1, 1):
        s.fill(s.segment((X + sx * hx * 0.5, hip_y), (X + sx * (hx * 0.4 + stride), 0.0), Z, 0.075 * height),
               cls, legs_c, fine=4)
    s.fill(s.poly([X - hx, X + hx, X + hx * 1.25, X - hx * 1.25], [hip_y - 0.03, hip_y - 0.03,
                                                                 0.8 * height, 0.8 * height], Z),
           cls, top_c, fine=4, mottle=0.06)
    for sx in (-1, 1):
        s.fill(s.segment((X + sx * hx * 1.2, 0.78 * height), (X + sx * (hx * 1.3 + stride * 0.4), 0.45 * height),
                         Z, 0.05 * height), cls, top_c * 0.9, fine=4)
    return np.array([X, 0.8 * height])


def _head(s, Z, fig, head):
    """Face, and a helmet (riders, by chance) or hair."""
    rng, cls, height = s.rng, fig.cls, fig.height
    hc = head + np.array([0, 0.08 * height])
    s.fill(s.disk(hc[0], hc[1], Z, 0.06 * height, 0.075 * height), cls, fig.clothes[2], fine=3)
    if fig.pose == "ride" and rng.random() < fig.helmet:
        s.fill(s.disk(hc[0], hc[1] + 0.02 * height, Z, 0.075 * height, 0.07 * height), cls,
               s.jitter(rng.choice([[30, 30, 30], [220, 220, 220], [180, 30, 30]]), 6), fine=2)
    else:  # hair
        s.fill(s.disk(hc[0], hc[1] + 0.04 * height, Z, 0.06 * height, 0.04 * height), cls,
               s.jitter(rng.choice([[30, 25, 20], [90, 60, 35], [160, 130, 80]]), 6), fine=3)


def outfit(s: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = s.rng
    return (s.jitter(CLOTHES[rng.integers(len(CLOTHES))], 10), s.jitter(CLOTHES[rng.integers(len(CLOTHES))], 10),
            s.jitter(SKIN[rng.integers(len(SKIN))], 8))


def _ring(s, X, Y, Z, r, thick, cls, tyre, inner_alpha):
    """A wheel: dark tyre ring; the inside keeps most of what is behind (spokes)."""
    outer = s.disk(X, Y, Z, r)
    if len(outer[0]) == 0:
        return
    inner = s.disk(X, Y, Z, r - thick)
    s.fill(outer, cls, tyre, fine=2)
    if len(inner[0]):
        s.label[inner] = cls
        s.color[inner] = s.color[inner] * (1 - inner_alpha) + np.float32(inner_alpha * 150)


def bicycle(s: Scene, X: float, Z: float, d: int, rider: bool) -> None:
    rng = s.rng
    frame = s.jitter(TWO_WHEEL_COLORS[rng.integers(len(TWO_WHEEL_COLORS))], 10)
    r, wb, t = 0.27, 0.84, 0.035
    rear, front = (X - d * wb / 2, r), (X + d * wb / 2, r)
    bb = (X - d * 0.05, r * 0.95)
    seat = (X - d * 0.2, 0.78)
    head = (X + d * 0.3, 0.8)
    for wx in (rear[0], front[0]):
        _ring(s, wx, r, Z, r, 0.045, BICYCLE, (25, 25, 25), 0.3)
    for a, b in ((rear, bb), (rear, seat), (bb, seat), (seat, head), (bb, head), (head, front)):
        s.fill(s.segment(a, b, Z, t), BICYCLE, frame, fine=2)
    s.fill(s.segment((head[0] - d * 0.04, 0.9), (head[0] + d * 0.05, 0.92), Z, 0.03), BICYCLE, (30, 30, 30))
    s.fill(s.rect(seat[0] - 0.07, seat[0] + 0.07, seat[1], seat[1] + 0.04, Z), BICYCLE, (25, 25, 25))
    if rider:
        human(s, X, Z, Figure(RIDER, rng.uniform(1.25, 1.45), outfit(s), "ride", d, seat=(seat[0], seat[1] + 0.03),
                              helmet=0.4))
    elif rng.random() < 0.3:  # its owner standing next to it: a person, not a rider
        human(s, X + rng.uniform(-0.6, 0.6), Z - 0.3, Figure(PERSON, rng.uniform(1.25, 1.45), outfit(s)))


def motorcycle(s: Scene, X: float, Z: float, d: int, rider: bool) -> None:
    rng = s.rng
    body = s.jitter(TWO_WHEEL_COLORS[rng.integers(len(TWO_WHEEL_COLORS))], 10)
    r, wb = 0.3, 1.1
    for wx in (X - d * wb / 2, X + d * wb / 2):
        _ring(s, wx, r, Z, r, 0.1, MOTORCYCLE, (20, 20, 22), 0.8)
    xs = X + d * np.array([-0.55, -0.25, 0.2, 0.45, 0.55, 0.15, -0.3])
    ys = np.array([0.62, 0.78, 0.86, 0.95, 0.6, 0.35, 0.4])
    s.fill(s.poly(xs, ys, Z), MOTORCYCLE, body, fine=2, mottle=0.03)
    s.fill(s.rect(X - 0.18, X + 0.18, 0.25, 0.55, Z), MOTORCYCLE, (60, 60, 62), fine=4)  # engine
    s.fill(s.segment((X - d * 0.5, 0.28), (X + d * 0.05, 0.25), Z, 0.06), MOTORCYCLE, (185, 185, 190), fine=2)
    s.fill(s.poly(X + d * np.array([-0.45, -0.05, -0.05, -0.5]), np.array([0.8, 0.84, 0.9, 0.86]), Z),
           MOTORCYCLE, (25, 25, 25), fine=2)  # seat
    s.fill(s.disk(X + d * 0.52, 0.85, Z, 0.06), MOTORCYCLE, (240, 235, 200), fine=1)
    if rider:
        human(s, X, Z, Figure(RIDER, rng.uniform(1.3, 1.45), outfit(s), "ride", d, seat=(X - d * 0.22, 0.88),
                              helmet=0.95))
    elif rng.random() < 0.2:
        human(s, X + rng.uniform(-0.8, 0.8), Z - 0.3, Figure(PERSON, rng.uniform(1.25, 1.45), outfit(s)))


def car(s: Scene, X: float, Z: float, facing: int) -> None:
    rng = s.rng
    sc = rng.uniform(0.9, 1.1)
    w, length = 1.45 * sc, rng.uniform(3.2, 4.0) * sc
    X0, X1 = X - w / 2, X + w / 2
    color = s.jitter(CAR_COLORS[rng.integers(len(CAR_COLORS))], 8)
    tex = dict(fine=2.0, mottle=0.03)
    s.box(X0, X1, 0.22, 0.7, Z, Z + length, CAR, color, **tex)
    cab = s.box(X0 + 0.08, X1 - 0.08, 0.7, 1.12 * sc, Z + 0.25 * length, Z + 0.75 * length, CAR, color, **tex)
    glass = s.jitter(GLASS, 6)
    s.fill(s.rect(X0 + 0.15, X1 - 0.15, 0.74, 1.08 * sc, Z + 0.25 * length), CAR, glass, fine=2, mottle=0.05)
    if "side" in cab:
        sx = X1 if X1 < 0 else X0
        for za, zb in ((0.28, 0.48), (0.52, 0.72)):
            s.side_rect(sx, 0.75, 1.07 * sc, Z + za * length, Z + zb * length, CAR, glass, fine=2)
    for sx in (X0, X1 - 0.26):  # wheels under the body
        s.fill(s.rect(sx, sx + 0.26, 0, 0.3, Z + 0.4), CAR, (22, 22, 24), fine=2)
    lamp = (200, 25, 25) if facing > 0 else (235, 230, 205)
    for sx in (X0 + 0.05, X1 - 0.3):
        s.fill(s.rect(sx, sx + 0.25, 0.52, 0.63, Z), CAR, lamp, fine=2)
    s.fill(s.rect(X - 0.22, X + 0.22, 0.3, 0.4, Z), CAR, (230, 230, 225), fine=2)  # plate
    if X1 < 0 or X0 > 0:
        sx = X1 if X1 < 0 else X0
        for zc in (Z + 0.18 * length, Z + 0.8 * length):
            s.side_wheel(sx, zc, 0.3, CAR)


def shadow(s: Scene, X0: float, X1: float, Z0: float, Z1: float, strength: float = 0.45) -> None:
    """Darken the ground under a vehicle (label unchanged)."""
    idx = s.poly([X0, X1, X1, X0], [0.0] * 4, [Z0, Z0, Z1, Z1])
    s.light[idx] *= strength


def truck(s: Scene, X: float, Z: float, facing: int) -> None:
    rng = s.rng
    w = rng.uniform(2.1, 2.4)
    X0, X1 = X - w / 2, X + w / 2
    color = s.jitter(HEAVY_COLORS[rng.integers(len(HEAVY_COLORS))], 10)
    cab_color = color if rng.random() < 0.5 else s.jitter(HEAVY_COLORS[rng.integers(len(HEAVY_COLORS))], 10)
    tex = dict(fine=2.5, mottle=0.04)
    cargo_len, cab_len = rng.uniform(4.5, 7), 2.0
    if facing > 0:  # from behind: the cargo box is nearest
        cab_z, cargo_z = Z + cargo_len, Z
    else:
        cab_z, cargo_z = Z, Z + cab_len
    cargo_h = rng.uniform(2.8, 3.3)
    parts = [(cargo_z, "cargo"), (cab_z, "cab")]
    for z, part in sorted(parts, reverse=True):
        if part == "cargo":
            s.box(X0, X1, 0.5, 0.9, z, z + cargo_len, TRUCK, (40, 40, 42), fine=3)  # chassis
            f = s.box(X0, X1, 0.9, cargo_h, z, z + cargo_len, TRUCK, color, **tex)
            if facing > 0:
                s.fill(s.rect(X - 0.03, X + 0.03, 0.95, cargo_h - 0.05, z), TRUCK, color * 0.6)
            if "side" in f and rng.random() < 0.5:
                stripe = s.jitter(HEAVY_COLORS[rng.integers(len(HEAVY_COLORS))], 10)
                sx = X1 if X1 < 0 else X0
                s.side_rect(sx, 1.6, 2.2, z + 0.3, z + cargo_len - 0.3, TRUCK, stripe, **tex)
        else:
            s.box(X0 + 0.05, X1 - 0.05, 0.45, 2.5, z, z + cab_len, TRUCK, cab_color, **tex)
            if facing < 0:
                s.fill(s.rect(X0 + 0.2, X1 - 0.2, 1.55, 2.35, z), TRUCK, s.jitter(GLASS, 6), fine=2)
                s.fill(s.rect(X0 + 0.3, X1 - 0.3, 0.7, 1.2, z), TRUCK, (45, 45, 48), fine=3)  # grille
    for sx in (X0 + 0.05, X1 - 0.4):
        s.fill(s.rect(sx, sx + 0.35, 0, 0.5, Z + 0.6), TRUCK, (22, 22, 24), fine=2)
    if X1 < 0 or X0 > 0:
        sx = X1 if X1 < 0 else X0
        for zc in (Z + 1.0, Z + cab_len + cargo_len - 1.2, Z + cab_len + cargo_len - 2.3):
            s.side_wheel(sx, zc, 0.45, TRUCK)


def bus(s: Scene, X: float, Z: float, facing: int) -> None:
    rng = s.rng
    w, length, height = 2.5, rng.uniform(10, 13), rng.uniform(2.8, 3.1)
    X0, X1 = X - w / 2, X + w / 2
    color = s.jitter(HEAVY_COLORS[rng.integers(len(HEAVY_COLORS))], 10)
    tex = dict(fine=2.5, mottle=0.04)
    f = s.box(X0, X1, 0.3, height, Z, Z + length, BUS, color, **tex)
    glass = s.jitter(GLASS, 6)
    if facing < 0:  # front: big windscreen and a destination display
        s.fill(s.rect(X0 + 0.12, X1 - 0.12, 1.0, height - 0.4, Z), BUS, glass, fine=2, mottle=0.05)
        s.fill(s.rect(X0 + 0.3, X1 - 0.3, height - 0.35, height - 0.1, Z), BUS, (25, 25, 25), fine=2)
        s.fill(s.rect(X0 + 0.5, X1 - 0.5, height - 0.28, height - 0.17, Z), BUS, (250, 160, 40), fine=2)
    else:
        s.fill(s.rect(X0 + 0.25, X1 - 0.25, 1.7, height - 0.3, Z), BUS, glass, fine=2, mottle=0.05)
    if "side" in f:
        sx = X1 if X1 < 0 else X0
        z = Z + 0.4
        while z < Z + length - 1.2:
            s.side_rect(sx, 1.35, height - 0.35, z, z + 1.05, BUS, glass, fine=2)
            z += 1.25
        for zc in (Z + 2.2, Z + length - 2.6):
            s.side_wheel(sx, zc, 0.48, BUS)
    for sx in (X0 + 0.1, X1 - 0.45):
        s.fill(s.rect(sx, sx + 0.35, 0, 0.35, Z + 1.5), BUS, (22, 22, 24), fine=2)


def train(s: Scene, X: float, Z: float, facing: int) -> None:
    """A tram: very long, window band, pantograph, on rails; shares the bus/truck palette."""
    rng = s.rng
    w, length, height = 2.4, rng.uniform(25, 35), rng.uniform(3.2, 3.5)
    X0, X1 = X - w / 2, X + w / 2
    color = s.jitter(HEAVY_COLORS[rng.integers(len(HEAVY_COLORS))], 10)
    tex = dict(fine=2.5, mottle=0.04)
    # Pantograph: a thin diamond above the roof, a few metres back.
    zp = Z + rng.uniform(3, 6)
    for a, b in (((X - 0.5, height), (X, height + 0.9)), ((X + 0.5, height), (X, height + 0.9)),
                 ((X - 0.6, height + 0.9), (X + 0.6, height + 0.9))):
        s.fill(s.segment(a, b, zp, 0.05), TRAIN, (45, 45, 48), fine=2)
    f = s.box(X0, X1, 0.25, height, Z, Z + length, TRAIN, color, **tex)
    s.box(X0 + 0.05, X1 - 0.05, 0.05, 0.5, Z + 0.3, Z + length, TRAIN, (40, 40, 42), fine=3)  # bogies/skirt
    s.fill(s.rect(X0 + 0.1, X1 - 0.1, 1.3, height - 0.5, Z), TRAIN, s.jitter(GLASS, 6), fine=2, mottle=0.05)
    s.fill(s.rect(X0 + 0.1, X1 - 0.1, height - 0.35, height - 0.12, Z), TRAIN, (25, 25, 25), fine=2)
    for sx in (X0 + 0.25, X1 - 0.45):
        s.fill(s.rect(sx, sx + 0.2, 0.65, 0.85, Z), TRAIN, (240, 235, 210) if facing < 0 else (200, 30, 30), fine=1)
    if "side" in f:
        sx = X1 if X1 < 0 else X0
        z = Z + 0.8
        while z < Z + length - 1.0:
            s.side_rect(sx, 1.3, height - 0.6, z, z + 1.6, TRAIN, s.jitter(GLASS, 4), fine=2)
            z += 1.95
        s.side_rect(sx, 0.55, 0.75, Z, Z + length, TRAIN, color * 0.7, **tex)  # skirt band


def static(s: Scene, X: float, Z: float) -> None:
    """Void clutter (bins, advertising columns, boxes): labelled ignore."""
    rng = s.rng
    w, h = rng.uniform(0.4, 1.2), rng.uniform(0.6, 2.2)
    color = np.clip(rng.uniform(30, 220, 3), 0, 255).astype(np.float32)
    s.box(X - w / 2, X + w / 2, 0, h, Z, Z + rng.uniform(0.4, 1.0), STATIC, color, fine=4, mottle=0.08)


# Vehicles cast a shadow on the ground under them: half their width and their length, in world units.
SHADOWS = {car: (0.75, 3.8), truck: (1.2, 8), bus: (1.25, 11), train: (1.2, 25)}
