"""A procedural contrast-enhanced abdominal CT with organ labels, generated at run time.

The embedded demo needs a realistic volume on a machine with no data: this builds one
from seeded shapes (no files, no network) in a few seconds on one CPU core.

Example::

    from core.phantom import make_abdominal_phantom
    vol = make_abdominal_phantom(seed=0)  # (64, 512, 512) HU, 3 x 0.75 x 0.75 mm
    vol.labels.mask("liver")
"""

from __future__ import annotations

import numpy as np

from core.io.volume import LabelMap, Volume
from core.phantom._bowel import build_bowel, draw_colon_duodenum, draw_mesentery, draw_small_bowel
from core.phantom._canvas import SliceCanvas
from core.phantom._layout import HU, LABEL_NAMES, random_body
from core.phantom._random import CTNoise, SmoothField
from core.phantom._trunk import Polar, build_ribs, couch, draw_lungs, draw_ribs, draw_spine, draw_wall
from core.phantom._viscera import (
    build_viscera,
    draw_kidneys,
    draw_liver,
    draw_pancreas,
    draw_spleen_stomach_gallbladder,
    draw_vessels,
)

PHANTOM_NAME = "synthdx.abdominal_phantom"
PHANTOM_VERSION = "1.0"
DEFAULT_SHAPE = (64, 512, 512)  # 3 mm slices, 512 x 512 matrix
STANDARD_COVERAGE_MM = (192.0, 384.0, 384.0)  # L4 to the lung bases; a 384 mm field of view
_TRUNK_CENTRE_V = -8.0  # mm: the trunk centre sits 8 mm anterior of the image centre (couch below)
_MIN_SHAPE = (4, 32, 32)


