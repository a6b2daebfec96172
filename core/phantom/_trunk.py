"""The trunk: couch, skin, fat, abdominal wall, back muscles, spine, lung bases and ribs.

The wall layers are offsets of one star-shaped outline, looked up per angle bin (see
``Body.outline``), so each layer costs one gather and one subtraction per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from core.phantom._canvas import SliceCanvas, Tube, Window, ellipse_sdf, ellipse_union
from core.phantom._layout import HU, LABEL, THETA_BINS, Body, vertebral_column
from core.phantom._random import SmoothField

_DIAPHRAGM_MM = 4.0


@dataclass
class Polar:
    """Angle bin and radius (mm) of every pixel around the trunk centre, ``(ny, nx)`` each."""

    idx: np.ndarray
    r: np.ndarray

    @classmethod
    def on(cls, u: np.ndarray, v: np.ndarray) -> Polar:
        uu, vv = u[None, :].astype(np.float64), v[:, None].astype(np.float64)
        theta = np.arctan2(vv, uu)
        idx = np.floor((theta + np.pi) * (THETA_BINS / (2 * np.pi))).astype(np.int32) % THETA_BINS
        return cls(idx, np.hypot(uu, vv).astype(np.float32))


@dataclass
class Trunk:
    """What the organs need to know about the trunk on one slice.

    Attributes:
        win: window holding the whole body.
        d_body: signed distance to the skin on ``win`` (mm).
        d_cav: ``(ny, nx)`` distance to the abdominal cavity (inside the wall, outside
            the spine block); -100 outside ``win``.
        d_abd: ``(ny, nx)`` the same for the part of the cavity below the lungs and diaphragm.
        depth: ``r / skin radius`` on ``win`` (0 centre, 1 skin), for the noise level.
        col: ``vertebral_column`` at this height.
        aorta: ``(u, v, radius)`` of the aorta.
    """

    win: Window
    d_body: np.ndarray
    d_cav: np.ndarray
    d_abd: np.ndarray
    depth: np.ndarray
    col: dict
    aorta: tuple[float, float, float]


def couch(u: np.ndarray, v: np.ndarray, *, top_mm: float) -> np.ndarray:
    """``(ny, nx)`` HU of the CT couch under the patient (air elsewhere).

    A curved carbon-fibre tabletop: two 2.5 mm skins (~200 HU) around a 35 mm foam core
    (~ -850 HU), as seen under every supine scan.
    """
    depth = v[:, None] - (top_mm + u[None, :] ** 2 / 1400.0)  # shallow curve, 700 mm radius
    img = np.full(depth.shape, HU["air"], dtype=np.float32)
    inside = np.abs(u[None, :]) < 230.0
    img[inside & (depth > 0) & (depth < 40)] = -850.0
    img[inside & (((depth > 0) & (depth < 2.5)) | ((depth > 37.5) & (depth < 40)))] = 200.0
    return img


def draw_wall(canvas: SliceCanvas, *, body: Body, polar: Polar, k: int, fat_tex: SmoothField) -> Trunk:
    """Skin, subcutaneous fat, wall muscles and the fat of the abdominal cavity."""
    zeta = canvas.zeta
    lut = body.outline(k, zeta)
    skin = lut["skin"]
    win = canvas.window(
        float((skin * body.cos_t).min()) - 2, float((skin * body.cos_t).max()) + 2,
        float((skin * body.sin_t).min()) - 2, float((skin * body.sin_t).max()) + 2,
    )  # fmt: skip
    idx, r = polar.idx[win.rows, win.cols], polar.r[win.rows, win.cols]

    def dist(radius: np.ndarray) -> np.ndarray:
        return radius.astype(np.float32)[idx] - r

    d_body = dist(skin)
    tex = fat_tex.at(k, win.rows, win.cols)  # fibrous septa and small vessels, a few HU
    # All of the body starts as fat (the cavity's fat too), with the ~2 mm of skin folded
    # into the same pass: HU ramps up towards the surface.
    skin_ramp = np.clip(2.3 - d_body, 0.0, 1.0)
    hu = HU["fat"] + 7.0 * tex + (HU["skin"] - HU["fat"]) * skin_ramp
    canvas.paint(win, d_body, hu, LABEL["subcutaneous_fat"])
    np.copyto(canvas.lab[win.rows, win.cols], LABEL["body"], where=(d_body > 0) & (d_body < 1.8))

    col = vertebral_column(zeta)
    aorta = (float(np.interp(zeta, [-96, 96], [6.0, 13.0])), col["v"] - col["half_d"] - 14.0,
             float(np.interp(zeta, [-96, 96], [10.0, 12.5])))  # fmt: skip
    inner = skin - lut["fat"]
    d_muscle = dist(inner) + 0.6 * tex  # the fat-muscle interface is not perfectly smooth
    lung = lut["lung"]
    d_abd = np.full(canvas.img.shape, -100.0, dtype=np.float32)
    diaphragm = _DIAPHRAGM_MM * np.clip(lung / 5.0, 0.0, 1.0)
    d_abd[win.rows, win.cols] = dist(inner - lut["muscle"] - lung - diaphragm)
    d_cav = np.full(canvas.img.shape, -100.0, dtype=np.float32)
    d_cav[win.rows, win.cols] = dist(inner - lut["muscle"])
    # The cavity stops at the spine and the back muscles.
    vb, hw, hd = col["v"], col["half_w"], col["half_d"]
    muscles = _back_muscles(canvas, col, zeta, outer=win, d_muscle=d_muscle)
    spine = canvas.window(-hw - 3, hw + 3, vb - hd - 3, vb + hd + 64, within=win)
    for part, d in muscles + ([(spine, _spine_envelope(spine, col))] if spine else []):
        for full in (d_cav, d_abd):
            np.minimum(full[part.rows, part.cols], -d, out=full[part.rows, part.cols])
    cav = d_cav[win.rows, win.cols]
    canvas.paint(win, np.minimum(d_muscle, -cav), HU["muscle"], LABEL["skeletal_muscle"])  # the wall
    np.copyto(canvas.lab[win.rows, win.cols], LABEL["torso_fat"], where=cav > 0)
    # Thin fat planes between the external oblique, internal oblique and transversus.
    for lo, hi in ((win.U[0, 0], -0.4 * body.size[0] * 150), (0.4 * body.size[0] * 150, win.U[0, -1])):
        if (flank := canvas.window(lo, hi, win.V[0, 0], win.V[-1, 0], within=win)) is None:
            continue  # the planes are in the flanks only
        fi, fr = polar.idx[flank.rows, flank.cols], polar.r[flank.rows, flank.cols]
        half = lut["planes"].astype(np.float32)[fi]
        for frac in (0.3, 0.62):
            plane = (inner - frac * lut["muscle"]).astype(np.float32)[fi] - fr
            canvas.paint(flank, half - np.abs(plane), HU["fat"], LABEL["torso_fat"])
    for part, d in muscles:  # each in a thin sheath of fat, so neighbouring muscles stay apart
        canvas.paint(part, d + 1.5, HU["fat"], LABEL["torso_fat"])
        canvas.paint(part, d, HU["muscle"], LABEL["skeletal_muscle"])
    depth = r / skin.astype(np.float32)[idx]
    return Trunk(win, d_body, d_cav, d_abd, depth, col, aorta)


def _spine_envelope(win: Window, col: dict) -> np.ndarray:
    """Vertebral body plus posterior elements, slightly enlarged: keeps the cavity off the spine."""
    vb, hw, hd = col["v"], col["half_w"], col["half_d"]
    body = ellipse_sdf(win, cu=0.0, cv=vb, a=hw + 1.5, b=hd + 1.5)
    arch = ellipse_sdf(win, cu=0.0, cv=vb + hd + 30, a=18.0, b=32.0)
    return np.maximum(body, arch)


def _back_muscles(
    canvas: SliceCanvas, col: dict, zeta: float, *, outer: Window, d_muscle: np.ndarray
) -> list[tuple[Window, np.ndarray]]:
    """Erector spinae, psoas and quadratus lumborum: ``(window, signed distance mm)`` each."""
    vb, hw = col["v"], col["half_w"]
    psoas = float(np.interp(zeta, [-96, 0, 30, 42], [24, 16, 7, 0]))  # psoas arises at T12-L1
    ql = float(np.interp(zeta, [-96, 20, 55], [17, 11, 0]))
    sections = []  # (is erector spinae, ellipse)
    for side in (-1.0, 1.0):
        sections.append((True, _ell(side * 35.0, vb + 57.0, 29.0, 24.0, side * 0.15)))
        if psoas > 1:
            sections.append((False, _ell(side * (hw + 0.8 * psoas), vb + 3, psoas, 0.85 * psoas)))
        if ql > 1:
            sections.append((False, _ell(side * (hw + 44), vb + 30, ql, 8.0, -side * 0.45)))
    out = []
    for erector, sec in sections:
        half = max(sec["a"], sec["b"]) + 3.0
        if (win := canvas.around(sec["cu"], sec["cv"], half, half, within=outer)) is None:
            continue
        d = ellipse_sdf(win, **sec)
        if erector:  # they fill the gutter beside the spinous processes, up to the fat
            d = np.minimum(d, win.sub(outer, d_muscle))
        out.append((win, d))
    return out


def draw_spine(canvas: SliceCanvas, trunk: Trunk, *, rng: np.random.Generator) -> None:
    """Vertebral body or disc, neural arch, canal and cord, and the diaphragmatic crura."""
    col, zeta = trunk.col, canvas.zeta
    vb, hw, hd, p = col["v"], col["half_w"], col["half_d"], col["phase"]
    ua, va, ra = trunk.aorta
    if zeta > 5:  # crura of the diaphragm beside the aorta (right crus the larger)
        for side, a in ((-1.0, 6.5), (1.0, 5.0)):
            cu, cv = ua + side * (ra + 4), va + 6
            if win := canvas.around(cu, cv, ra + 8, ra + 8):
                d = ellipse_sdf(win, cu=cu, cv=cv, a=a, b=ra + 6, angle=-side * 0.35)
                canvas.paint(win, d, HU["muscle"], LABEL["skeletal_muscle"])
    canal_v, canal_a, canal_b = vb + hd + 9.0, 12.0 if col["lumbar"] else 10.0, 8.5
    if win := canvas.around(0.0, vb, hw + 4, hd + 4):
        if p < 0.76:
            d = np.minimum(
                ellipse_sdf(win, cu=0.0, cv=vb, a=hw, b=hd),
                -ellipse_sdf(win, cu=0.0, cv=vb + hd + 5, a=0.45 * hw, b=8.0),  # concave back wall
            )
            endplate = 350.0 * max(0.0, 1.0 - min(p, 0.76 - p) / 0.06)  # partial volume of an endplate
            canvas.paint(win, d, HU["cortical_bone"], LABEL["vertebrae"])
            hu = HU["cancellous_bone"] + endplate + _trabecular(rng, win)
            canvas.paint(win, d - 1.5, hu, LABEL["vertebrae"])
        else:
            d = ellipse_sdf(win, cu=0.0, cv=vb, a=hw + 1.5, b=hd + 1.5)
            canvas.paint(win, d, HU["disc"] + 25.0, LABEL["intervertebral_discs"])  # annulus fibrosus
            canvas.paint(win, d - 5.0, HU["disc"] - 10.0, LABEL["intervertebral_discs"])  # nucleus
    # Neural arch: lamina ring, pedicles, spinous and transverse processes, facets, by phase.
    win = canvas.window(-50.0, 50.0, vb + hd - 8, canal_v + canal_b + 36)
    if win is None:
        return
    parts = []
    for side in (-1.0, 1.0):
        if 0.3 < p < 0.76:  # pedicles
            parts.append(_ell(side * (canal_a + 2), vb + hd + 4, 4.5, 7.5))
        if 0.38 < p < 0.62:  # transverse processes: long and flat (lumbar), short and angled back (thoracic)
            if col["lumbar"]:
                parts.append(_ell(side * (canal_a + 17), canal_v + 1, 13.0, 3.5, -side * 0.15))
            else:
                parts.append(_ell(side * (canal_a + 12), canal_v + 7, 10.0, 4.5, side * 0.6))
        if p > 0.72 or p < 0.12:  # articular processes at the facet joints
            parts.append(_ell(side * (canal_a + 4), canal_v + 6, 6.0, 8.0))
    if p < 0.6:  # spinous process
        parts.append(_ell(0.0, canal_v + canal_b + 17, 3.5, 14.0))
    d = ellipse_union(win, parts)
    if 0.05 < p < 0.85:  # laminae: the back half of a ring around the canal
        ring = np.minimum(
            ellipse_sdf(win, cu=0.0, cv=canal_v, a=canal_a + 3.5, b=canal_b + 3.5),
            -ellipse_sdf(win, cu=0.0, cv=canal_v, a=canal_a, b=canal_b),
        )
        np.maximum(d, np.minimum(ring, win.V - np.float32(canal_v - 2)), out=d)
    canvas.paint(win, d, HU["cortical_bone"], LABEL["vertebrae"])
    canvas.paint(win, d - 1.2, HU["cancellous_bone"] + 120.0 + _trabecular(rng, win), LABEL["vertebrae"])
    # Canal: epidural fat, thecal sac (CSF) and, above the conus (~L1), the cord.
    win = canvas.around(0.0, canal_v, canal_a + 2, canal_b + 2)
    for a, b, dv, hu, label in (
        (canal_a, canal_b, 0.0, HU["fat"], "torso_fat"),
        (canal_a - 2.5, canal_b - 2.0, 0.0, HU["csf"], "body"),
        (5.0, 4.0, -0.5, HU["cord"], "spinal_cord"),
    ):
        if label != "spinal_cord" or zeta > 18:
            canvas.paint(win, ellipse_sdf(win, cu=0.0, cv=canal_v + dv, a=a, b=b), hu, LABEL[label])


def _ell(cu: float, cv: float, a: float, b: float, angle: float = 0.0) -> dict:
    """Keyword arguments of ``ellipse_sdf`` (centre, semi-axes in mm, rotation in rad)."""
    return {"cu": cu, "cv": cv, "a": a, "b": b, "angle": angle}


def _trabecular(rng: np.random.Generator, win: Window) -> np.ndarray:
    """Trabecular texture (HU): band-limited noise of ~1 mm grain, independent per 3 mm slice."""
    shape = (win.V.shape[0], win.U.shape[1])
    return gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.0) * np.float32(80.0)


def draw_lungs(
    canvas: SliceCanvas,
    trunk: Trunk,
    *,
    body: Body,
    polar: Polar,
    k: int,
    vessels: tuple[SmoothField, SmoothField],
) -> None:
    """Lung bases in the posterior and lateral recesses, with the diaphragm beneath them."""
    lut = body.outline(k, canvas.zeta)
    lung = lut["lung"]
    if lung.max() <= 0:
        return
    win = trunk.win
    idx, r = polar.idx[win.rows, win.cols], polar.r[win.rows, win.cols]
    d_out = (lut["skin"] - lut["fat"] - lut["muscle"]).astype(np.float32)[idx] - r  # depth below the wall
    band = lung.astype(np.float32)[idx]
    d_cav = trunk.d_cav[win.rows, win.cols]
    d_lung = np.minimum(np.minimum(d_out, band - d_out), d_cav + 1.0)
    d_dia = np.minimum(np.minimum(d_out - band + 1.0, band + _DIAPHRAGM_MM - d_out), d_cav + 1.0)
    d_dia = np.minimum(d_dia, band - 0.5)  # no diaphragm where there is no lung
    canvas.paint(win, d_dia, HU["muscle"], LABEL["skeletal_muscle"])
    # Parenchyma: denser in the dependent (posterior) lung; small vessels as bright dots.
    f1, f2 = (f.at(k, win.rows, win.cols) for f in vessels)
    vessel = np.clip(1.0 - (f1 * f1 + f2 * f2) / 0.02, 0.0, 1.0)
    hu = HU["lung"] + 90.0 * np.clip((win.V - 30.0) / 70.0, 0.0, 1.0) + 900.0 * vessel
    labels = np.where(win.U > 0, LABEL["lung_left"], LABEL["lung_right"]).astype(np.uint16)
    alpha = canvas.paint(win, d_lung, hu)
    canvas.lab[win.rows, win.cols][alpha > 0.5] = np.broadcast_to(labels, alpha.shape)[alpha > 0.5]


def draw_ribs(canvas: SliceCanvas, ribs: list[tuple[Tube, str]]) -> None:
    """Rib sections (cortex and marrow) and costal cartilages."""
    for tube, kind in ribs:
        box = tube.box(canvas.zeta)
        if box is None or (win := canvas.window(*box)) is None:
            continue
        d = tube.sdf(win, canvas.zeta)
        if kind == "rib":
            canvas.paint(win, d, HU["cortical_bone"] * 0.8, LABEL["ribs"])
            canvas.paint(win, d - 1.3, HU["cancellous_bone"] + 60.0, LABEL["ribs"])
        else:
            canvas.paint(win, d, HU["cartilage"] + 60.0, LABEL["costal_cartilages"])  # calcified rim
            canvas.paint(win, d - 1.0, HU["cartilage"], LABEL["costal_cartilages"])


# Lower ribs: (number, head height zeta mm, drop to the end of the bone, end angle of the bone
# from the posterior midline, cartilage end angle, cartilage rise). Heads articulate at the top
# of their thoracic vertebra; ribs slope down and forwards; 11 and 12 float; the cartilages of
# 7-10 climb to the costal margin (the lowest point of the margin, rib 10, is near L2-L3).
_RIBS = (
    (12, 68.0, 55.0, 80.0, None, 0.0),
    (11, 102.0, 95.0, 115.0, None, 0.0),
    (10, 136.0, 130.0, 130.0, 150.0, 10.0),
    (9, 170.0, 132.0, 130.0, 165.0, 40.0),
    (8, 204.0, 136.0, 130.0, 172.0, 60.0),
    (7, 238.0, 140.0, 130.0, 177.0, 80.0),
)


def build_ribs(rng: np.random.Generator, *, body: Body, zetas: np.ndarray) -> list[tuple[Tube, str]]:
    """Ribs 7-12 on both sides as tubes along the inside of the wall, plus costal cartilages."""
    from core.phantom._canvas import densify

    out: list[tuple[Tube, str]] = []
    for side in (-1.0, 1.0):
        for _, head, drop, bone_end, cart_end, rise in _RIBS:
            head += rng.normal(0.0, 4.0)
            drop *= rng.normal(1.0, 0.06)
            col = vertebral_column(head)
            hw, vb = col["half_w"], col["v"]
            pts = [(side * (hw + 3), vb + 4, head + 6), (side * (hw + 20), vb + 26, head + 3),
                   (side * (hw + 38), vb + 34, head)]  # fmt: skip
            phis = np.deg2rad(np.arange(60.0, bone_end + 0.1, 10.0))
            zs = head - drop * (phis / np.deg2rad(bone_end)) ** 1.1
            pts += [_on_wall(body, zetas, side, phi, z) for phi, z in zip(phis, zs)]
            radii = np.full(len(pts), 5.0)
            p, r = densify(np.array(pts), radii, step_mm=8.0)
            out.append((Tube(p, r), "rib"))
            if cart_end is not None:
                phis = np.deg2rad(np.arange(bone_end, cart_end + 0.1, 5.0))
                zs = zs[-1] + rise * ((phis - phis[0]) / (phis[-1] - phis[0])) ** 1.5
                pts = [_on_wall(body, zetas, side, phi, z) for phi, z in zip(phis, zs)]
                p, r = densify(np.array(pts), np.linspace(5.0, 6.0, len(pts)), step_mm=8.0)
                out.append((Tube(p, r), "cartilage"))
    return out


def _on_wall(body: Body, zetas: np.ndarray, side: float, phi: float, zeta: float) -> tuple[float, ...]:
    """Point 3 mm outside the abdominal cavity at angle ``phi`` from the posterior midline."""
    c, s = np.array([side * np.sin(phi)]), np.array([np.cos(phi)])
    k = int(np.clip(np.searchsorted(zetas, zeta), 0, len(zetas) - 1))
    lut = body.outline(k, zeta, c, s)
    radius = float((lut["skin"] - lut["fat"] - lut["muscle"])[0]) + 3.0
    return (radius * c[0], radius * s[0], zeta)
