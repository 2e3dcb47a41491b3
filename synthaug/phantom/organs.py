"""The phantom's organs in the body cavity (heart, aorta, liver, spleen, stomach, kidneys, psoas,
urinary bladder) and its airways.

Where the organs sit follows from the body plan and the placement alone (:func:`organ_landmarks`); the
painters put them into the cavity that :func:`synthaug.phantom.torso.paint_cavity` left, under the
diaphragm where they belong to the abdomen. :func:`paint_organs` returns the landmarks (a small frozen
record) that the lesion chains and version 2's ureters need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.labels import ORGAN_IDS
from .bodyplan import BodyPlan, DiaphragmLandmarks, Placement, SpineLandmarks
from .shapes import Field, Vol, capsule, ellipsoid, rot_y, rot_z, rotation, superellipse_term
from .tables import TISSUE_IDS
from .torso import TorsoLandmarks

#: Depths (fraction of height) of the aortic arch, the aortic root and the aortic bifurcation (L4).
S_ARCH, S_ROOT, S_BIFURCATION = 0.205, 0.262, 0.405


@dataclass(frozen=True)
class AortaLandmarks:
    """The aorta's radius (mm) and the centreline of its descending part (world x, y at depth s)."""

    radius: float
    lean_scale: float
    spine: SpineLandmarks

    def spine_front(self, s) -> float:
        """World y of the vertebral bodies' front at depth s."""
        return float(self.spine.y(s) + self.spine.vert_b(s))

    def x(self, s):
        return -18.0 * self.lean_scale + 10.0 * self.lean_scale * np.clip((np.asarray(s) - 0.30) / 0.1, 0, 1)

    def y(self, s):
        return self.spine_front(s) + self.radius + 2


@dataclass(frozen=True)
class KidneyLandmarks:
    """A kidney's centre, semi-axes and renal-pelvis centre (world mm)."""

    centre: np.ndarray
    semi: np.ndarray
    pelvis: np.ndarray


@dataclass(frozen=True)
class OrganLandmarks:
    """Where the heart, aorta, kidneys (right, left) and urinary bladder sit (world mm); the bladder's
    radius scale ``bladder_scale`` (mm) sets how much its wall deforms."""

    heart_centre: np.ndarray
    aorta: AortaLandmarks
    kidneys: tuple[KidneyLandmarks, KidneyLandmarks]
    bladder_centre: np.ndarray
    bladder_semi: np.ndarray
    bladder_scale: float


def _cavity_at(body: BodyPlan, s: float) -> list[float]:
    """The organ frame's cavity half-axes (a_left, a_right, b_ant, b_post) at one depth."""
    return [float(q[0]) for q in body.cavity(np.array([s]), vat=False)]


def _kidney(body: BodyPlan, place: Placement, spine: SpineLandmarks, i: int) -> KidneyLandmarks:
    """Kidney ``i`` (0: right, 1: left)."""
    sign = 1 - 2 * i
    s_k = 0.365 if sign > 0 else 0.355
    a_k = float(body.cavity(np.array([s_k]), vat=False)[0][0])
    kc = np.array([sign * 0.42 * a_k, float(spine.y(s_k)) + 6.0, place.zw(s_k * body.H)]) + body.organ_jitter[4 + i] * 6.0 * 0.5
    ksemi = np.array([27.0, 23.0, 54.0]) * body.os["kidney"]
    return KidneyLandmarks(centre=kc, semi=ksemi, pelvis=kc - sign * np.array([0.45 * ksemi[0], -0.1 * ksemi[1], 0.0]))


def organ_landmarks(body: BodyPlan, place: Placement, spine: SpineLandmarks) -> OrganLandmarks:
    """Heart in the anterior chest, the aorta in front of the spine, kidneys beside it at L1-L2, the
    bladder above the pubic symphysis."""
    a27, _, ba27, _ = _cavity_at(body, 0.27)
    hc = np.array([-0.18 * a27, 0.3 * ba27, place.zw(0.268 * body.H)]) + (body.organ_jitter * 6.0)[0]
    rb = (body.bladder_ml * 1000 * 3 / (4 * np.pi * 1.15 * 0.95 * 0.9)) ** (1 / 3)
    bsemi = np.array([1.15, 0.95, 0.9]) * rb
    ba48 = float(body.cavity(np.array([0.47]), vat=False)[2][0])
    return OrganLandmarks(heart_centre=hc, aorta=AortaLandmarks(radius=body.aorta_r, lean_scale=body.k, spine=spine),
                          kidneys=(_kidney(body, place, spine, 0), _kidney(body, place, spine, 1)),
                          bladder_centre=np.array([0.0, 0.25 * ba48, place.zw(0.495 * body.H - 0.75 * bsemi[2])]),
                          bladder_semi=bsemi, bladder_scale=rb)


