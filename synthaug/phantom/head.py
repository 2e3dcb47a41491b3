"""The phantom's head: scalp and face, nasal and oral air, the skull (cortex and diploe), the brain
(grey matter shell, white matter, fissure, cerebellum, deep grey nuclei, ventricles that widen with
age), the salivary glands and tonsils, and the mandible.

:func:`paint_head` returns the face's landmarks (:class:`~synthaug.phantom.structures.HeadLandmarks`),
where version 2 paints its head structures.
"""

from __future__ import annotations

import numpy as np

from ..core.labels import ORGAN_IDS
from .bodyplan import BodyPlan, Placement
from .shapes import Vol, ellipsoid
from .structures import HeadLandmarks
from .tables import TISSUE_IDS


def paint_head(vol: Vol, place: Placement, body: BodyPlan, rng: np.random.Generator) -> HeadLandmarks:
    """Scalp, face, skull, brain, glands and mandible, in that order."""
    c = np.array([0.0, body.y_brain, place.zw(body.t_brain)])
    fc = body.face_c.copy()
    fc[2] = place.zw(fc[2])
    _paint_scalp_face_skull(vol, body, c, fc, rng)
    _paint_brain(vol, body, c, rng)
    _paint_glands_and_mandible(vol, place, body, fc, rng)
    return HeadLandmarks((0.0, float(body.face_c[1]), place.zw(body.face_c[2])), tuple(float(q) for q in body.face_semi),
                         body.hs)


def _paint_scalp_face_skull(vol: Vol, body: BodyPlan, c: np.ndarray, fc: np.ndarray, rng: np.random.Generator) -> None:
    """Scalp and face (soft tissue) with the nasal cavity and oral air, then the skull around the
    cerebrospinal fluid; ``c`` is the skull's centre, ``fc`` the face's (world mm)."""
    base = body.brain_base
    sl, r2 = ellipsoid(vol, rng, c, base + 15.0, deform=2.0, corr=60.0)
    if sl is not None:
        vol.paint(sl, r2 < 1, ORGAN_IDS["soft_tissue"], "muscle")
    sl, r2 = ellipsoid(vol, rng, fc, body.face_semi, deform=3.0, corr=50.0)
    if sl is not None:
        vol.paint(sl, (r2 < 1) & (vol.tis[sl] != TISSUE_IDS["muscle"]), ORGAN_IDS["soft_tissue"], "soft_tissue")
        # nasal cavity / oral air
        xs, ys, zs = vol.coords(sl)
        air = (r2 < 0.55) & (np.abs(xs)[:, None, None] < 9 * body.hs) & (ys[None, :, None] > fc[1] + 5) & \
              (np.abs(zs - (fc[2] + 0.2 * body.face_semi[2]))[None, None, :] < 18 * body.hs)
        vol.paint(sl, air, ORGAN_IDS["soft_tissue"], "gas")
    sl, r2 = ellipsoid(vol, rng, c, base + 9.0)
    if sl is not None:
        xs, ys, zs = vol.coords(sl)
        # inner radius^2 of the skull in the same normalisation (base + 2 mm)
        q = [(xs - c[0])[:, None, None], (ys - c[1])[None, :, None], (zs - c[2])[None, None, :]]
        inner = (q[0] / (base[0] + 2)) ** 2 + (q[1] / (base[1] + 2)) ** 2 + (q[2] / (base[2] + 2)) ** 2
        skull = (r2 < 1) & (inner >= 1)
        dipl = skull & (r2 < 0.93) & (inner > 1.07)
        vol.paint(sl, skull, ORGAN_IDS["bone"], "cortical_bone")
        vol.paint(sl, dipl, ORGAN_IDS["bone"], "trabecular_bone")
        vol.paint(sl, inner < 1, ORGAN_IDS["soft_tissue"], "csf")


