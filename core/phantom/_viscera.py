"""Solid organs and vessels: liver (with vessels and the lesion), spleen, stomach,
gallbladder, kidneys, pancreas, aorta, IVC and the portal system.

Liver and spleen fill the abdominal space up to the wall (they are intersected with
``Trunk.d_abd``), so they follow the diaphragm and ribs the way real organs do; the
others are drawn over them in anatomical order (painter's order gives the impressions
that neighbours make on each other).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.phantom._canvas import SliceCanvas, Tube, Window, densify, ellipse_sdf, ellipse_union
from core.phantom._layout import (
    _GALLBLADDER,
    _KIDNEYS,
    _LIVER_LEFT,
    _LIVER_RIGHT,
    _SPLEEN,
    _STOMACH,
    HU,
    LABEL,
    Body,
    Organ,
    keyframe,
    random_organ,
    wobble_coefs,
)
from core.phantom._random import SmoothField
from core.phantom._trunk import Trunk

# IVC section: zeta, cu, cv, a, b (mm); it enters the liver's bare area above ~L1.
_IVC = np.array([(-130, -20, -8, 11, 8), (0, -22, -8, 12, 8.5), (30, -24, -12, 13, 10),
                 (60, -28, -20, 14, 12), (130, -30, -26, 15, 13)], dtype=float)  # fmt: skip
# Vessel polylines: u, v, zeta, radius (mm).
_PORTAL = [(78, 28, 42, 4.0), (55, 10, 40, 4.5), (30, -12, 36, 4.5), (-2, -20, 30, 6.5), (-22, -18, 40, 7.0),
           (-45, -12, 52, 7.0), (-70, -5, 58, 5.5), (-95, 0, 62, 4.0)]  # fmt: skip
_PORTAL_LEFT = [(-45, -12, 52, 5.0), (-20, -35, 60, 4.0), (2, -50, 64, 3.0)]
# Hepatic veins, from the IVC at the dome out into the liver (right, middle, left).
_HEPATIC_VEINS = [
    [(-30, -26, 100, 7.0), (-55, -18, 85, 5.0), (-85, -8, 65, 3.5), (-110, 0, 45, 2.0)],
    [(-26, -30, 100, 6.0), (-30, -50, 85, 4.5), (-35, -75, 65, 3.0), (-40, -90, 45, 2.0)],
    [(-22, -30, 100, 5.5), (0, -45, 90, 4.0), (25, -60, 75, 3.0), (45, -70, 60, 2.0)],
]
_SMV = [(-2, -20, 30, 5.5), (-10, -36, 12, 5.5), (-14, -52, -30, 5.0), (-18, -62, -130, 4.5)]
_SMA = [(10, -24, 34, 3.5), (8, -33, 24, 3.5), (8, -42, 5, 3.5), (10, -55, -30, 3.0), (12, -64, -130, 2.5)]
_RENAL = [  # left and right renal veins
    [(50, 32, 8, 4.5), (30, -10, 10, 4.5), (10, -31, 11, 4.0), (-12, -18, 11, 4.5), (-20, -10, 11, 5.0)],
    [(-50, 34, -6, 4.5), (-32, 8, 0, 5.0), (-22, -6, 2, 5.0)],
]
_PANCREAS = [(-38, -32, -8, 13), (-30, -36, 12, 15), (-5, -40, 28, 10), (28, -26, 36, 11), (55, -2, 40, 10),
             (75, 18, 44, 8)]  # fmt: skip


@dataclass
class Viscera:
    """Seeded shapes and textures of the solid organs and vessels (see ``build_viscera``)."""

    liver: tuple[Organ, Organ]
    spleen: Organ
    stomach: Organ
    gallbladder: Organ
    kidneys: dict[str, tuple[np.ndarray, np.ndarray, float, np.ndarray]]
    ivc: np.ndarray
    portal: list[Tube]
    hepatic_veins: list[Tube]
    other_vessels: list[Tube]
    pancreas: Tube
    lesion: tuple[np.ndarray, float, np.ndarray] | None
    stomach_gas: float  # height of the air-fluid level above the stomach's centre, in semi-axes
    bifurcation: float  # zeta (mm) where the aorta divides, ~L4
    liver_fields: tuple[SmoothField, SmoothField, SmoothField]
    pancreas_field: SmoothField


def _tube(rows: list, rng: np.random.Generator, *, jitter: float = 2.0, step: float = 8.0) -> Tube:
    arr = np.array(rows, dtype=float)
    arr[:, :3] += rng.normal(0.0, jitter, size=(len(arr), 3))
    return Tube(*densify(arr[:, :3], arr[:, 3], step_mm=step))


def _place_lesion(
    rng: np.random.Generator, right_lobe: Organ, body: Body, zetas: np.ndarray
) -> tuple[np.ndarray, float]:
    """Centre and radius (mm) of a 2-4 cm lesion well inside the right lobe (segments V-VIII).

    Candidates lie lateral to the gallbladder and portal branches and above the right
    kidney; one is kept when the lobe (and the abdominal wall) clear it by 6 mm at its
    centre and near both of its poles.
    """
    for attempt in range(200):
        radius = rng.uniform(10.0, 18.0) * (1.0 - attempt / 400)
        centre = np.array([rng.uniform(-110, -70), rng.uniform(-35, -5), rng.uniform(22, 45)])
        if all(_lobe_depth(right_lobe, body, zetas, centre, h * radius) >= radius * np.sqrt(1 - h * h) + 6
               for h in (-0.8, 0.0, 0.8)):  # fmt: skip
            return centre, float(radius)
    return np.array([-85.0, -20.0, 35.0]), 8.0  # always deep enough on the standard anatomy


def _lobe_depth(lobe: Organ, body: Body, zetas: np.ndarray, centre: np.ndarray, dz: float) -> float:
    """How far (mm) a point lies inside the right lobe and the abdominal space, at height offset dz."""
    zeta = centre[2] + dz
    k = int(np.clip(np.searchsorted(zetas, zeta), 0, len(zetas) - 1))
    sec = lobe.section(k, zeta)
    if sec is None:
        return -1.0
    u, v = np.array([[centre[0]]], np.float32), np.array([[centre[1]]], np.float32)
    point = Window(slice(0, 1), slice(0, 1), u, v)
    r = float(np.hypot(centre[0], centre[1]))
    lut = body.outline(k, zeta, np.array([centre[0] / r]), np.array([centre[1] / r]))
    wall = float((lut["skin"] - lut["fat"] - lut["muscle"] - lut["lung"])[0]) - 4.0 - r
    return min(float(ellipse_sdf(point, **sec)[0, 0]), wall)


def build_viscera(
    rng: np.random.Generator, *, zetas: np.ndarray, u: np.ndarray, v: np.ndarray, body: Body, lesion: bool
) -> Viscera:
    """Draw the per-seed variations of every organ and vessel."""
    liver_scale = rng.normal(1.0, 0.05)
    # Two harmonics only: the wall and the neighbours shape the liver's outline (and it is big: cost).
    liver = tuple(
        random_organ(rng, t, zetas, wobble=0.08, jitter_mm=3.0, size_sd=0.0, harmonics=2)
        for t in (_LIVER_RIGHT, _LIVER_LEFT)
    )
    for organ in liver:
        organ.scale = float(np.clip(liver_scale, 0.9, 1.1))
    kidneys = {}
    for name, (centre, axes, angle) in _KIDNEYS.items():
        centre = np.array(centre) + rng.normal(0.0, [3.0, 3.0, 6.0])
        axes = np.array(axes) * np.clip(rng.normal(1.0, 0.06), 0.88, 1.12)
        coefs = wobble_coefs(rng, zetas, amplitude=0.05, harmonics=7)
        kidneys[name] = (centre, axes, np.deg2rad(angle + rng.normal(0.0, 6.0)), coefs)
    # Drawn whether or not it is shown, so that lesion=False leaves the rest identical.
    les = (*_place_lesion(rng, liver[0], body, zetas), wobble_coefs(rng, zetas, amplitude=0.12, harmonics=4))
    box = (-170.0, 110.0, -130.0, 110.0)
    fields = tuple(SmoothField(rng, zeta=zetas, v=v, u=u, corr_mm=c, box=box) for c in (28.0, 28.0, 40.0))
    return Viscera(
        liver=liver,  # type: ignore[arg-type]
        spleen=random_organ(rng, _SPLEEN, zetas, wobble=0.08, jitter_mm=4.0, size_sd=0.08, harmonics=7),
        stomach=random_organ(rng, _STOMACH, zetas, wobble=0.07, jitter_mm=4.0, size_sd=0.08, harmonics=7),
        gallbladder=random_organ(rng, _GALLBLADDER, zetas, wobble=0.05, jitter_mm=3.0, size_sd=0.12),
        kidneys=kidneys,
        ivc=_IVC,
        portal=[_tube(_PORTAL, rng), _tube(_PORTAL_LEFT, rng)],
        hepatic_veins=[_tube(t, rng, jitter=4.0) for t in _HEPATIC_VEINS],
        other_vessels=[_tube(_SMV, rng), _tube(_SMA, rng, jitter=1.0)] + [_tube(t, rng) for t in _RENAL],
        pancreas=_tube(_PANCREAS, rng, jitter=3.0),
        lesion=les if lesion else None,
        stomach_gas=float(rng.uniform(-0.1, 0.7)),
        bifurcation=float(rng.normal(-80.0, 5.0)),
        liver_fields=fields,  # type: ignore[arg-type]
        pancreas_field=SmoothField(rng, zeta=zetas, v=v, u=u, corr_mm=5.0, box=(-60.0, 95.0, -60.0, 40.0)),
    )


def _organ_window(canvas: SliceCanvas, sec: dict, margin: float = 4.0):
    half = max(sec["a"], sec["b"]) * (1.0 + np.abs(sec["coefs"]).sum()) + margin
    return canvas.around(sec["cu"], sec["cv"], half, half)


def draw_liver(canvas: SliceCanvas, trunk: Trunk, vis: Viscera, k: int) -> None:
    """Liver parenchyma with enhancing vessels, the falciform fissure and the lesion."""
    secs = [o.section(k, canvas.zeta) for o in vis.liver]
    secs = [s for s in secs if s is not None]
    if not secs:
        return
    half = np.array([max(s["a"], s["b"]) * (1 + np.abs(s["coefs"]).sum()) + 3 for s in secs])
    cu, cv = np.array([s["cu"] for s in secs]), np.array([s["cv"] for s in secs])
    box = ((cu - half).min(), (cu + half).max(), (cv - half).min(), (cv + half).max())
    win = canvas.window(*box, within=trunk.win)
    if win is None:
        return
    d = np.maximum.reduce([ellipse_sdf(win, **s) for s in secs])
    f1, f2, hetero = (f.at(k, win.rows, win.cols) for f in vis.liver_fields)
    d = np.minimum(d + 4.0 * hetero, trunk.d_abd[win.rows, win.cols] - 1.0)  # gently lobulated surface
    # Vessels where two independent fields both cross zero: curves in 3D, so branching
    # tubes whose axial sections are dots and short segments. Wider towards the hilum/IVC.
    hilum = np.exp(-((win.U + 40.0) ** 2 + (win.V + 10.0) ** 2) / (2 * 50.0**2))
    vessel = np.clip(1.0 - (f1 * f1 + f2 * f2) / (0.02 + 0.06 * hilum), 0.0, 1.0)
    hu = HU["liver"] + 4.0 * hetero + (HU["hepatic_vessel"] - HU["liver"]) * np.clip(vessel * 2.0, 0.0, 1.0)
    canvas.paint(win, d, hu, LABEL["liver"])
    for tube in vis.hepatic_veins:
        if (box := tube.box(canvas.zeta)) and (hw := canvas.window(*box, within=win)):
            dv = np.minimum(tube.sdf(hw, canvas.zeta), hw.sub(win, d) - 1.0)
            canvas.paint(hw, dv, HU["hepatic_vessel"], LABEL["liver"])
    if 18 < canvas.zeta < 60:  # fissure of the ligamentum teres between the lobes
        fis = canvas.around(8.0, -62.0, 14.0, 30.0, within=win)
        if fis is not None:
            dd = ellipse_sdf(fis, cu=8.0, cv=-70.0, a=2.5, b=20.0, angle=0.35)
            dd = np.minimum(dd, fis.sub(win, d) - 1.0)
            canvas.paint(fis, dd, HU["fat"], LABEL["torso_fat"])
    if vis.lesion is not None:
        centre, radius, coefs = vis.lesion
        dz = (canvas.zeta - centre[2]) / (0.9 * radius)
        if abs(dz) < 1.0:
            rho = radius * np.sqrt(1.0 - dz * dz)
            lw = canvas.around(centre[0], centre[1], radius * 1.5 + 4, radius * 1.5 + 4, within=win)
            a, b = rho * 1.08, rho * 0.93
            dl = ellipse_sdf(lw, cu=centre[0], cv=centre[1], a=a, b=b, angle=0.4, coefs=coefs[k])
            dl = np.minimum(dl, lw.sub(win, d) - 2.0)
            # Ill-defined margin (~3 mm), slightly heterogeneous centre.
            canvas.paint(lw, dl, HU["lesion"] + 6.0 * lw.sub(win, hetero), LABEL["lesion"], edge_mm=3.0)


def draw_spleen_stomach_gallbladder(canvas: SliceCanvas, trunk: Trunk, vis: Viscera, k: int) -> None:
    """Spleen (crescent along the wall), gallbladder, and stomach with an air-fluid level."""
    zeta = canvas.zeta
    if (sec := vis.spleen.section(k, zeta)) and (win := _organ_window(canvas, sec, 10.0)):
        d = ellipse_sdf(win, **sec)
        # Concave visceral surface towards the stomach and kidney.
        d = np.minimum(d, -ellipse_sdf(win, cu=sec["cu"] - 38, cv=sec["cv"] - 22, a=26.0, b=30.0))
        d = np.minimum(d, trunk.d_abd[win.rows, win.cols] - 1.0)
        canvas.paint(win, d, HU["spleen"], LABEL["spleen"])
    if (sec := vis.gallbladder.section(k, zeta)) and (win := _organ_window(canvas, sec)):
        d = ellipse_sdf(win, **sec)
        canvas.paint(win, d, HU["bowel_wall"] - 40.0, LABEL["gallbladder"])  # thin wall
        canvas.paint(win, d - 1.8, HU["bile"], LABEL["gallbladder"])
    if (sec := vis.stomach.section(k, zeta)) and (win := _organ_window(canvas, sec)):
        d = np.minimum(ellipse_sdf(win, **sec), trunk.d_abd[win.rows, win.cols] - 2.0)
        canvas.paint(win, d, HU["bowel_wall"] - 10.0, LABEL["stomach"])
        lumen = d - 4.0
        canvas.paint(win, lumen, HU["fluid"] + 10.0, LABEL["stomach"])
        # Supine: gas rises anteriorly (smaller v) above a horizontal air-fluid level.
        level = sec["cv"] - vis.stomach_gas * sec["b"]
        gas = np.minimum(lumen, np.float32(level) - win.V)
        canvas.paint(win, gas, HU["air"], LABEL["stomach"], edge_mm=0.8)


def draw_kidneys(canvas: SliceCanvas, vis: Viscera, k: int) -> None:
    """Kidneys in perirenal fat: cortex, medullary pyramids, sinus fat and pelvis."""
    for name, (centre, axes, angle, coefs) in vis.kidneys.items():
        dz = (canvas.zeta - centre[2]) / axes[2]
        if abs(dz) >= 1.0:
            continue
        side = 1.0 if centre[0] > 0 else -1.0
        f = np.sqrt(1.0 - dz * dz)
        cu = centre[0] - side * 0.15 * (canvas.zeta - centre[2])  # upper pole more medial
        cv = centre[1] + 0.1 * (canvas.zeta - centre[2])  # and more posterior
        a, b = axes[0] * f, axes[1] * f
        win = canvas.around(cu, cv, a + 14, a + 14)
        if win is None:
            continue
        d = ellipse_sdf(win, cu=cu, cv=cv, a=a, b=b, angle=angle, coefs=coefs[k])
        hx, hy = np.sin(angle), -np.cos(angle)  # unit vector towards the hilum (anteromedial)
        # Perirenal fat: thicker behind and lateral to the kidney.
        halo = ellipse_sdf(win, cu=cu - 3 * hx, cv=cv - 3 * hy, a=a + 6, b=b + 5, angle=angle, coefs=coefs[k])
        canvas.paint(win, halo, HU["fat"], LABEL["torso_fat"])
        canvas.paint(win, d, HU["kidney_cortex"], LABEL[name])
        # Sinus: an ellipse pushed towards the hilum, open there in mid-kidney.
        sf = max(0.0, 1.0 - (dz / 0.6) ** 2)
        su, sv = cu + hx * 0.75 * b, cv + hy * 0.75 * b
        if sf > 0:
            ds = ellipse_sdf(win, cu=su, cv=sv, a=0.55 * a * sf, b=0.6 * b * sf, angle=angle)
        else:
            ds = np.full_like(d, -50.0)
        # Medullary pyramids: radial ellipses in a ring between cortex and sinus, apex to the sinus.
        ca, sa = np.cos(angle), np.sin(angle)
        pyramids = []
        for beta in np.deg2rad([-150, -110, -70, -30, 10, 50, 90, 130, 170]):
            pu = 0.58 * a * np.cos(beta)  # centre in the kidney frame, then rotated to the slice
            pv = 0.5 * b * np.sin(beta) - 0.25 * b
            gu, gv = cu + pu * ca - pv * sa, cv + pu * sa + pv * ca
            radial = float(np.arctan2(gv - sv, gu - su))  # apex (papilla) towards the sinus
            pyramids.append({"cu": gu, "cv": gv, "a": 0.3 * b, "b": 0.17 * a, "angle": radial})
        dm = np.minimum(np.minimum(ellipse_union(win, pyramids), d - 4.0), -(ds + 1.5))
        canvas.paint(win, dm, HU["kidney_medulla"], LABEL[name])
        if sf > 0:
            canvas.paint(win, np.minimum(ds, d + 6.0), HU["fat"], LABEL["torso_fat"])
            dp = ellipse_sdf(win, cu=su + hx * 4, cv=sv + hy * 4, a=0.5 * a * sf, b=0.3 * b * sf, angle=angle)
            canvas.paint(win, dp, HU["urine"], LABEL[name])


def draw_pancreas(canvas: SliceCanvas, vis: Viscera, k: int) -> None:
    """Pancreas with a lobulated outline and fatty clefts."""
    box = vis.pancreas.box(canvas.zeta)
    if box is None or (win := canvas.window(*box)) is None:
        return
    lob = vis.pancreas_field.at(k, win.rows, win.cols)
    d = vis.pancreas.sdf(win, canvas.zeta) + 1.2 * lob
    hu = HU["pancreas"] + np.where(lob > 1.7, HU["fat"] - HU["pancreas"], 0.0)  # a few fatty clefts
    canvas.paint(win, d, hu, LABEL["pancreas"])


def draw_vessels(canvas: SliceCanvas, trunk: Trunk, vis: Viscera) -> None:
    """Aorta (with occasional wall calcification), IVC, portal system, SMA/SMV, renal veins."""
    zeta = canvas.zeta
    ua, va, ra = trunk.aorta
    below = vis.bifurcation - zeta
    if below <= 0 and (win := canvas.around(ua, va, ra + 3, ra + 3)):
        d = ellipse_sdf(win, cu=ua, cv=va, a=ra, b=ra)
        canvas.paint(win, d, HU["aorta"], LABEL["aorta"])
    elif below > 0:  # the common iliac arteries diverge ~25 deg from the midline below L4
        for side in (-1.0, 1.0):
            cu, cv, r = ua + side * (0.5 * ra + 0.45 * below), va + 0.1 * below, 0.68 * ra
            label = LABEL["iliac_artery_left" if side > 0 else "iliac_artery_right"]
            if win := canvas.around(cu, cv, r + 3, r + 3):
                canvas.paint(win, ellipse_sdf(win, cu=cu, cv=cv, a=r, b=r), HU["aorta"], label)
    row = keyframe(vis.ivc, zeta)
    if row is not None and (win := canvas.around(row[0], row[1], row[2] + 3, row[2] + 3)):
        hu = HU["ivc_upper"] if zeta > 8 else HU["ivc_lower"]  # renal veins join at ~L1-L2
        canvas.paint(win, ellipse_sdf(win, cu=row[0], cv=row[1], a=row[2], b=row[3], angle=0.3), hu,
                     LABEL["inferior_vena_cava"])  # fmt: skip
    for tube in vis.portal + vis.other_vessels:
        box = tube.box(zeta)
        if box is None or (win := canvas.window(*box)) is None:
            continue
        label = LABEL["portal_vein_and_splenic_vein"] if tube in vis.portal else 0
        hu = HU["portal_vein"] if tube in vis.portal else HU["aorta"]
        canvas.paint(win, tube.sdf(win, zeta), hu, label)