def psoas_radius(body: BodyPlan, s):
    """Radius (mm) of each psoas muscle at depth s."""
    return np.interp(s, [0.36, 0.41, 0.45, 0.48], [8, 22, 22, 15]) * body.k * body.muscle_f


def paint_organs(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks, spine: SpineLandmarks,
                 diaphragm: DiaphragmLandmarks, rng: np.random.Generator) -> OrganLandmarks:
    """Heart, aorta, liver, spleen, stomach, kidneys, psoas and bladder, in that order."""
    lm = organ_landmarks(body, place, spine)
    _paint_heart(vol, body, lm, rng)
    _paint_aorta(vol, place, body, lm)
    _paint_upper_abdomen(vol, place, body, diaphragm, rng)
    for i, kidney in enumerate(lm.kidneys):
        _paint_kidney(vol, kidney, 1 - 2 * i, rng)
    _paint_psoas(vol, place, body, torso, spine)
    sl, r2 = ellipsoid(vol, rng, lm.bladder_centre, lm.bladder_semi, deform=0.06 * lm.bladder_scale)
    if sl is not None:
        vol.paint(sl, (r2 < 1) & (vol.org[sl] != 0), ORGAN_IDS["urinary_bladder"], "bladder_urine")
    return lm


def _paint_heart(vol: Vol, body: BodyPlan, lm: OrganLandmarks, rng: np.random.Generator) -> None:
    """Myocardium shell around the blood pool, epicardial fat that grows with BMI."""
    hsemi = np.array([62.0, 47.0, 50.0]) * body.os["heart"]
    rot = rotation(body.heart_axis, (0, 0, 1))
    sl, r2 = ellipsoid(vol, rng, lm.heart_centre, hsemi, rot, deform=4.0, corr=40.0)
    if sl is not None:
        m = (r2 < 1) & (vol.org[sl] != 0)
        vol.paint(sl, m, ORGAN_IDS["heart"], "myocardium")
        vol.paint(sl, m & (r2 < 0.62), ORGAN_IDS["heart"], "blood")
        shell = (r2 >= 1) & (r2 < (1 + (2 + 0.3 * max(body.bmi - 20, 0)) / 50.0) ** 2) & (vol.tis[sl] == TISSUE_IDS["soft_tissue"])
        vol.paint(sl, shell, ORGAN_IDS["body_fat"], "fat")


