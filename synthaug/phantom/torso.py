"""The phantom's outline and body cavity: trunk, neck, thighs and breasts as lean tissue inside
subcutaneous fat; the cavity split by the diaphragm into thorax (lungs, mediastinum) and abdomen; the
visceral fat and bowel gas that fill what the organs leave of the abdomen.

Each part paints into the volume and returns the small frozen landmark record that later parts need
(:class:`TorsoLandmarks`, :class:`CavityLandmarks`); :func:`synthaug.phantom.body.make_phantom` passes
them on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.labels import ORGAN_IDS
from .bodyplan import TRUNK_P, TRUNK_S, BodyPlan, DiaphragmLandmarks, Placement, SpineLandmarks
from .shapes import Field, Vol, ellipsoid, superellipse_term
from .tables import TISSUE_IDS


def norm_ppf(p: float) -> float:
    """Standard normal quantile."""
    from scipy.special import ndtri

    return float(ndtri(float(np.clip(p, 1e-6, 1 - 1e-6))))


# --- outline ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorsoLandmarks:
    """The painted outline: its smooth in-plane warp (warped world x per column and slice, warped y per
    row and slice, mm), which the cavity, psoas and ribs follow too; the subcutaneous fat (a mask of
    the volume, where subcutaneous lesions go); the hip joints' |x| and depth below the vertex (mm)."""

    xw: np.ndarray
    yw: np.ndarray
    sat_mask: np.ndarray
    x_hip: float
    t_hip: float


def paint_torso(vol: Vol, place: Placement, body: BodyPlan, rng: np.random.Generator) -> TorsoLandmarks:
    """Trunk, neck and thighs (lean tissue inside subcutaneous fat) and, for women, the breasts."""
    lo, hi = (-300.0, place.zw(body.s_end * body.H) - 50), (300.0, place.z_vertex + 50)
    # Low-frequency in-plane warps x' = x + u(x, z), y' = y + v(y, z).
    fx = Field(rng, lo, hi, 80.0)
    fy = Field(rng, lo, hi, 80.0)
    torso = TorsoLandmarks(xw=(vol.x[:, None] + 5.0 * fx(vol.x, vol.z)).astype(np.float32),
                           yw=(vol.y[:, None] + 5.0 * fy(vol.y, vol.z)).astype(np.float32),
                           sat_mask=np.zeros(vol.shape, bool),
                           x_hip=(88.0 if body.male else 91.0) * body.k_bone, t_hip=0.478 * body.H)
    _paint_trunk(vol, place, body, torso)
    _paint_neck(vol, place, body, torso)
    _paint_thighs(vol, place, body, torso)
    if body.breast_ml > 0:
        _paint_breasts(vol, place, body, torso, rng)
    return torso


def _paint_trunk(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks) -> None:
    zs = place.zrange(*TRUNK_S)
    if zs is None:
        return
    ss = place.s[zs]
    al, ar, ba, bp = body.trunk_lean(ss)
    sl_, sa_, sp_ = body.sat(ss)
    ok = ((place.s >= 0) & (place.s <= body.s_end))[zs]
    al, ar, ba, bp = (q * ok for q in (al, ar, ba, bp))
    xw, yw = torso.xw[:, zs], torso.yw[:, zs]
    outer = (superellipse_term(xw, 0, al + sl_ * ok, ar + sl_ * ok, TRUNK_P)[:, None, :]
             + superellipse_term(yw, 0, bp + sp_ * ok, ba + sa_ * ok, TRUNK_P)[None, :, :]) < 1
    lean = (superellipse_term(xw, 0, al, ar, TRUNK_P)[:, None, :] + superellipse_term(yw, 0, bp, ba, TRUNK_P)[None, :, :]) < 1
    sl = (slice(None), slice(None), zs)
    vol.paint(sl, outer, ORGAN_IDS["body_fat"], "fat")
    vol.paint(sl, lean, ORGAN_IDS["soft_tissue"], "muscle")
    torso.sat_mask[sl] |= outer & ~lean


def _paint_neck(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks) -> None:
    na, nb = body.neck()
    tn = 0.45 * body.t0
    yn = -18.0 * body.hs
    zs = place.zrange((body.t_chin - 45) / body.H, 0.175)
    if zs is None:
        return
    xw, yw = torso.xw[:, zs], torso.yw[:, zs]
    sl = (slice(None), slice(None), zs)
    outer = (superellipse_term(xw, 0, na + tn, na + tn, 2.2)[:, None, :] + superellipse_term(yw, yn, nb + tn, nb + tn, 2.2)[None, :, :]) < 1
    lean = (superellipse_term(xw, 0, na, na, 2.2)[:, None, :] + superellipse_term(yw, yn, nb, nb, 2.2)[None, :, :]) < 1
    add_fat = outer & (vol.org[sl] == 0)
    vol.paint(sl, add_fat, ORGAN_IDS["body_fat"], "fat")
    torso.sat_mask[sl] |= add_fat
    vol.paint(sl, lean, ORGAN_IDS["soft_tissue"], "muscle")
    torso.sat_mask[sl] &= ~lean


