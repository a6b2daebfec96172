"""Drawing one axial slice of the phantom: windows, signed distances, partial-volume paint.

Every shape is a signed distance ``d`` in mm (positive inside) evaluated on a small
window of the slice; ``SliceCanvas.paint`` turns it into a partial-volume fraction with a
ramp about one pixel wide and blends it over what is already there (painter's order: a
later structure covers an earlier one). A label is written where the fraction is > 0.5.

In-plane coordinates are millimetres: ``u`` along x (+ towards the patient's left) and
``v`` along y (+ posterior), both relative to the centre of the body; ``zeta`` is the
height in mm (+ superior).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = np.float32(1e-4)


@dataclass
class Window:
    """A rectangular piece of a slice with its coordinates.

    Attributes:
        rows: row (y) slice into the slice arrays.
        cols: column (x) slice.
        U: ``(1, w)`` float32 u in mm.
        V: ``(h, 1)`` float32 v in mm.
    """

    rows: slice
    cols: slice
    U: np.ndarray
    V: np.ndarray

    def sub(self, outer: Window, values: np.ndarray) -> np.ndarray:
        """The part of ``values`` (laid out on ``outer``, which contains this window) on this window."""
        r0, c0 = self.rows.start - outer.rows.start, self.cols.start - outer.cols.start
        if r0 < 0 or c0 < 0 or self.rows.stop > outer.rows.stop or self.cols.stop > outer.cols.stop:
            raise ValueError(f"window {self.rows, self.cols} is not inside {outer.rows, outer.cols}")
        return values[r0 : r0 + self.V.shape[0], c0 : c0 + self.U.shape[1]]


@dataclass
class SliceCanvas:
    """One axial slice being drawn.

    Attributes:
        zeta: height of the slice in mm (+ superior).
        u: ``(nx,)`` column positions in mm (+ patient left).
        v: ``(ny,)`` row positions in mm (+ posterior).
        img: ``(ny, nx)`` float32 HU, painted in place.
        lab: ``(ny, nx)`` uint16 label ids, written in place.
        edge_mm: width of the partial-volume ramp at a boundary.
    """

    zeta: float
    u: np.ndarray
    v: np.ndarray
    img: np.ndarray
    lab: np.ndarray
    edge_mm: float

    def window(
        self, u0: float, u1: float, v0: float, v1: float, *, within: Window | None = None
    ) -> Window | None:
        """The window covering ``[u0, u1] x [v0, v1]`` mm (cut to ``within``), or None when empty."""
        c0, c1 = np.searchsorted(self.u, [u0, u1])
        r0, r1 = np.searchsorted(self.v, [v0, v1])
        if within is not None:
            c0, c1 = max(c0, within.cols.start), min(c1, within.cols.stop)
            r0, r1 = max(r0, within.rows.start), min(r1, within.rows.stop)
        if c1 <= c0 or r1 <= r0:
            return None
        return Window(slice(r0, r1), slice(c0, c1), self.u[None, c0:c1], self.v[r0:r1, None])

    def around(
        self, cu: float, cv: float, half_u: float, half_v: float, *, within: Window | None = None
    ) -> Window | None:
        """The window of a box centred on ``(cu, cv)`` (cut to ``within``)."""
        return self.window(cu - half_u, cu + half_u, cv - half_v, cv + half_v, within=within)

    def paint(
        self,
        win: Window,
        d: np.ndarray,
        hu: float | np.ndarray,
        label: int = 0,
        *,
        edge_mm: float | None = None,
    ) -> np.ndarray:
        """Blend ``hu`` where ``d > 0`` (with a soft edge); returns the fraction painted."""
        alpha = coverage(d, edge_mm or self.edge_mm)
        img = self.img[win.rows, win.cols]
        step = np.subtract(hu, img, dtype=np.float32)
        step *= alpha
        img += step
        if label:
            np.copyto(self.lab[win.rows, win.cols], label, where=alpha > 0.5)
        return alpha


def coverage(d: np.ndarray, edge_mm: float) -> np.ndarray:
    """Partial-volume fraction of a voxel at signed distance ``d`` mm from a boundary."""
    alpha = d * np.float32(1.0 / edge_mm)
    alpha += np.float32(0.5)
    np.minimum(alpha, np.float32(1.0), out=alpha)
    return np.maximum(alpha, np.float32(0.0), out=alpha)


def ellipse_sdf(
    win: Window,
    *,
    cu: float,
    cv: float,
    a: float,
    b: float,
    angle: float = 0.0,
    coefs: np.ndarray | None = None,
) -> np.ndarray:
    """Radial signed distance (mm) to an ellipse whose radius is Fourier-perturbed.

    Args:
        win: where to evaluate.
        cu: centre u (mm).
        cv: centre v (mm).
        a: semi-axis along the rotated u axis (mm).
        b: semi-axis along the rotated v axis (mm).
        angle: rotation in radians (from +u towards +v).
        coefs: ``(K, 2)`` relative radius perturbation: row ``k`` holds the cos and sin
            weights of harmonic ``k + 1``, so the boundary radius is scaled by
            ``1 + sum(c_k cos(k t) + s_k sin(k t))``.

    Returns:
        ``(h, w)`` float32 ``R(theta) - r``: the distance to the boundary along the ray
        from the centre (exact for a circle, an upper bound for the normal distance otherwise).
    """
    du = win.U - np.float32(cu)
    dv = win.V - np.float32(cv)
    if angle:
        ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        du, dv = du * ca + dv * sa, dv * ca - du * sa
    r = np.sqrt(du * du + dv * dv) + _EPS
    # R(t) = r / rho with rho the ellipse's normalised radius: no need for cos t and sin t.
    ea, eb = du * np.float32(1.0 / a), dv * np.float32(1.0 / b)
    ratio = r / (np.sqrt(ea * ea + eb * eb) + _EPS)
    if coefs is not None and len(coefs):
        ratio *= fourier(du / r, dv / r, coefs)
    ratio -= r
    return ratio


def fourier(c: np.ndarray, s: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """``1 + sum_k (C_k cos(k t) + S_k sin(k t))`` from ``cos t``/``sin t`` without arctan."""
    out = np.float32(1.0) + np.float32(coefs[0, 0]) * c + np.float32(coefs[0, 1]) * s
    ck, sk = c, s
    for cc, ss in coefs[1:]:
        ck, sk = ck * c - sk * s, sk * c + ck * s  # angle addition: harmonic k+1
        out += np.float32(cc) * ck + np.float32(ss) * sk
    return out


class Tube:
    """A tube of varying radius along a 3D polyline (vessels, ribs, bowel).

    Args:
        points: ``(n, 3)`` polyline vertices ``(u, v, zeta)`` in mm.
        radii: ``(n,)`` radius in mm at each vertex.
    """

    def __init__(self, points: np.ndarray, radii: np.ndarray) -> None:
        points = np.asarray(points, dtype=np.float64)
        radii = np.asarray(radii, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) < 2 or radii.shape != (len(points),):
            raise ValueError(
                f"a tube needs (n>=2, 3) points and (n,) radii, got {points.shape} and {radii.shape}"
            )
        self.p0, self.p1 = points[:-1], points[1:]
        self.r0, self.r1 = radii[:-1], radii[1:]
        rmax = np.maximum(self.r0, self.r1)
        self._zlo = np.minimum(self.p0[:, 2], self.p1[:, 2]) - rmax
        self._zhi = np.maximum(self.p0[:, 2], self.p1[:, 2]) + rmax
        self._last: tuple | None = None
        self._span = (self._zlo.min(), self._zhi.max())
        self._none = (np.zeros(0, dtype=np.int64), np.zeros((0, 2)), np.zeros((0, 2)))

    def _crossing(self, zeta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices of the segments crossing the slice and their boxes ``lo``/``hi`` ``(S, 2)`` (u, v)."""
        if self._last is not None and self._last[0] == zeta:  # box() then sdf() on the same slice
            return self._last[1]
        if not self._span[0] <= zeta <= self._span[1]:
            return self._none
        idx = np.nonzero((self._zlo <= zeta) & (self._zhi >= zeta))[0]
        p0, p1 = self.p0[idx], self.p1[idx]
        r = np.maximum(self.r0[idx], self.r1[idx])
        dz = p1[:, 2] - p0[:, 2]
        flat = np.abs(dz) < 1e-6
        safe = np.where(flat, 1.0, dz)
        # Only the part of each segment within r of the slice (all of it when it lies in the slice).
        ta = np.where(flat, 0.0, np.clip((zeta - r - p0[:, 2]) / safe, 0.0, 1.0))
        tb = np.where(flat, 1.0, np.clip((zeta + r - p0[:, 2]) / safe, 0.0, 1.0))
        ends = [p0[:, :2] + t[:, None] * (p1[:, :2] - p0[:, :2]) for t in (ta, tb)]
        out = (idx, np.minimum(*ends) - r[:, None], np.maximum(*ends) + r[:, None])
        self._last = (zeta, out)
        return out

    def box(self, zeta: float) -> tuple[float, float, float, float] | None:
        """Bounding box ``(u0, u1, v0, v1)`` of the tube on the slice, or None."""
        idx, lo, hi = self._crossing(zeta)
        if not len(idx):
            return None
        return lo[:, 0].min(), hi[:, 0].max(), lo[:, 1].min(), hi[:, 1].max()

    def sdf(self, win: Window, zeta: float, *, floor: float = -50.0) -> np.ndarray:
        """Signed distance (mm) to the tube surface on ``win``; ``floor`` far from it."""
        h, w = win.V.shape[0], win.U.shape[1]
        idx, lo, hi = self._crossing(zeta)
        if len(idx) * h * w <= 400_000:  # small: all segments at once, (S, h, w)
            return self._segments(idx, win.U[None], win.V[None], zeta).max(axis=0, initial=floor)
        out = np.full((h, w), floor, dtype=np.float32)
        for i, (u0, v0), (u1, v1) in zip(idx, lo, hi):  # large: each segment on its own box
            c0, c1 = np.searchsorted(win.U[0], [u0, u1])
            r0, r1 = np.searchsorted(win.V[:, 0], [v0, v1])
            if c1 > c0 and r1 > r0:
                seg = self._segments(np.array([i]), win.U[None, :, c0:c1], win.V[None, r0:r1], zeta)[0]
                np.maximum(out[r0:r1, c0:c1], seg, out=out[r0:r1, c0:c1])
        return out

    def _segments(self, idx: np.ndarray, U: np.ndarray, V: np.ndarray, zeta: float) -> np.ndarray:
        """``(S, h, w)`` signed distance to each capsule ``idx`` (radius interpolated along it)."""
        p0 = self.p0[idx].astype(np.float32)
        d = (self.p1[idx] - self.p0[idx]).astype(np.float32)
        inv = np.float32(1.0) / np.maximum((d * d).sum(axis=1), np.float32(1e-9))
        col = (slice(None), None, None)
        wu, wv, wz = U - p0[:, 0][col], V - p0[:, 1][col], (np.float32(zeta) - p0[:, 2])[col]
        t = (wu * (d[:, 0] * inv)[col] + wv * (d[:, 1] * inv)[col]) + wz * (d[:, 2] * inv)[col]
        t = np.clip(t, 0.0, 1.0)  # closest point of each segment
        ru, rv, rz = wu - t * d[:, 0][col], wv - t * d[:, 1][col], wz - t * d[:, 2][col]
        r0 = self.r0[idx].astype(np.float32)[col]
        r1 = self.r1[idx].astype(np.float32)[col]
        return r0 + t * (r1 - r0) - np.sqrt(ru * ru + rv * rv + rz * rz)