def _paint_aorta(vol: Vol, place: Placement, body: BodyPlan, lm: OrganLandmarks) -> None:
    """Ascending (from the heart), arch (half torus), descending to the bifurcation at L4."""
    aorta, H = lm.aorta, body.H
    r = aorta.radius
    xa, ya = 18.0 * aorta.lean_scale, lm.heart_centre[1] + 12.0
    sl, d2 = capsule(vol, (xa, ya, place.zw(S_ROOT * H)), (xa, ya, place.zw(S_ARCH * H)), r)
    if sl is not None:
        vol.paint(sl, (d2 < 1) & (vol.org[sl] != 0), ORGAN_IDS["aorta"], "blood")
    p0 = np.array([xa, ya, place.zw(S_ARCH * H)])
    p1 = np.array([float(aorta.x(S_ARCH)), aorta.y(S_ARCH), place.zw(S_ARCH * H)])
    cen = 0.5 * (p0 + p1)
    R = 0.5 * float(np.linalg.norm(p1 - p0))
    e1 = (p1 - p0) / (2 * R)
    e2 = np.array([0, 0, 1.0])
    n = np.cross(e1, e2)
    sl = vol.box(cen - R - r - 2, cen + R + r + 2)
    if sl is not None:
        xs, ys, zs = vol.coords(sl)
        q = [(xs - cen[0])[:, None, None], (ys - cen[1])[None, :, None], (zs - cen[2])[None, None, :]]
        uu = q[0] * e1[0] + q[1] * e1[1] + q[2] * e1[2]
        vv = q[0] * e2[0] + q[1] * e2[1] + q[2] * e2[2]
        ww = q[0] * n[0] + q[1] * n[1] + q[2] * n[2]
        dd = (np.sqrt(uu**2 + vv**2) - R) ** 2 + ww**2
        m = (dd < r**2) & (vv >= -1.0) & (vol.org[sl] != 0)
        vol.paint(sl, m, ORGAN_IDS["aorta"], "blood")
    zs = place.zrange(S_ARCH, S_BIFURCATION)
    if zs is None:
        return
    ss = place.s[zs]
    cx = aorta.x(ss)
    cy = np.array([aorta.spine_front(q) for q in ss]) + r + 2
    rr = r * (1 - 0.15 * np.clip((ss - S_ARCH) / (S_BIFURCATION - S_ARCH), 0, 1))
    box = vol.box((-120, -150, -1e9), (80, 150, 1e9))
    if box is not None:
        sub = (box[0], box[1], zs)
        xs, ys, _ = vol.coords(sub)
        m = (((xs[:, None] - cx[None, :]) / rr)[:, None, :] ** 2
             + ((ys[:, None] - cy[None, :]) / rr)[None, :, :] ** 2) < 1
        vol.paint(sub, m & (vol.org[sub] != 0), ORGAN_IDS["aorta"], "blood")


def _below_diaphragm(vol: Vol, place: Placement, diaphragm: DiaphragmLandmarks, sl, margin: float = 2.0) -> np.ndarray:
    xs, ys, zs = vol.coords(sl)
    tdd = diaphragm.depth(xs[:, None], ys[None, :])
    return (place.zw(0) - zs)[None, None, :] > tdd[:, :, None] + margin


def _paint_upper_abdomen(vol: Vol, place: Placement, body: BodyPlan, diaphragm: DiaphragmLandmarks,
                         rng: np.random.Generator) -> None:
    """Liver (tapered, deformed ellipsoid under the right dome), spleen (posterolateral left, under the
    left dome) and stomach (gas cap anteriorly), in the abdominal cavity below the diaphragm."""
    H, j = body.H, body.organ_jitter * 6.0

    def free(sl):
        return (vol.tis[sl] == TISSUE_IDS["bowel"]) & _below_diaphragm(vol, place, diaphragm, sl)

    a33, _, ba33, _ = _cavity_at(body, 0.33)
    lc = np.array([0.36 * a33, 0.05 * ba33, place.zw(diaphragm.t_right + 0.062 * H)]) + j[1]
    lsemi = np.array([88.0, 74.0, 116.0]) * body.os["liver"]  # ~1.4 l at BSA 1.96 m^2 (Urata 1995)
    field = Field(rng, lc - lsemi.max() * 1.2, lc + lsemi.max() * 1.2, 45.0, ncomp=3)
    sl = vol.box(lc - lsemi * 1.15, lc + lsemi * 1.15)
    if sl is not None:
        xs, ys, zs = vol.coords(sl)
        dx = (xs - lc[0])[:, None, None] + 7.0 * field(xs, ys, zs, comp=0)
        dy = (ys - lc[1])[None, :, None] + 7.0 * field(xs, ys, zs, comp=1)
        dz = (zs - lc[2])[None, None, :] + 7.0 * field(xs, ys, zs, comp=2)
        u = dx / lsemi[0]
        taper = np.clip(0.35 + 0.65 * (u + 1) / 1.6, 0.3, 1.0)
        dy = dy - 0.25 * lsemi[1] * np.clip(-u, 0, 1)  # left lobe lies anterior
        r2 = u**2 + (dy / (lsemi[1] * taper)) ** 2 + (dz / (lsemi[2] * taper)) ** 2
        vol.paint(sl, (r2 < 1) & free(sl), ORGAN_IDS["liver"], "liver")

    a32, _, ba32, bp32 = _cavity_at(body, 0.32)
    spc = np.array([-0.72 * a32, -0.45 * bp32, place.zw(diaphragm.t_left + 0.035 * H)]) + j[2] * 0.6
    sl, r2 = ellipsoid(vol, rng, spc, np.array([24.0, 50.0, 52.0]) * body.os["spleen"], rot_z(35.0), deform=5.0)
    if sl is not None:
        vol.paint(sl, (r2 < 1) & free(sl), ORGAN_IDS["spleen"], "spleen")

    stc = np.array([-0.33 * a32, 0.35 * ba32, place.zw(diaphragm.t_left + 0.05 * H)]) + j[3]
    ssemi = np.array([42.0, 38.0, 62.0]) * body.os["stomach"]
    sl, r2 = ellipsoid(vol, rng, stc, ssemi, rot_y(25.0), deform=6.0)
    if sl is not None:
        m = (r2 < 1) & free(sl)
        ys = vol.coords(sl)[1]
        gas = m & (ys[None, :, None] > stc[1] + 0.55 * ssemi[1])
        vol.paint(sl, m & ~gas, ORGAN_IDS["soft_tissue"], "bowel")
        vol.paint(sl, gas, ORGAN_IDS["soft_tissue"], "gas")