def _paint_brain(vol: Vol, body: BodyPlan, c: np.ndarray, rng: np.random.Generator) -> None:
    """Cerebrum (grey matter shell, white matter, fissure), cerebellum, deep grey nuclei, ventricles."""
    base, bsemi, hs = body.brain_base, body.brain_semi, body.hs
    bc = c + np.array([0, 0, (base[2] - bsemi[2]) * 0.5])
    sl, r2 = ellipsoid(vol, rng, bc, bsemi, deform=2.5, corr=30.0)
    if sl is not None:
        m = r2 < 1
        xs, ys, zs = vol.coords(sl)
        gm_shell = 0.80**2  # outer shell holds ~half the volume, like grey matter
        fissure = (np.abs(xs - bc[0])[:, None, None] < 1.5) & ((zs - bc[2])[None, None, :] > -5)
        vol.paint(sl, m, ORGAN_IDS["brain"], "brain_wm")
        vol.paint(sl, m & (r2 >= gm_shell), ORGAN_IDS["brain"], "brain_gm")
        vol.paint(sl, m & fissure, ORGAN_IDS["brain"], "csf")
    cb = bc + np.array([0, -0.5 * bsemi[1], -0.55 * bsemi[2]])
    sl, r2 = ellipsoid(vol, rng, cb, np.array([0.7, 0.4, 0.42]) * bsemi, deform=2.0)
    if sl is not None:
        vol.paint(sl, (r2 < 1) & (vol.org[sl] != ORGAN_IDS["bone"]), ORGAN_IDS["brain"], "brain_gm")
    for sign in (1, -1):
        sl, r2 = ellipsoid(vol, rng, bc + np.array([sign * 22 * hs, -5 * hs, -10 * hs]), np.array([11, 20, 12.0]) * hs)
        if sl is not None:
            vol.paint(sl, (r2 < 1) & (vol.org[sl] == ORGAN_IDS["brain"]), None, "brain_gm")
        vs = np.array([6.0, 24.0, 9.0]) * hs * np.array([body.ventricle_scale, 1.0, body.ventricle_scale ** 0.5])
        sl, r2 = ellipsoid(vol, rng, bc + np.array([sign * 9 * hs, 0, 8 * hs]), vs)
        if sl is not None:
            vol.paint(sl, (r2 < 1) & (vol.org[sl] == ORGAN_IDS["brain"]), None, "csf")


def _paint_glands_and_mandible(vol: Vol, place: Placement, body: BodyPlan, fc: np.ndarray,
                               rng: np.random.Generator) -> None:
    """Parotid glands and tonsils (both "gland" in version 1), then the mandible: a U-shaped bone in
    the lower face; ``fc`` is the face's centre (world mm)."""
    hs = body.hs
    for sign in (1, -1):
        pc = np.array([sign * 48 * hs, fc[1] - 38 * hs, fc[2] - 0.1 * body.face_semi[2]])
        sl, r2 = ellipsoid(vol, rng, pc, np.array([11, 17, 22.0]) * hs, deform=1.5)
        if sl is not None:
            vol.paint(sl, (r2 < 1) & (vol.org[sl] == ORGAN_IDS["soft_tissue"]), None, "gland")
        tc = np.array([sign * 13 * hs, fc[1] - 18 * hs, fc[2] - 0.35 * body.face_semi[2]])
        sl, r2 = ellipsoid(vol, rng, tc, np.array([7, 8, 10.0]) * hs)
        if sl is not None:
            vol.paint(sl, (r2 < 1) & (vol.org[sl] == ORGAN_IDS["soft_tissue"]), None, "gland")
    tch = body.t_chin
    zs = place.zrange((tch - 38 * hs) / body.H, (tch - 4) / body.H)
    if zs is None:
        return
    box = vol.box((-70, fc[1] - 60, -1e9), (70, fc[1] + 80, 1e9))
    if box is not None:
        sub = (box[0], box[1], zs)
        xs, ys, _ = vol.coords(sub)
        rr = (xs[:, None] / (50 * hs)) ** 2 + ((ys[None, :] - (fc[1] - 15 * hs)) / (62 * hs)) ** 2
        ring = (rr < 1) & (rr > 0.72) & (ys[None, :] > fc[1] - 30 * hs)
        m = np.broadcast_to(ring[:, :, None], tuple(q.stop - q.start for q in sub)) & (vol.org[sub] != 0)
        vol.paint(sub, m, ORGAN_IDS["bone"], "cortical_bone")
