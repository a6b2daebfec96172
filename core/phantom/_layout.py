"""Where things are: labels, attenuation values and the seeded layout of the anatomy.

Positions are millimetres relative to the centre of the trunk: ``u`` towards the
patient's left, ``v`` posterior, ``zeta`` superior. ``zeta = 0`` is the middle of the
standard coverage (about the L1-L2 disc); the standard coverage runs from about L4
(``zeta = -96``) to the lung bases at T11 (``zeta = +96``).

Organ tables are keyframes along ``zeta``: ``(zeta, cu, cv, a, b, angle_deg)``, the
centre, semi-axes and rotation of the organ's axial section; an organ exists only
between its first and last keyframe. They follow typical adult anatomy (vertebral
levels, organ sizes from standard anatomy texts) and are jittered per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.phantom._random import smooth_1d

LABEL_NAMES: dict[int, str] = {
    1: "body",  # skin and whatever inside the outline has no label of its own
    2: "subcutaneous_fat",
    3: "skeletal_muscle",
    4: "torso_fat",  # intra-abdominal, retroperitoneal and intermuscular fat
    5: "liver",
    6: "spleen",
    7: "kidney_left",
    8: "kidney_right",
    9: "gallbladder",
    10: "stomach",
    11: "pancreas",
    12: "duodenum",
    13: "small_bowel",
    14: "colon",
    15: "aorta",
    16: "inferior_vena_cava",
    17: "portal_vein_and_splenic_vein",
    18: "vertebrae",
    19: "intervertebral_discs",
    20: "spinal_cord",
    21: "ribs",
    22: "costal_cartilages",
    23: "lung_left",
    24: "lung_right",
    25: "lesion",
    26: "iliac_artery_left",
    27: "iliac_artery_right",
}
LABEL = {name: i for i, name in enumerate(LABEL_NAMES.values(), start=1)}

# Attenuation in HU, portal-venous phase (~70 s after iodinated contrast), adult.
HU = {
    "air": -1000.0,
    "fat": -100.0,  # adipose tissue -80 to -120
    "skin": 30.0,
    "muscle": 55.0,  # skeletal muscle 40-50 unenhanced, +5-15 after contrast
    "liver": 105.0,  # 55-65 unenhanced, 100-120 portal-venous
    "hepatic_vessel": 165.0,  # portal and hepatic veins 150-190 in the portal phase
    "spleen": 115.0,  # 100-130 portal-venous, homogeneous by then
    "kidney_cortex": 175.0,  # 150-200 (corticomedullary to early nephrographic)
    "kidney_medulla": 120.0,  # still darker than cortex at ~70 s
    "urine": 10.0,  # unopacified collecting system before the excretory phase
    "aorta": 165.0,  # 150-200 portal-venous
    "ivc_upper": 140.0,  # suprarenal IVC, well mixed
    "ivc_lower": 120.0,  # infrarenal IVC mixes with less enhanced blood from the legs
    "portal_vein": 175.0,  # peaks in the portal phase, 160-200
    "pancreas": 100.0,  # 90-120 portal-venous
    "bowel_wall": 110.0,  # enhancing mucosa 90-130
    "fluid": 15.0,  # water-like bowel content (neutral oral contrast) 0-20
    "bile": 8.0,  # 0-20
    "cortical_bone": 1100.0,  # dense cortex; 1-2 mm thick, so partial volume shows 600-1000
    "cancellous_bone": 250.0,  # vertebral body 150-300 in adults
    "disc": 90.0,  # intervertebral disc 70-110
    "csf": 10.0,
    "cord": 35.0,
    "cartilage": 130.0,  # costal cartilage 100-200
    "lung": -860.0,  # aerated lung -800 to -900, denser (dependent) posteriorly
    "lesion": 40.0,  # hypovascular metastasis 30-60 in the portal phase
}

THETA_BINS = 4096  # angular resolution of the trunk outline look-up tables (0.25 mm at 160 mm)

# The trunk outline (mm): half-width, anterior and posterior half-depth along zeta.
_BODY = np.array([
    # zeta, half-width, anterior, posterior
    (-120, 160, 112, 99),
    (-60, 153, 110, 98),
    (0, 150, 108, 99),
    (60, 152, 108, 100),
    (120, 157, 110, 102),
])

# Solid organs: zeta, cu, cv, a, b, angle (deg). Sizes for an average adult.
_LIVER_RIGHT = np.array([
    (-58, -100, 22, 0, 0, 0),  # tip of the right lobe, lateral to the right kidney
    (-45, -100, 20, 30, 38, 0),
    (-20, -95, 12, 48, 58, 0),
    (0, -88, 5, 62, 72, 0),
    (30, -70, -2, 95, 95, 0),
    (60, -55, -8, 118, 108, 0),
    (140, -50, -10, 125, 112, 0),
])
_LIVER_LEFT = np.array([
    (15, 0, -64, 0, 0, 0),
    (25, 5, -64, 35, 20, -10),
    (50, 20, -60, 60, 30, -15),
    (75, 30, -52, 75, 38, -15),
    (140, 30, -48, 80, 42, -15),
])
_SPLEEN = np.array([  # long axis along the posterolateral wall (angle -45 deg)
    (0, 95, 38, 0, 0, -45),
    (10, 95, 40, 25, 15, -45),
    (35, 92, 42, 50, 26, -48),
    (60, 88, 40, 57, 30, -50),
    (80, 82, 32, 46, 26, -50),
    (92, 80, 28, 0, 0, -50),
])
_STOMACH = np.array([
    (5, -22, -52, 0, 0, 0),  # pylorus
    (10, -18, -55, 18, 13, 0),
    (22, 5, -62, 40, 18, -10),  # antrum crossing the midline
    (40, 35, -52, 38, 28, -30),
    (60, 62, -20, 40, 34, -40),  # body
    (80, 72, -2, 48, 42, -40),  # fundus under the left hemidiaphragm
    (140, 72, 0, 45, 40, -40),
])
_GALLBLADDER = np.array([
    (-25, -55, -48, 0, 0, 20),
    (-18, -55, -48, 13, 17, 20),  # fundus
    (0, -52, -42, 17, 20, 20),
    (20, -48, -32, 13, 15, 25),
    (35, -40, -22, 7, 8, 30),  # neck
    (40, -38, -20, 0, 0, 30),
])
# Kidneys: centre (u, v, zeta), semi-axes (long in-plane, short in-plane, cranio-caudal), angle.
# The long axis of the section runs anterolateral -> posteromedial, so the hilum faces
# anteromedially; the right kidney sits ~15 mm lower than the left (the liver is above it).
_KIDNEYS = {
    "kidney_left": ((72.0, 46.0, 8.0), (31.0, 21.0, 55.0), -56.0),
    "kidney_right": ((-72.0, 48.0, -8.0), (31.0, 21.0, 55.0), 56.0),
}


def keyframe(table: np.ndarray, zeta: float) -> np.ndarray | None:
    """Parameters at ``zeta`` interpolated from a keyframe table; None outside its span."""
    if zeta < table[0, 0] or zeta > table[-1, 0]:
        return None
    return np.array([np.interp(zeta, table[:, 0], table[:, j]) for j in range(1, table.shape[1])])


@dataclass
class Organ:
    """A solid organ: keyframes plus per-seed shift, scale and boundary wobble.

    Attributes:
        table: keyframe table (see the module docstring).
        shift: ``(du, dv, dzeta)`` mm.
        scale: size factor.
        coefs: ``(nz, K, 2)`` Fourier radius perturbation per slice.
    """

    table: np.ndarray
    shift: np.ndarray
    scale: float
    coefs: np.ndarray

    def section(self, k: int, zeta: float) -> dict | None:
        """Ellipse parameters of slice ``k`` (for ``ellipse_sdf``), or None when absent."""
        row = keyframe(self.table, zeta - self.shift[2])
        if row is None or min(row[2], row[3]) < 0.5:
            return None
        cu, cv, a, b, angle = row
        return {
            "cu": cu + self.shift[0],
            "cv": cv + self.shift[1],
            "a": a * self.scale,
            "b": b * self.scale,
            "angle": np.deg2rad(angle),
            "coefs": self.coefs[k],
        }


def random_organ(
    rng: np.random.Generator,
    table: np.ndarray,
    zetas: np.ndarray,
    *,
    wobble: float,
    jitter_mm: float,
    size_sd: float,
    harmonics: int = 5,
) -> Organ:
    """An organ whose position, size and outline vary with the seed."""
    shift = rng.normal(0.0, jitter_mm, size=3)
    scale = float(np.clip(rng.normal(1.0, size_sd), 1 - 2.5 * size_sd, 1 + 2.5 * size_sd))
    coefs = wobble_coefs(rng, zetas, amplitude=wobble, harmonics=harmonics)
    return Organ(np.asarray(table, float), shift, scale, coefs)


def wobble_coefs(
    rng: np.random.Generator, zetas: np.ndarray, *, amplitude: float, harmonics: int = 5
) -> np.ndarray:
    """``(nz, K, 2)`` Fourier outline perturbations that vary smoothly along z (60 mm)."""
    fun = smooth_1d(rng, zetas, corr_mm=60.0, n=2 * harmonics)  # (2K, nz)
    weights = amplitude / np.arange(1, harmonics + 1)  # lower harmonics deform more
    coefs = fun.T.reshape(len(zetas), harmonics, 2) * weights[None, :, None]
    coefs[:, 0] *= 0.3  # the first harmonic only shifts the shape; keep it small
    return coefs.astype(np.float32)


@dataclass
class Body:
    """The trunk outline and wall thicknesses, as functions of angle per slice.

    Attributes:
        size: ``(3,)`` factors on half-width, anterior and posterior half-depth.
        adiposity: factor on subcutaneous fat thickness (1 = average).
        coefs: ``(nz, K, 2)`` outline perturbation per slice.
        fat_wobble: ``(nz, K, 2)`` perturbation of the fat thickness around the trunk.
        lung_shift: mm added to the height of the lung bases.
        back_mm: where the back lies flat on the couch (v, mm); 0 = from the posterior size.
    """

    size: np.ndarray
    adiposity: float
    coefs: np.ndarray
    fat_wobble: np.ndarray
    lung_shift: float
    back_mm: float = 0.0
    cos_t: np.ndarray = field(init=False)
    sin_t: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        theta = -np.pi + (np.arange(THETA_BINS) + 0.5) * (2 * np.pi / THETA_BINS)
        self.cos_t, self.sin_t = np.cos(theta), np.sin(theta)
        j = np.arange(1, max(len(self.coefs[0]), len(self.fat_wobble[0]), 4) + 1)[:, None]
        self._harmonics = (np.cos(j * theta), np.sin(j * theta))  # (K, bins) each, reused every slice
        if not self.back_mm:
            self.back_mm = 0.95 * float(_BODY[:, 3].min()) * float(self.size[2])
        self._cache: dict[int, dict] = {}

    def outline(self, k: int, zeta: float, c: np.ndarray | None = None, s: np.ndarray | None = None) -> dict:
        """Radii in mm along directions ``(c, s)`` (default: all angle bins) on slice ``k``.

        Returns:
            ``skin`` (outer outline), ``fat`` and ``muscle`` thickness, ``planes`` (half-width
            in mm of the fat planes between the oblique muscles, 0 elsewhere), and ``lung``:
            depth of the lung band below the inner surface of the wall (0 where there is none).
        """
        if c is None and k in self._cache:  # the wall, lungs and noise all ask for the same slice
            return self._cache[k]
        cached = c is None
        c = self.cos_t if c is None else c
        s = self.sin_t if s is None else s
        if cached:
            cos_j, sin_j = self._harmonics
        else:
            j = np.arange(1, len(self._harmonics[0]) + 1)[:, None]
            cos_j, sin_j = np.cos(j * np.arctan2(s, c)), np.sin(j * np.arctan2(s, c))
        front = np.degrees(np.arccos(np.clip(-s, -1.0, 1.0)))  # 0 anterior midline, 90 flank, 180 back
        half_w, ant, post = (np.interp(zeta, _BODY[:, 0], _BODY[:, j]) for j in (1, 2, 3))
        half_w, ant, post = half_w * self.size[0], ant * self.size[1], post * self.size[2]
        base = 1.0 / np.sqrt((c / half_w) ** 2 + (s / np.where(s < 0, ant, post)) ** 2)
        coefs = self.coefs[k]
        pert = 1.0 - 0.045 * cos_j[3] + coefs[:, 0] @ cos_j[: len(coefs)] + coefs[:, 1] @ sin_j[: len(coefs)]
        skin = base * pert  # the -cos(4t) term: squarer than an ellipse, like a trunk
        # Supine on the couch: the back is flattened on it (smooth minimum with the tabletop).
        flat = self.back_mm / np.maximum(s, 1e-3)
        skin = -4.0 * np.logaddexp(-skin / 4.0, -flat / 4.0)
        low = np.clip(-zeta / 80.0, 0.0, 1.0)  # below the umbilicus the anterior fat thickens
        fat = self.adiposity * np.interp(front, _FAT_DEG, _FAT_MM) * (1.0 + 0.4 * low * (front < 70))
        wobble = self.fat_wobble[k]
        fat = fat * (1.0 + wobble[:, 0] @ cos_j[: len(wobble)])
        # Over the lower ribs the wall is thinner (intercostals, slips of the obliques).
        chest = np.clip((zeta - 20.0) / 50.0, 0.0, 1.0) * np.clip((front - 30.0) / 20.0, 0.0, 1.0)
        muscle = np.interp(front, _MUSCLE_DEG, _MUSCLE_MM) * (1.0 - 0.45 * chest)
        planes = np.interp(front, (40, 60, 110, 130), (0.0, 0.6, 0.6, 0.0)) * (1.0 - chest)
        floor = np.interp(front, _LUNG_DEG, _LUNG_FLOOR) + np.where(c < 0, 12.0, 0.0) + self.lung_shift
        lung = np.clip(zeta - floor, 0.0, None) * 0.7
        out = {"skin": skin, "fat": fat, "muscle": muscle, "planes": planes, "lung": lung}
        if cached:
            self._cache = {k: out}  # slices are drawn in order: keep only the current one
        return out


# Wall profiles against the angle from the anterior midline (deg), average adult.
_FAT_DEG = (0, 30, 60, 90, 120, 150, 180)
_FAT_MM = (20, 22, 18, 13, 20, 24, 16)  # subcutaneous fat: thick front and posterolateral flanks
_MUSCLE_DEG = (0, 6, 25, 33, 38, 50, 90, 125, 150, 180)
# recti, linea semilunaris, three oblique layers, latissimus; the paraspinal
# muscles behind the spine are drawn on their own.
_MUSCLE_MM = (8.5, 10, 11, 8, 6, 14, 16, 11, 6, 6)
# Lowest extent of the lung (zeta mm): the costophrenic recess reaches ~L1 at the back,
# stays higher laterally and highest anteriorly.
_LUNG_DEG = (0, 60, 90, 135, 180)
_LUNG_FLOOR = (120, 88, 62, 40, 28)


def random_body(rng: np.random.Generator, zetas: np.ndarray) -> Body:
    """A trunk whose size, fat and outline vary with the seed."""
    size = np.clip(rng.normal(1.0, 0.05, size=3), 0.88, 1.12)
    adiposity = float(rng.uniform(0.7, 1.5))
    coefs = wobble_coefs(rng, zetas, amplitude=0.02, harmonics=6)
    fat_wobble = wobble_coefs(rng, zetas, amplitude=0.25, harmonics=4)
    return Body(size, adiposity, coefs, fat_wobble, float(rng.normal(0.0, 6.0)))


def vertebral_column(zeta: float) -> dict:
    """Vertebral body centre/size and the phase within its level at height ``zeta``.

    Levels are 34 mm (a ~26 mm body and a ~8 mm disc); the inferior endplate of L1
    is at ``zeta = 12``, so L1 spans 12..38, T12 46..72 and L2 -22..4.

    Returns:
        ``v`` (body centre), ``half_w``, ``half_d`` (mm), ``phase`` in ``[0, 1)``
        (0 = inferior endplate; the disc is ``phase > 0.76``) and ``lumbar`` (bool).
    """
    t = np.clip((zeta + 96.0) / 192.0, 0.0, 1.0)  # 0 at L4, 1 at T11
    phase = ((zeta - 12.0) / 34.0) % 1.0
    return {
        "v": 10.0 + 8.0 * t,  # lordosis: the lumbar bodies sit further forward
        "half_w": 24.0 - 5.0 * t,
        "half_d": 17.0 - 3.0 * t,
        "phase": phase,
        "lumbar": zeta < 46.0,
    }
