"""Bowel and mesentery: small-bowel loops, duodenum, colon and mesenteric vessels.

Small-bowel loops are the cells of a 3D Voronoi (Worley) pattern of seed points,
stretched along z: each cell is a rounded loop, flattened where it touches its
neighbours, as packed loops are. The colon and duodenum are tubes along polylines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.phantom._canvas import SliceCanvas, Tube, densify
from core.phantom._layout import HU, LABEL
from core.phantom._random import SmoothField
from core.phantom._trunk import Trunk

# Colon, caecum -> sigmoid: u, v, zeta, radius (mm). Ascending colon anterolateral to the
# right kidney, transverse colon sagging anteriorly, splenic flexure high under the spleen,
# descending colon in the left paracolic gutter.
_COLON = [
    (-98, -22, -130, 26), (-100, -12, -70, 24), (-100, -10, -40, 23), (-95, -18, -15, 22),  # ascending
    (-78, -40, -10, 19), (-45, -58, -25, 17), (0, -62, -42, 16), (45, -58, -30, 17), (80, -40, 0, 18),
    (98, -15, 25, 19), (110, 5, 10, 17),  # splenic flexure
    (112, 5, -30, 16), (110, 0, -70, 16), (105, -5, -130, 16),  # descending
]  # fmt: skip
_DUODENUM = [
    (-20, -55, 6, 10), (-40, -42, 8, 11), (-52, -25, 4, 12),  # bulb
    (-58, -18, -12, 12), (-55, -15, -28, 12),  # descending
    (-30, -24, -38, 10), (0, -40, -40, 9), (25, -38, -36, 10),  # horizontal, between aorta and SMA
    (35, -35, -20, 10), (35, -40, -5, 9),  # ascending to the duodenojejunal flexure
]  # fmt: skip
_LOOP_SPACING = (26.0, 26.0, 36.0)  # mm between loop seeds (u, v, zeta)
_LOOP_Z_WEIGHT = 1.0 / 2.8  # distance along z counts less: each loop is a tube ~4 cm long in z
_REGION = (-5.0, -38.0, 88.0, 48.0)  # centre u, v and semi-axes of the mesenteric region (mm)


@dataclass
class Bowel:
    """Seeded bowel layout (see ``build_bowel``)."""

    seeds: np.ndarray  # (n, 3) u, v, zeta of small-bowel loop centres
    radius: np.ndarray  # (n,) loop radius (mm)
    kind: np.ndarray  # (n,) 0 fluid, 1 gas and fluid, 2 collapsed, 3 no loop (mesenteric fat)
    axis: np.ndarray  # (n, 3) cos and sin of the in-plane direction of the loop, elongation
    colon: Tube
    duodenum: Tube
    haustra: float  # phase of the haustral folds
    stool: SmoothField
    wobble: SmoothField
    gas: SmoothField
    mesentery: tuple[SmoothField, SmoothField]


def build_bowel(rng: np.random.Generator, *, zetas: np.ndarray, u: np.ndarray, v: np.ndarray) -> Bowel:
    """Seeds of the small-bowel loops, colon and duodenum paths, and content textures."""
    su, sv, sz = _LOOP_SPACING
    axes = np.arange(-100, 101, su), np.arange(-90, 21, sv), np.arange(-140, 21, sz)
    gu, gv, gz = np.meshgrid(*axes, indexing="ij")
    grid = np.stack([gu.ravel(), gv.ravel(), gz.ravel()], axis=1)
    seeds = grid + rng.uniform(-0.35, 0.35, size=grid.shape) * np.array(_LOOP_SPACING)  # jittered grid
    cu, cv, a, b = _REGION
    inside = ((seeds[:, 0] - cu) / a) ** 2 + ((seeds[:, 1] - cv) / b) ** 2 < 1.0
    inside &= seeds[:, 0] > -30.0 + 3.0 * seeds[:, 2]  # above the umbilicus: jejunum, to the left
    seeds = seeds[inside]
    n = len(seeds)
    # Loops cut across (round sections) or along their length (sausage-shaped sections).
    omega = rng.uniform(0, np.pi, size=n)
    axis = np.stack([np.cos(omega), np.sin(omega), rng.uniform(1.0, 2.2, size=n)], axis=1)
    colon = np.array(_COLON, dtype=float)
    colon[:, :3] += rng.normal(0.0, 3.0, size=(len(colon), 3))
    duo = np.array(_DUODENUM, dtype=float)
    duo[:, :3] += rng.normal(0.0, 2.0, size=(len(duo), 3))
    box = (-140.0, 140.0, -110.0, 50.0)
    return Bowel(
        seeds=seeds,
        radius=rng.uniform(8.5, 12.5, size=n),
        kind=rng.choice(4, size=n, p=[0.5, 0.12, 0.28, 0.1]),
        axis=axis,
        colon=Tube(*densify(colon[:, :3], colon[:, 3], step_mm=8.0)),
        duodenum=Tube(*densify(duo[:, :3], duo[:, 3], step_mm=7.0)),
        haustra=float(rng.uniform(0, 2 * np.pi)),
        stool=SmoothField(rng, zeta=zetas, v=v, u=u, corr_mm=4.0, corr_z_mm=8.0, box=box),
        wobble=SmoothField(rng, zeta=zetas, v=v, u=u, corr_mm=10.0, box=box),
        gas=SmoothField(rng, zeta=zetas, v=v, u=u, corr_mm=30.0, box=box),
        mesentery=(
            SmoothField(rng, zeta=zetas, v=v, u=u, corr_mm=22.0, box=box),
            SmoothField(rng, zeta=zetas, v=v, u=u, corr_mm=22.0, box=box),
        ),
    )


def draw_mesentery(canvas: SliceCanvas, trunk: Trunk, bowel: Bowel, k: int) -> None:
    """Small mesenteric vessels (bright dots and short segments) in the cavity fat."""
    cu, cv, a, b = _REGION
    win = canvas.around(cu, cv, a + 25, b + 25)
    if win is None:
        return
    f1, f2 = (f.at(k, win.rows, win.cols) for f in bowel.mesentery)
    vessel = np.clip(1.0 - (f1 * f1 + f2 * f2) / 0.006, 0.0, 1.0)
    d = np.minimum(trunk.d_cav[win.rows, win.cols] - 3.0, 20.0 * vessel - 6.0)
    canvas.paint(win, d, HU["aorta"] - 40.0, 0)


def draw_small_bowel(canvas: SliceCanvas, trunk: Trunk, bowel: Bowel, k: int) -> None:
    """Packed small-bowel loops: enhancing wall, fluid content, some gas, some collapsed."""
    zeta = canvas.zeta
    cu, cv, a, b = _REGION
    dz = (bowel.seeds[:, 2] - zeta) * _LOOP_Z_WEIGHT
    near = np.nonzero(np.abs(dz) < bowel.radius * 1.2)[0]  # farther seeds cannot hold a loop here
    if len(near) < 2 or (win := canvas.around(cu, cv, a + 20, b + 20)) is None:
        return
    shape = (win.V.shape[0], win.U.shape[1])
    f1 = np.full(shape, 1e6, dtype=np.float32)  # squared distance to the nearest seed
    f2 = np.full(shape, 1e6, dtype=np.float32)  # ... and to the second nearest
    owner = np.zeros(shape, dtype=np.int32)
    # Each seed is evaluated only where its own loop can be: where no neighbour reaches,
    # a loop ends at its radius instead of at the bisector, which it would not reach anyway.
    for i in near:
        su, sv = bowel.seeds[i, :2]
        ca, sa, elong = bowel.axis[i]
        extent = np.array([max(elong * abs(ca), abs(sa)), max(elong * abs(sa), abs(ca))])  # (u, v) / radius
        reach = bowel.radius[i] * 1.2 * extent + 1.0
        c0, c1 = np.searchsorted(win.U[0], [su - reach[0], su + reach[0]])
        r0, r1 = np.searchsorted(win.V[:, 0], [sv - reach[1], sv + reach[1]])
        if c1 <= c0 or r1 <= r0:
            continue
        du, dv = win.U[:, c0:c1] - np.float32(su), win.V[r0:r1] - np.float32(sv)
        along = (du * np.float32(ca) + dv * np.float32(sa)) * np.float32(1.0 / elong)
        across = dv * np.float32(ca) - du * np.float32(sa)
        dist = along * along + across * across + np.float32(dz[i] ** 2)
        s1, s2, so = f1[r0:r1, c0:c1], f2[r0:r1, c0:c1], owner[r0:r1, c0:c1]
        closer = dist < s1
        np.copyto(s2, np.where(closer, s1, np.minimum(s2, dist)))
        np.copyto(so, np.where(closer, i, so))
        np.copyto(s1, np.minimum(s1, dist))
    r1n, r2n = np.sqrt(f1), np.sqrt(f2)
    radius = bowel.radius[owner].astype(np.float32)
    kind = bowel.kind[owner]
    wobble = bowel.wobble.at(k, win.rows, win.cols)
    # Rounded loops: mostly limited by their own (wobbling) radius, and where two press
    # together by a wavy fat plane rather than the straight Voronoi bisector.
    d = np.minimum(radius * (1.0 + 0.15 * wobble) - r1n, 0.5 * (r2n - r1n) - 1.5 + 1.2 * wobble)
    d = np.minimum(np.where(kind == 3, -9.0, d), trunk.d_abd[win.rows, win.cols] - 2.0)
    canvas.paint(win, d, HU["bowel_wall"], LABEL["small_bowel"])
    wall = np.where(kind == 2, 5.0, 2.0).astype(np.float32)  # collapsed loops: thick wall, slit lumen
    content = np.where(kind == 2, HU["bowel_wall"] - 35.0, HU["fluid"]).astype(np.float32)
    canvas.paint(win, d - wall, content, LABEL["small_bowel"])
    seed_v = bowel.seeds[owner, 1].astype(np.float32)
    gas = np.minimum(d - wall, seed_v - 0.35 * radius - win.V)  # gas above an air-fluid level
    canvas.paint(win, np.where(kind == 1, gas, -9.0), HU["air"], LABEL["small_bowel"], edge_mm=0.8)


def draw_colon_duodenum(canvas: SliceCanvas, trunk: Trunk, bowel: Bowel, k: int) -> None:
    """Colon with haustra and mottled stool and gas; duodenum with fluid."""
    zeta = canvas.zeta
    box = bowel.duodenum.box(zeta)
    if box is not None and (win := canvas.window(*box)):
        d = np.minimum(bowel.duodenum.sdf(win, zeta), trunk.d_abd[win.rows, win.cols] - 1.0)
        canvas.paint(win, d, HU["bowel_wall"], LABEL["duodenum"])
        canvas.paint(win, d - 2.5, HU["fluid"] + 5.0, LABEL["duodenum"])
    box = bowel.colon.box(zeta)
    if box is None or (win := canvas.window(*box)) is None:
        return
    d = np.minimum(bowel.colon.sdf(win, zeta), trunk.d_abd[win.rows, win.cols] - 1.0)
    # Haustral folds: the lumen narrows every ~35 mm along the colon (here along z and u).
    fold = np.cos((win.U * 0.6 + np.float32(zeta)) * np.float32(2 * np.pi / 35.0) + np.float32(bowel.haustra))
    d = d - 2.5 * np.clip(fold, 0.0, 1.0) ** 4
    canvas.paint(win, d, HU["bowel_wall"] - 20.0, LABEL["colon"])
    lumen = d - 2.0
    t = bowel.stool.at(k, win.rows, win.cols)
    g = bowel.gas.at(k, win.rows, win.cols)
    # Stool: soft tissue with trapped gas bubbles; free gas where the gas field is high and
    # anteriorly (non-dependent), which fills most of the transverse colon.
    stool = np.where(t > 0.9, HU["air"] * 0.8, 10.0 + 35.0 * t)
    gas = g - 0.015 * (win.V + 40.0) > 0.6
    canvas.paint(win, lumen, np.where(gas, HU["air"], stool).astype(np.float32), LABEL["colon"])