def _paint_thighs(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks) -> None:
    zs = place.zrange(0.46, body.s_end)
    if zs is None:
        return
    ta, tb = body.thigh(place.s[zs])
    tt = body.sat_w["thigh"] * body.t0
    xc = torso.x_hip + 10.0 * body.k
    yc = -12.0 * body.k
    xw, yw = torso.xw[:, zs], torso.yw[:, zs]
    sl = (slice(None), slice(None), zs)
    for sign in (1, -1):
        ty_o = superellipse_term(yw, yc, tb + tt, tb + tt, 2.1)
        ty_l = superellipse_term(yw, yc, tb, tb, 2.1)
        outer = (superellipse_term(xw, sign * xc, ta + tt, ta + tt, 2.1)[:, None, :] + ty_o[None, :, :]) < 1
        lean = (superellipse_term(xw, sign * xc, ta, ta, 2.1)[:, None, :] + ty_l[None, :, :]) < 1
        add_fat = outer & (vol.org[sl] == 0)
        vol.paint(sl, add_fat, ORGAN_IDS["body_fat"], "fat")
        torso.sat_mask[sl] |= add_fat
        newl = lean & (vol.tis[sl] != TISSUE_IDS["muscle"])
        vol.paint(sl, newl, ORGAN_IDS["soft_tissue"], "muscle")
        torso.sat_mask[sl] &= ~lean


def _paint_breasts(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks, rng: np.random.Generator) -> None:
    """Fat with glandular tissue, on the anterior chest."""
    r = (body.breast_ml * 1000.0 * 3 / (4 * np.pi * 1.1 * 0.8)) ** (1 / 3)
    s_b = 0.262
    al, ar, ba, bp = body.trunk_lean(np.array([s_b]))
    _, sa_, _ = body.sat(np.array([s_b]))
    gfield = Field(rng, (-250, -50, place.zw(0.32 * body.H)), (250, 300, place.zw(0.2 * body.H)), 14.0)
    for sign in (1, -1):
        c = (sign * 0.5 * float(al[0]), float(ba[0] + sa_[0]) + 0.15 * r, place.zw(s_b * body.H))
        sl, r2 = ellipsoid(vol, rng, c, (1.1 * r, 0.8 * r, 1.0 * r), deform=0.08 * r)
        if sl is None:
            continue
        m = (r2 < 1) & (vol.org[sl] != ORGAN_IDS["soft_tissue"])
        vol.paint(sl, m & (vol.org[sl] == 0), ORGAN_IDS["body_fat"], "fat")
        g = gfield(*vol.coords(sl)) > norm_ppf(1 - body.gland_frac)
        gl = m & g & (r2 < 0.7)
        vol.paint(sl, gl, ORGAN_IDS["soft_tissue"], "soft_tissue")
        torso.sat_mask[sl] |= m & ~gl


# --- cavity ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CavityLandmarks:
    """The slices the body cavity spans and the smooth random field (3 components: visceral fat,
    mediastinal fat, bowel gas) its fat and gas follow."""

    zs: slice
    fat_field: Field


def paint_cavity(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks, spine: SpineLandmarks,
                 diaphragm: DiaphragmLandmarks, rng: np.random.Generator) -> CavityLandmarks | None:
    """The body cavity: thorax above the diaphragm (lungs beside the mediastinum, its fat), abdomen
    below (bowel until the organs and the visceral fat take it), the paraspinal muscles behind it.
    None where the field of view misses the trunk."""
    zs = place.zrange(0.16, 0.52)
    if zs is None:
        return None
    cal, car, cba, cbp = body.cavity(place.s[zs])
    xw, yw = torso.xw[:, zs], torso.yw[:, zs]
    sl = (slice(None), slice(None), zs)
    cav = (superellipse_term(xw, 0, cal, car, TRUNK_P)[:, None, :] + superellipse_term(yw, 0, cbp, cba, TRUNK_P)[None, :, :]) < 1
    td = diaphragm.depth(vol.x[:, None].astype(np.float32), vol.y[None, :].astype(np.float32))
    above = place.t[zs][None, None, :] < td[:, :, None]
    thorax = cav & above
    vol.paint(sl, thorax, ORGAN_IDS["soft_tissue"], "soft_tissue")
    vol.paint(sl, cav & ~above, ORGAN_IDS["soft_tissue"], "bowel")
    _paint_paraspinal(vol, place, body, torso, spine)
    mediastinum = _paint_lungs(vol, place, body, torso, spine, zs, thorax, front=cba)
    fat_field = Field(rng, (-300, -250, place.zw(0.56 * body.H)), (300, 300, place.zw(0.15 * body.H)), 22.0, ncomp=3)
    box = vol.box((-150, -150, vol.z[zs][0]), (150, 200, vol.z[zs][-1]))
    if box is not None:
        sub = (box[0], box[1], zs)
        fat = fat_field(*vol.coords(sub), comp=1) < norm_ppf(body.med_fat)
        medm = mediastinum[box[0], box[1], :] & (vol.tis[sub] == TISSUE_IDS["soft_tissue"])
        vol.paint(sub, medm & fat, ORGAN_IDS["body_fat"], "fat")
    return CavityLandmarks(zs=zs, fat_field=fat_field)


