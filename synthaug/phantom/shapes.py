"""Shapes the phantom and the lesion model paint with: smooth random fields, rotations, the
output volume being painted, and (deformed) ellipsoids, capsules and superellipses in mm."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..core.grid import Grid
from .tables import TISSUE_IDS


class Field:
    """Smooth Gaussian random field (unit sd) on a coarse, world-aligned lattice.

    The lattice depends only on ``lo``, ``hi`` and ``corr_mm`` (not on the output grid);
    it is sampled on tensor grids with separable linear interpolation.
    """

    def __init__(self, rng: np.random.Generator, lo, hi, corr_mm: float, ncomp: int = 1) -> None:
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        self.step = corr_mm / 2.0
        self.origin = lo - 2.0 * self.step
        self.n = np.maximum(np.ceil((hi - self.origin) / self.step).astype(int) + 3, 2)
        noise = rng.standard_normal((ncomp, *self.n))
        sm = ndimage.gaussian_filter(noise, sigma=[0.0] + [1.0] * len(self.n), mode="wrap", truncate=3.0)
        axes = tuple(range(1, sm.ndim))
        sm /= sm.std(axis=axes, keepdims=True) + 1e-12
        self.data = sm.astype(np.float32)

    def __call__(self, *coords: np.ndarray, comp: int = 0) -> np.ndarray:
        out = self.data[comp]
        for axis, c in enumerate(coords):
            f = (np.asarray(c, dtype=np.float64) - self.origin[axis]) / self.step
            i0 = np.clip(np.floor(f).astype(np.intp), 0, self.n[axis] - 2)
            w = np.clip(f - i0, 0.0, 1.0).astype(np.float32)
            shape = [1] * out.ndim
            shape[axis] = -1
            a0 = np.take(out, i0, axis=axis)
            a1 = np.take(out, i0 + 1, axis=axis)
            out = a0 + (a1 - a0) * w.reshape(shape)
        return out


def rotation(axis_u: Sequence[float], hint: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Orthonormal basis (columns) whose first axis is ``axis_u``."""
    u = np.asarray(axis_u, dtype=np.float64)
    u /= np.linalg.norm(u)
    h = np.asarray(hint, dtype=np.float64)
    if abs(float(h @ u)) > 0.95:
        h = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    v = h - (h @ u) * u
    v /= np.linalg.norm(v)
    w = np.cross(u, v)
    return np.stack([u, v, w], axis=1)


def rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])


def rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1.0, 0], [-math.sin(a), 0, math.cos(a)]])


def superellipse_term(coord: np.ndarray, centre, a_neg, a_pos, p: float) -> np.ndarray:
    """``(|coord - centre| / a)^p`` with side-dependent semi-axis; inf where a == 0."""
    d = coord - centre
    a = np.where(d >= 0, a_pos, a_neg)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(d) / a
        out = np.where(a > 0, r ** p, np.inf)
    return out.astype(np.float32)


class Vol:
    """The output grid: world coordinates, the organ and tissue maps being painted."""

    def __init__(self, grid: Grid) -> None:
        aff = grid.affine
        self.grid = grid
        self.shape = grid.shape
        self.spacing = grid.spacing
        self.x, self.y, self.z = (aff[i, 3] + aff[i, i] * np.arange(n) for i, n in enumerate(grid.shape))
        self.org = np.zeros(self.shape, np.uint8)
        self.tis = np.zeros(self.shape, np.uint8)

    def box(self, lo, hi) -> tuple[slice, slice, slice] | None:
        sl = []
        for c, lo_i, hi_i in zip((self.x, self.y, self.z), lo, hi):
            i0 = int(np.searchsorted(c, lo_i, "left"))
            i1 = int(np.searchsorted(c, hi_i, "right"))
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
        return tuple(sl)

    def coords(self, sl) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.x[sl[0]], self.y[sl[1]], self.z[sl[2]]

    def paint(self, sl, mask: np.ndarray, organ: int | None, tissue: str | int | None) -> None:
        if sl is None:
            return
        if organ is not None:
            self.org[sl][mask] = organ
        if tissue is not None:
            self.tis[sl][mask] = TISSUE_IDS[tissue] if isinstance(tissue, str) else tissue


def ellipsoid(vol: Vol, rng: np.random.Generator, centre, semi, rot: np.ndarray | None = None,
               deform: float = 0.0, corr: float | None = None):
    """Normalised radius^2 of a (randomly deformed) ellipsoid over its bounding box.

    ``deform`` is the displacement amplitude (mm) of a smooth random field with
    correlation length ``corr`` (default: the mean semi-axis). The field is always drawn,
    so the random stream does not depend on the grid. Returns ``(slices, r2)`` or
    ``(None, None)`` if the box misses the grid.
    """
    c = np.asarray(centre, dtype=np.float64)
    semi = np.asarray(semi, dtype=np.float64)
    reach = float(semi.max()) * 1.05 + 2.5 * deform
    field = None
    if deform > 0:
        field = Field(rng, c - reach, c + reach, corr or float(semi.mean()), ncomp=3)
    sl = vol.box(c - reach, c + reach)
    if sl is None:
        return None, None
    xs, ys, zs = vol.coords(sl)
    q = [(xs - c[0])[:, None, None], (ys - c[1])[None, :, None], (zs - c[2])[None, None, :]]
    if field is not None:
        q = [q[i] + deform * field(xs, ys, zs, comp=i) for i in range(3)]
    if rot is not None:
        q = [rot[0, i] * q[0] + rot[1, i] * q[1] + rot[2, i] * q[2] for i in range(3)]
    r2 = (q[0] / semi[0]) ** 2 + (q[1] / semi[1]) ** 2 + (q[2] / semi[2]) ** 2
    return sl, np.broadcast_to(r2, tuple(s.stop - s.start for s in sl)).astype(np.float32)


def capsule(vol: Vol, p0, p1, radius: float):
    """Normalised squared distance to a segment (``< 1`` inside a capsule)."""
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    sl = vol.box(np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius)
    if sl is None:
        return None, None
    xs, ys, zs = vol.coords(sl)
    d = p1 - p0
    L2 = float(d @ d) + 1e-9
    qx = (xs - p0[0])[:, None, None]
    qy = (ys - p0[1])[None, :, None]
    qz = (zs - p0[2])[None, None, :]
    t = np.clip((qx * d[0] + qy * d[1] + qz * d[2]) / L2, 0.0, 1.0)
    dist2 = (qx - t * d[0]) ** 2 + (qy - t * d[1]) ** 2 + (qz - t * d[2]) ** 2
    return sl, (dist2 / radius**2).astype(np.float32)


def superellipse_area(a_l, a_r, b_a, b_p, p: float):
    """Area of the four-quadrant superellipse with the given half-axes (mm^2)."""
    unit = 4.0 * math.gamma(1 + 1 / p) ** 2 / math.gamma(1 + 2 / p)
    return (np.asarray(a_l) + a_r) * (np.asarray(b_a) + b_p) / 4.0 * unit
