"""Random ingredients of the phantom: smooth fields for shapes and texture, and CT noise.

All randomness comes from ``numpy.random.Generator`` objects handed in by the caller,
so one seed gives a bit-identical volume.
"""

from __future__ import annotations

import numpy as np


def gaussian_weights(x: np.ndarray, nodes: np.ndarray, sigma: float) -> np.ndarray:
    """``(len(x), len(nodes))`` Gaussian interpolation weights.

    Applied to unit white noise on ``nodes`` (spaced ``sigma`` apart) this gives a smooth
    field with unit variance at every ``x`` inside the nodes' span (Gaussian correlation
    of width ``sigma * sqrt(2)``).
    """
    w = np.exp(-0.5 * ((np.asarray(x, np.float64)[:, None] - nodes[None, :]) / sigma) ** 2)
    w[w < 1e-9] = 0.0  # float32 denormals would make every product with them ~10x slower
    # One norm for all rows (the value inside the node range), so the field fades to 0
    # beyond the nodes instead of blowing up there.
    return (w / np.sqrt((w * w).sum(axis=1)).max()).astype(np.float32)


def _nodes(lo: float, hi: float, sigma: float) -> np.ndarray:
    return np.arange(lo - 3 * sigma, hi + 3 * sigma + sigma, sigma)


def smooth_1d(rng: np.random.Generator, x: np.ndarray, *, corr_mm: float, n: int = 1) -> np.ndarray:
    """``(n, len(x))`` unit-variance smooth random functions of the positions ``x`` (mm)."""
    sigma = corr_mm / 2.0
    nodes = _nodes(float(np.min(x)), float(np.max(x)), sigma)
    return rng.standard_normal((n, len(nodes))).astype(np.float32) @ gaussian_weights(x, nodes, sigma).T