def _paint_paraspinal(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks, spine: SpineLandmarks) -> None:
    """The paraspinal muscle block (carves the cavity behind the vertebral bodies)."""
    zs = place.zrange(0.15, 0.45)
    if zs is None:
        return
    s = place.s[zs]
    ysp = spine.y(s)
    vb = spine.vert_b(s)
    pa = np.interp(s, [0.15, 0.30, 0.40, 0.45], [40, 42, 55, 55]) * body.k * body.muscle_f
    pc = ysp - vb - 28 * body.k
    m = (superellipse_term(torso.xw[:, zs], spine.x(s), pa, pa, 2.2)[:, None, :]
         + superellipse_term(torso.yw[:, zs], pc, 35 * body.k, 35 * body.k + vb + 5, 2.2)[None, :, :]) < 1
    sl = (slice(None), slice(None), zs)
    inside = vol.org[sl] > 0
    vol.paint(sl, m & inside & ~torso.sat_mask[sl], ORGAN_IDS["soft_tissue"], "muscle")


def _paint_lungs(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks, spine: SpineLandmarks,
                 zs: slice, thorax: np.ndarray, front: np.ndarray) -> np.ndarray:
    """The lungs, lateral to the mediastinum (a column between the spine and the sternum, whose
    front is ``front`` per slice); returns the mediastinum within the thorax (over the slices ``zs``)."""
    ss = place.s[zs]
    xw, yw = torso.xw[:, zs], torso.yw[:, zs]
    sl = (slice(None), slice(None), zs)
    ysp = spine.y(ss)
    yc = 0.5 * (ysp + front)
    bm = 0.5 * (front - ysp) + 8
    am = np.interp(ss, [0.16, 0.20, 0.25, 0.30], [16, 20, 26, 26]) * body.k
    med = (superellipse_term(xw, spine.x(ss), am, am, 4.0)[:, None, :] + superellipse_term(yw, yc, bm, bm, 4.0)[None, :, :]) < 1
    lungs = thorax & ~med & (vol.tis[sl] == TISSUE_IDS["soft_tissue"])
    vol.paint(sl, lungs, ORGAN_IDS["lungs"], "lung")
    return med & thorax


def paint_visceral(vol: Vol, body: BodyPlan, cavity: CavityLandmarks | None) -> None:
    """Visceral fat (the body plan's volume, anterior and around the kidneys first) and bowel gas in
    what the organs left of the abdomen."""
    if cavity is None:
        return
    box = vol.box((-260, -250, -1e9), (260, 300, 1e9))
    if box is None:
        return
    sub = (box[0], box[1], cavity.zs)
    free = vol.tis[sub] == TISSUE_IDS["bowel"]
    free &= vol.org[sub] == ORGAN_IDS["soft_tissue"]
    n_free = int(free.sum())
    if n_free == 0:
        return
    vox_ml = float(np.prod(vol.spacing)) / 1000.0
    frac = float(np.clip(body.vat_l * 1000.0 / (n_free * vox_ml), 0.0, 0.92))
    xs, ys, zz = vol.coords(sub)
    f0 = cavity.fat_field(xs, ys, zz, comp=0)
    # VAT gathers anteriorly (omentum) and around the kidneys; bias the field.
    f0 = f0 - 0.6 * np.clip((ys[None, :, None] - 0.0) / 80.0, -1, 1)
    vals = f0[free]
    if frac > 0:
        thr = np.partition(vals, min(int(frac * vals.size), vals.size - 1))[min(int(frac * vals.size), vals.size - 1)]
        fat = free & (f0 < thr)
        vol.paint(sub, fat, ORGAN_IDS["body_fat"], "fat")
        free &= ~fat
    g = cavity.fat_field(xs, ys, zz, comp=2)
    gas = free & (g > norm_ppf(1 - body.gas_frac))
    vol.paint(sub, gas, None, "gas")