def ellipse_union(win: Window, sections: list[dict], *, floor: float = -50.0) -> np.ndarray:
    """Union (max of signed distances) of ellipses, each evaluated only on its own box in ``win``."""
    out = np.full((win.V.shape[0], win.U.shape[1]), floor, dtype=np.float32)
    u, v = win.U[0], win.V[:, 0]
    for sec in sections:
        coefs = sec.get("coefs")
        half = max(sec["a"], sec["b"]) * (1.0 + (np.abs(coefs).sum() if coefs is not None else 0.0)) + 3.0
        c0, c1 = np.searchsorted(u, [sec["cu"] - half, sec["cu"] + half])
        r0, r1 = np.searchsorted(v, [sec["cv"] - half, sec["cv"] + half])
        if c1 > c0 and r1 > r0:
            rows = slice(win.rows.start + r0, win.rows.start + r1)
            sub = Window(rows, slice(win.cols.start + c0, win.cols.start + c1), win.U[:, c0:c1], win.V[r0:r1])
            np.maximum(out[r0:r1, c0:c1], ellipse_sdf(sub, **sec), out=out[r0:r1, c0:c1])
    return out


def densify(points: np.ndarray, radii: np.ndarray, *, step_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample a polyline with a smooth Catmull-Rom curve every ``step_mm``.

    Returns:
        ``(points (m, 3), radii (m,))`` and the arc length is implicit in the step.
    """
    points = np.asarray(points, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    ext = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    out_p, out_r = [], []
    for i in range(len(points) - 1):
        q0, q1, q2, q3 = ext[i : i + 4]
        n = max(2, int(np.ceil(np.linalg.norm(q2 - q1) / step_mm)))
        t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
        # Catmull-Rom: passes through every vertex with a continuous tangent.
        cubic = (2 * q0 - 5 * q1 + 4 * q2 - q3) * t**2 + (3 * q1 - q0 - 3 * q2 + q3) * t**3
        seg = 0.5 * (2 * q1 + (q2 - q0) * t + cubic)
        out_p.append(seg)
        out_r.append(radii[i] + (radii[i + 1] - radii[i]) * t[:, 0])
    out_p.append(points[-1:])
    out_r.append(radii[-1:])
    return np.vstack(out_p), np.concatenate(out_r)