class SmoothField:
    """A unit-variance Gaussian random field over a box, evaluated slice by slice.

    The field is white noise on a coarse node grid (spacing ``corr_mm / 2``) smoothed
    by separable Gaussian weights, so a window of slice ``k`` costs two small matrix
    products instead of a 3D filter.

    Args:
        rng: source of the node noise.
        zeta: ``(nz,)`` slice heights in mm.
        v: ``(ny,)`` row positions in mm.
        u: ``(nx,)`` column positions in mm.
        corr_mm: in-plane correlation length (mm).
        corr_z_mm: correlation length along z (default: ``corr_mm``).
        box: ``(u0, u1, v0, v1)`` mm where the field is needed; it fades to 0 outside.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        zeta: np.ndarray,
        v: np.ndarray,
        u: np.ndarray,
        corr_mm: float,
        corr_z_mm: float | None = None,
        box: tuple[float, float, float, float] | None = None,
    ) -> None:
        s, sz = corr_mm / 2.0, (corr_z_mm or corr_mm) / 2.0
        u0, u1, v0, v1 = box or (float(u[0]), float(u[-1]), float(v[0]), float(v[-1]))
        nz, ny, nx = _nodes(zeta.min(), zeta.max(), sz), _nodes(v0, v1, s), _nodes(u0, u1, s)
        self._c = rng.standard_normal((len(nz), len(ny) * len(nx)), dtype=np.float32)
        self._shape = (len(ny), len(nx))
        self._az = gaussian_weights(zeta, nz, sz)
        self._ay = gaussian_weights(v, ny, s)
        self._ax_t = np.ascontiguousarray(gaussian_weights(u, nx, s).T)
        self._k, self._plane = -1, None

    def at(self, k: int, rows: slice, cols: slice) -> np.ndarray:
        """``(h, w)`` float32 field values of slice ``k`` on a window."""
        if k != self._k:  # slices are drawn in order; keep the coarse plane of this one
            self._k, self._plane = k, (self._az[k] @ self._c).reshape(self._shape)
        return self._ay[rows] @ self._plane @ self._ax_t[:, cols]


def ct_noise_filter(shape_yx: tuple[int, int], spacing_yx: tuple[float, float]) -> np.ndarray:
    """Amplitude filter (rfft2 layout) giving CT-like noise with unit standard deviation.

    Filtered back projection leaves a noise power spectrum that rises with spatial
    frequency (the ramp filter) and is rolled off by the reconstruction kernel:
    NPS(f) ~ f exp(-2 (f / fc)^2), peaking at fc / 2. A standard soft-tissue kernel
    peaks near 0.25-0.3 cycles/mm (e.g. Boedeker et al., Med Phys 2007; AAPM TG-233),
    so fc = 0.55 cycles/mm, lowered on coarse grids to stay below their Nyquist
    frequency (a coarse matrix is reconstructed with a smoother kernel).
    """
    ny, nx = shape_yx
    fy = np.fft.fftfreq(ny, d=spacing_yx[0])[:, None]
    fx = np.fft.rfftfreq(nx, d=spacing_yx[1])[None, :]
    f = np.sqrt(fy**2 + fx**2)
    nyquist = 0.5 / max(spacing_yx)
    fc = min(0.55, 0.8 * nyquist)
    amp = np.sqrt(f) * np.exp(-((f / fc) ** 2))
    # Variance of irfft2(ortho) of complex noise with unit-variance real and imaginary
    # parts: an interior column stands for a conjugate pair (2 x |X|^2 = 4 per bin), the
    # DC and Nyquist columns for themselves (2 per bin).
    w = np.full(fx.shape, 4.0)
    w[0, 0] = 2.0
    if nx % 2 == 0:
        w[0, -1] = 2.0
    var = (w * amp**2).sum() / (ny * nx)
    return (amp / np.sqrt(var)).astype(np.float32)


class CTNoise:
    """Unit-variance CT-like noise slices from a bank of independent noise fields.

    Each slice is the sum of two bank fields, each circularly shifted by a random
    offset and randomly transposed or flipped, divided by sqrt(2). Shifting and
    flipping keep the (isotropic) noise power spectrum and Gaussian statistics exactly,
    and the random offsets decorrelate neighbouring slices, at a fraction of the cost of
    one FFT per slice.

    Args:
        rng: source of all noise.
        shape_yx: slice shape.
        spacing_yx: pixel size in mm.
        bank: number of independent fields.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        shape_yx: tuple[int, int],
        spacing_yx: tuple[float, float],
        bank: int = 6,
    ) -> None:
        import scipy.fft

        self._rng = rng
        amp = ct_noise_filter(shape_yx, spacing_yx)
        spec_shape = (bank, *amp.shape)
        real = rng.standard_normal(spec_shape, dtype=np.float32)
        spec = real + 1j * rng.standard_normal(spec_shape, dtype=np.float32)
        fields = scipy.fft.irfft2(spec * amp, s=shape_yx, norm="ortho", workers=1).astype(np.float32)
        # Two periods in y and x: a circular shift is then a view, not a copy.
        self._bank = np.tile(fields, (1, 2, 2))
        self._shape = shape_yx
        # Transposing is only shape-preserving (and spectrum-preserving) for square, isotropic pixels.
        self._can_transpose = shape_yx[0] == shape_yx[1] and spacing_yx[0] == spacing_yx[1]

    def sample(self) -> np.ndarray:
        """One ``(ny, nx)`` float32 noise slice with unit standard deviation."""
        ny, nx = self._shape
        views = []
        for idx in self._rng.choice(len(self._bank), size=2, replace=False):
            dy, dx, flip = self._rng.integers(0, [ny, nx, 4])
            field = self._bank[idx, dy : dy + ny, dx : dx + nx]
            if flip & 1:
                field = field[::-1]
            if flip & 2 and self._can_transpose:
                field = field.T
            views.append(field)
        out = views[0] + views[1]
        out *= np.float32(np.sqrt(0.5))
        return out