def _paint_kidney(vol: Vol, kidney: KidneyLandmarks, sign: int, rng: np.random.Generator) -> None:
    """A kidney (sign +1: right, -1: left) with its renal pelvis (urine)."""
    rot = rot_y(sign * 15.0) @ rot_z(-sign * 25.0)
    sl, r2 = ellipsoid(vol, rng, kidney.centre, kidney.semi, rot, deform=3.0)
    if sl is None:
        return
    m = (r2 < 1) & (vol.org[sl] != 0)
    vol.paint(sl, m, ORGAN_IDS["kidneys"], "kidney")
    sl2, r2p = ellipsoid(vol, rng, kidney.pelvis, kidney.semi * np.array([0.35, 0.38, 0.42]), rot)
    if sl2 is not None:
        vol.paint(sl2, (r2p < 1) & (vol.org[sl2] == ORGAN_IDS["kidneys"]), None, "renal_pelvis")


def _paint_psoas(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks, spine: SpineLandmarks) -> None:
    """The psoas muscles beside the lumbar spine."""
    zs = place.zrange(0.36, 0.48)
    if zs is None:
        return
    ss = place.s[zs]
    rp = psoas_radius(body, ss)
    yp = spine.y(ss) + 4
    for sign in (1, -1):
        xp = sign * (spine.vert_a(ss) + rp + 2)
        m = (superellipse_term(torso.xw[:, zs], xp, rp, rp, 2)[:, None, :] + superellipse_term(torso.yw[:, zs], yp, rp, rp, 2)[None, :, :]) < 1
        sl = (slice(None), slice(None), zs)
        vol.paint(sl, m & (vol.tis[sl] == TISSUE_IDS["bowel"]), ORGAN_IDS["soft_tissue"], "muscle")


def paint_airways(vol: Vol, place: Placement, body: BodyPlan, spine: SpineLandmarks) -> None:
    """Trachea (larynx to carina, in front of the spine) and the main bronchi, as air."""
    H = body.H
    s_car = 0.235
    t_lar = body.t_chin + 5.0
    rt = 8.0 * body.k_bone

    def y_t(s_):
        return float(spine.y(s_) + spine.vert_b(s_) + 18.0 * body.k)

    s_lar = t_lar / H
    pts = [(0.0, y_t(s_lar), place.zw(t_lar)), (0.0, y_t(0.17), place.zw(0.17 * H)), (0.0, y_t(s_car), place.zw(s_car * H))]
    for p0, p1 in zip(pts[:-1], pts[1:]):
        sl, d2 = capsule(vol, p0, p1, rt)
        if sl is not None:
            vol.paint(sl, (d2 < 1) & (vol.org[sl] != 0), ORGAN_IDS["lungs"], "gas")
    for sign in (1, -1):
        p1 = (sign * 45.0 * body.k, y_t(s_car) - 6, place.zw(s_car * H + 35 * body.k_len))
        sl, d2 = capsule(vol, pts[-1], p1, 0.75 * rt)
        if sl is not None:
            vol.paint(sl, (d2 < 1) & (vol.org[sl] != 0), ORGAN_IDS["lungs"], "gas")