def make_abdominal_phantom(
    *,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] | None = None,
    lesion: bool = True,
    noise_hu: float = 14.0,
) -> Volume:
    """Generate a portal-venous abdominal CT phantom with its label map.

    Axial slices from about L4 (slice 0) to the lung bases at T11: trunk wall, liver with
    enhancing vessels, spleen, stomach, gallbladder, pancreas, kidneys, bowel, aorta,
    IVC and portal system, spine, ribs, lung bases, and optionally a hypodense liver
    lesion, with partial-volume edges and CT-like correlated noise.

    Args:
        seed: all randomness (shapes, textures, noise); the same seed gives a bit-identical volume.
        shape: ``(z, y, x)`` voxels.
        spacing: ``(z, y, x)`` mm; default: the standard coverage (192 x 384 x 384 mm)
            divided by ``shape``. The anatomy is fixed in mm, so other spacings crop or pad it.
        lesion: add a 2-3.5 cm hypodense (~40 HU) lesion deep in the right liver lobe
            (the rest of the volume is the same either way).
        noise_hu: standard deviation of the image noise at the centre of the trunk (HU);
            0 gives the noise-free image with the same anatomy.

    Returns:
        A ``Volume`` (float32 HU, ``modality="CT"``) with ``labels`` named as in
        ``LABEL_NAMES`` and ``meta`` holding the generator, version and seed.

    Raises:
        ValueError: for a shape below ``(4, 32, 32)``, a non-positive spacing or a negative noise level.
    """
    # 1. Check inputs
    if len(shape) != 3 or any(int(n) != n or n < m for n, m in zip(shape, _MIN_SHAPE)):
        raise ValueError(f"shape must be 3 integers of at least {_MIN_SHAPE} (z, y, x), got {shape}")
    shape = tuple(int(n) for n in shape)
    if spacing is None:
        spacing = tuple(c / n for c, n in zip(STANDARD_COVERAGE_MM, shape))
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive mm values (z, y, x), got {spacing}")
    spacing = tuple(float(s) for s in spacing)
    if not (np.isfinite(noise_hu) and noise_hu >= 0):
        raise ValueError(f"noise_hu must be >= 0 HU, got {noise_hu}")
    nz, ny, nx = shape
    sz, sy, sx = spacing

    # 2. Grid in anatomical mm: u towards the patient's left, v posterior, zeta superior
    zetas = (np.arange(nz) - (nz - 1) / 2) * sz
    u = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)
    v = ((np.arange(ny) - (ny - 1) / 2) * sy - _TRUNK_CENTRE_V).astype(np.float32)

    # 3. Seeded layout (independent streams, so noise_hu does not change the anatomy)
    streams = np.random.SeedSequence(seed).spawn(3)
    anatomy_rng, texture_rng, noise_rng = (np.random.default_rng(s) for s in streams)
    body = random_body(anatomy_rng, zetas)
    ribs = build_ribs(anatomy_rng, body=body, zetas=zetas)
    vis = build_viscera(anatomy_rng, zetas=zetas, u=u, v=v, body=body, lesion=lesion)
    bowel = build_bowel(anatomy_rng, zetas=zetas, u=u, v=v)
    trunk_box = (-175.0, 175.0, -140.0, 125.0)
    fat_tex = SmoothField(anatomy_rng, zeta=zetas, v=v, u=u, corr_mm=6.0, box=trunk_box)
    lung_vessels = (
        SmoothField(anatomy_rng, zeta=zetas, v=v, u=u, corr_mm=14.0, box=trunk_box),
        SmoothField(anatomy_rng, zeta=zetas, v=v, u=u, corr_mm=14.0, box=trunk_box),
    )
    noise = CTNoise(noise_rng, shape_yx=(ny, nx), spacing_yx=(sy, sx)) if noise_hu > 0 else None

    # 4. Things shared by all slices
    polar = Polar.on(u, v)
    table = couch(u, v, top_mm=body.back_mm + 0.5)
    fov = (u[None, :] ** 2 + (v[:, None] + _TRUNK_CENTRE_V) ** 2) > (min(nx * sx, ny * sy) / 2) ** 2
    edge_mm = max(1.0, min(sx, sy))  # partial-volume ramp ~ one pixel, as a soft-tissue kernel blurs
    array = np.empty(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint16)

    # 5. Draw slice by slice, back to front
    for k, zeta in enumerate(zetas):
        canvas = SliceCanvas(float(zeta), u, v, table.copy(), labels[k], edge_mm)
        trunk = draw_wall(canvas, body=body, polar=polar, k=k, fat_tex=fat_tex)
        draw_mesentery(canvas, trunk, bowel, k)
        draw_small_bowel(canvas, trunk, bowel, k)
        draw_liver(canvas, trunk, vis, k)
        draw_spleen_stomach_gallbladder(canvas, trunk, vis, k)
        draw_colon_duodenum(canvas, trunk, bowel, k)
        draw_kidneys(canvas, vis, k)
        draw_pancreas(canvas, vis, k)
        draw_vessels(canvas, trunk, vis)
        draw_spine(canvas, trunk, rng=texture_rng)
        draw_lungs(canvas, trunk, body=body, polar=polar, k=k, vessels=lung_vessels)
        draw_ribs(canvas, ribs)
        img = canvas.img
        if noise is not None:
            # Quantum noise is highest behind the most tissue: the centre of the trunk
            # (noise_hu), falling to 70% at the skin and 60% in the air around the body.
            grain = noise.sample()
            grain *= np.float32(0.6 * noise_hu)
            win = trunk.win
            gain = np.where(trunk.d_body > 0, (1.0 - 0.3 * np.minimum(trunk.depth, 1.0) ** 2) / 0.6, 1.0)
            grain[win.rows, win.cols] *= gain.astype(np.float32)
            img += grain
        np.maximum(img, -1024.0, out=img)  # scanners store nothing below -1024
        np.copyto(img, -1024.0, where=fov)  # outside the reconstruction circle
        array[k] = np.rint(img)  # CT stores integer HU

    # 6. Wrap as a Volume: voxel (x, y, z) -> RAS mm (x to the left = -R, y posterior = -A)
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [(nx - 1) / 2 * sx, (ny - 1) / 2 * sy + _TRUNK_CENTRE_V, -(nz - 1) / 2 * sz]
    meta = {
        "generator": PHANTOM_NAME,
        "version": PHANTOM_VERSION,
        "seed": int(seed),
        "lesion": bool(lesion),
        "noise_hu": float(noise_hu),
        "phase": "portal-venous",
        "hu_reference": dict(HU),
    }
    return Volume(array, spacing, affine, "CT", LabelMap(labels, dict(LABEL_NAMES)), meta)
