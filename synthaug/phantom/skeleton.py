"""The phantom's skeleton below the skull: vertebrae C1-L5 (bodies, discs, canal with the cord,
posterior elements), ribs and sternum (costal cartilage anteriorly), clavicles and scapulae, the
pelvis (iliac wings, sacrum, acetabula, pubic and ischial rami) and the femurs.

Bone is painted only inside the body; trabecular bone and marrow carry the marrow's uptake. The skull
belongs to :mod:`synthaug.phantom.head`.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.labels import ORGAN_IDS
from .bodyplan import TRUNK_P, BodyPlan, Placement, SpineLandmarks
from .shapes import Vol, capsule, ellipsoid, rot_z, superellipse_term
from .tables import TISSUE_IDS
from .torso import TorsoLandmarks

BONE = ORGAN_IDS["bone"]


def vertebral_bounds(body: BodyPlan) -> np.ndarray:
    """Depths below the vertex (mm) of the 25 boundaries of the 24 vertebrae C1..C7, T1..T12, L1..L5."""
    H = body.H
    t_c1 = max(0.075 * H, body.t_brain + 0.95 * body.brain_base[2])
    cerv = np.linspace(t_c1, 0.15 * H, 8)
    h = 0.285 * H / 18.5
    tl = 0.15 * H + np.concatenate([np.arange(13) * h, 12 * h + np.arange(1, 6) * 1.3 * h])
    return np.concatenate([cerv, tl[1:]])


def paint_skeleton(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks, spine: SpineLandmarks,
                   rng: np.random.Generator) -> None:
    """Vertebrae, ribs and sternum, shoulder girdle, pelvis and femurs, in that order."""
    bounds = vertebral_bounds(body)
    _paint_vertebrae(vol, place, body, spine, bounds)
    _paint_ribs(vol, place, body, torso)
    _paint_shoulder_girdle(vol, place, body, rng)
    _paint_iliac_wings(vol, place, body, torso, spine)
    _paint_sacrum(vol, place, body, spine, t_s1=float(bounds[-1]))
    for sign in (1, -1):
        _paint_hip(vol, place, body, torso, spine, sign, rng)


def _paint_vertebrae(vol: Vol, place: Placement, body: BodyPlan, spine: SpineLandmarks, bounds: np.ndarray) -> None:
    """Bodies (trabecular with a cortical rim) and discs; canal with the cord, lamina ring, spinous and
    transverse processes over the upper 70 % of each level."""
    zs = place.zrange(bounds[0] / body.H, bounds[-1] / body.H)
    if zs is None:
        return
    tt = place.t[zs]
    ss = place.s[zs]
    lev = np.clip(np.searchsorted(bounds, tt) - 1, 0, 23)
    frac = (tt - bounds[lev]) / (bounds[lev + 1] - bounds[lev])
    disc = np.where(lev < 7, 0.22, np.where(lev < 19, 0.18, 0.2))
    is_disc = (frac < disc) & (lev > 0)
    va, vb = spine.vert_a(ss), spine.vert_b(ss)
    cx, cy = spine.x(ss), spine.y(ss)
    box = vol.box((-140, -250, -1e9), (140, 150, 1e9))
    if box is None:
        return
    sub = (box[0], box[1], zs)
    xs, ys, _ = vol.coords(sub)
    tx = ((xs[:, None] - cx) / va) ** 2
    ty = ((ys[:, None] - cy) / vb) ** 2
    rho = tx[:, None, :] + ty[None, :, :]
    body_m = rho < 1
    inside = vol.org[sub] != 0
    vol.paint(sub, body_m & inside & ~is_disc[None, None, :], BONE, "trabecular_bone")
    vol.paint(sub, body_m & inside & ~is_disc[None, None, :] & (rho > 0.86), BONE, "cortical_bone")
    vol.paint(sub, body_m & inside & is_disc[None, None, :], ORGAN_IDS["soft_tissue"], "cartilage")
    k, kb = body.k, body.k_bone
    rc = np.where(lev < 7, 9.0, np.where(lev < 19, 7.5, 9.0)) * kb
    ccy = cy - vb - rc - 1.0
    dxc = xs[:, None] - cx
    dyc = ys[:, None] - ccy
    rr = np.sqrt(dxc[:, None, :] ** 2 + dyc[None, :, :] ** 2)
    post = ((frac > disc) & (frac < 0.85))[None, None, :]
    ring = (rr >= rc) & (rr < rc + 5.0 * kb) & (dyc[None, :, :] < 2.0)
    spin_len = np.where(lev < 7, 20.0, np.where(lev < 19, 28.0, 26.0)) * k
    spin = (np.abs(dxc)[:, None, :] < 3.0 * kb) & (dyc[None, :, :] < -rc) & \
           (dyc[None, :, :] > -rc - spin_len)
    trans_w = np.where(lev < 7, 22.0, np.where(lev < 19, 28.0, 38.0)) * kb
    trans = (np.abs(dyc[None, :, :] - 0.0) < 5.0 * kb) & (np.abs(dxc)[:, None, :] < trans_w)
    pm = (ring | spin | trans) & post & inside
    vol.paint(sub, pm & (vol.org[sub] != ORGAN_IDS["lungs"]), BONE, "trabecular_bone")
    vol.paint(sub, (rr < rc) & inside, ORGAN_IDS["soft_tissue"], "spinal_cord")


def _paint_ribs(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks) -> None:
    """Ribs and sternum: a shell just outside the body cavity, the ribs dropping anteriorly and ending
    in costal cartilage."""
    zs = place.zrange(0.155, 0.42)
    if zs is None:
        return
    H = body.H
    tt = place.t[zs]
    cal, car, cba, cbp = body.cavity(place.s[zs])
    rib_top = 0.15 * H
    h = 0.285 * H / 18.5
    L = np.maximum(0.5 * (cal + cba), 1.0)
    o1 = 1.0 + 1.5 / L
    o2 = 1.0 + 9.0 / L
    box = vol.box((-260, -250, -1e9), (260, 250, 1e9))
    if box is None:
        return
    sub = (box[0], box[1], zs)
    tx1 = superellipse_term(torso.xw[box[0], zs], 0, cal * o1, car * o1, TRUNK_P)
    ty1 = superellipse_term(torso.yw[box[1], zs], 0, cbp * o1, cba * o1, TRUNK_P)
    tx2 = superellipse_term(torso.xw[box[0], zs], 0, cal * o2, car * o2, TRUNK_P)
    ty2 = superellipse_term(torso.yw[box[1], zs], 0, cbp * o2, cba * o2, TRUNK_P)
    shell = ((tx2[:, None, :] + ty2[None, :, :]) < 1) & ((tx1[:, None, :] + ty1[None, :, :]) >= 1)
    shell &= vol.org[sub] != 0
    ii, jj, kk = np.nonzero(shell)
    xs, ys, _ = vol.coords(sub)
    X, Y = xs[ii], ys[jj]
    theta = np.abs(np.arctan2(X, Y - 0.0))  # 0 anterior, pi posterior
    drop = 62.0 * body.k_len
    tsh = tt[kk] - drop * (1 - theta / np.pi)
    f = (tsh - rib_top) / h - 0.5
    kr = np.rint(f)
    in_rib = (np.abs(f - kr) < 0.21) & (kr >= 0) & (kr <= 11)
    kr = kr.astype(int)
    tmin = np.where(kr < 7, 0.28, np.where(kr < 10, 0.55, 1.5))
    cart = np.where(kr < 7, 0.10, np.where(kr < 10, 0.3, 9.9))
    is_bone = in_rib & (theta >= tmin)
    is_cart = in_rib & (theta >= cart) & (theta < tmin)
    sx = (np.abs(X) < 15.0 * body.k_bone) & (Y > 0) & (tt[kk] > 0.172 * H) & (tt[kk] < 0.30 * H)
    o = vol.org[sub]
    tis = vol.tis[sub]
    sel = is_bone | sx
    o[ii[sel], jj[sel], kk[sel]] = BONE
    # thin, marrow-filled: at 3-4 mm voxels ribs read ~150-300 HU like trabecular bone
    tis[ii[is_bone], jj[is_bone], kk[is_bone]] = TISSUE_IDS["trabecular_bone"]
    tis[ii[sx], jj[sx], kk[sx]] = TISSUE_IDS["trabecular_bone"]
    sel = is_cart & ~sx
    o[ii[sel], jj[sel], kk[sel]] = ORGAN_IDS["soft_tissue"]
    tis[ii[sel], jj[sel], kk[sel]] = TISSUE_IDS["cartilage"]


def _paint_shoulder_girdle(vol: Vol, place: Placement, body: BodyPlan, rng: np.random.Generator) -> None:
    """Clavicles and scapulae."""
    H = body.H
    ca = body.trunk_lean(np.array([0.18]))
    cb_ = body.cavity(np.array([0.22]))
    for sign in (1, -1):
        p0 = (sign * 22.0 * body.k, float(ca[2][0]) * 0.8, place.zw(0.172 * H))
        p1 = (sign * (float(ca[0][0]) - 25.0), -5.0, place.zw(0.168 * H))
        sl, d2 = capsule(vol, p0, p1, 7.0 * body.k_bone)
        if sl is not None:
            vol.paint(sl, (d2 < 1) & (vol.org[sl] != 0), BONE, "cortical_bone")
            vol.paint(sl, (d2 < 0.45) & (vol.org[sl] == BONE), BONE, "trabecular_bone")
        sc = np.array([sign * 0.6 * float(cb_[0][0]), -float(cb_[3][0]) - 14.0 * body.k, place.zw(0.225 * H)])
        sl, r2 = ellipsoid(vol, rng, sc, np.array([48.0, 5.0, 72.0]) * body.k_bone, rot_z(sign * 28.0))
        if sl is not None:
            vol.paint(sl, (r2 < 1) & (vol.org[sl] != 0) & (vol.org[sl] != ORGAN_IDS["lungs"]), BONE, "trabecular_bone")


def _hip_centre_y(body: BodyPlan, spine: SpineLandmarks) -> tuple[float, float]:
    """World y of the pelvis's centre and of the hip joints."""
    y_pel = float(spine.y(0.42)) + 35.0 * body.k
    return y_pel, y_pel - 5.0


def _paint_iliac_wings(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks, spine: SpineLandmarks) -> None:
    """The iliac wings: an elliptic shell with an angular extent, from the crest down to the hips."""
    H = body.H
    t_crest, t_hip = 0.405 * H, torso.t_hip
    y_pel, y_h = _hip_centre_y(body, spine)
    x_h = torso.x_hip
    zs = place.zrange(t_crest / H, (t_hip - 10) / H)
    if zs is None:
        return
    tt = place.t[zs]
    f = np.clip((tt - t_crest) / (t_hip - 10 - t_crest), 0, 1)
    a_il = (138.0 if not body.male else 132.0) * body.k_bone * (1 - f) + (x_h + 22) * f
    b_il = 78.0 * body.k_bone * (1 - f) + 58.0 * body.k_bone * f
    th_h = math.atan2(x_h, y_h - y_pel)
    th_lo = 1.0 * (1 - f) + (th_h - 0.35) * f
    th_hi = 2.75 * (1 - f) + (th_h + 0.35) * f
    box = vol.box((-220, y_pel - 130, -1e9), (220, y_pel + 130, 1e9))
    if box is None:
        return
    sub = (box[0], box[1], zs)
    xs, ys, _ = vol.coords(sub)
    rho = ((xs[:, None] / a_il) ** 2)[:, None, :] + (((ys[:, None] - y_pel) / b_il) ** 2)[None, :, :]
    thick = (1 - 10.0 / a_il) ** 2
    shell = (rho < 1) & (rho >= thick[None, None, :]) & (vol.org[sub] != 0)
    ii, jj, kk = np.nonzero(shell)
    th = np.abs(np.arctan2(xs[ii], ys[jj] - y_pel))
    ok = (th >= th_lo[kk]) & (th <= th_hi[kk])
    mid = ok & (rho[ii, jj, kk] < 1 - 0.5 * (1 - thick[kk])) & (rho[ii, jj, kk] > thick[kk] + 0.3 * (1 - thick[kk]))
    o, tis = vol.org[sub], vol.tis[sub]
    o[ii[ok], jj[ok], kk[ok]] = BONE
    tis[ii[ok], jj[ok], kk[ok]] = TISSUE_IDS["cortical_bone"]
    tis[ii[mid], jj[mid], kk[mid]] = TISSUE_IDS["trabecular_bone"]


def _paint_sacrum(vol: Vol, place: Placement, body: BodyPlan, spine: SpineLandmarks, t_s1: float) -> None:
    """The sacrum, from S1 (``t_s1`` mm below the vertex) tapering and curving back to the coccyx."""
    zs = place.zrange(t_s1 / body.H, 0.505)
    if zs is None:
        return
    tt = place.t[zs]
    f = np.clip((tt - t_s1) / (0.505 * body.H - t_s1), 0, 1)
    ysac = float(spine.y(0.435)) - 5.0 - 0.3 * (tt - t_s1)
    asac = (48.0 * (1 - f) + 12.0 * f) * body.k_bone
    bsac = (18.0 * (1 - f) + 8.0 * f) * body.k_bone
    box = vol.box((-80, -260, -1e9), (80, 100, 1e9))
    if box is None:
        return
    sub = (box[0], box[1], zs)
    xs, ys, _ = vol.coords(sub)
    rho = ((xs[:, None] / asac) ** 2)[:, None, :] + (((ys[:, None] - ysac) / bsac) ** 2)[None, :, :]
    m = (rho < 1) & (vol.org[sub] != 0)
    vol.paint(sub, m, BONE, "trabecular_bone")
    vol.paint(sub, m & (rho > 0.6), BONE, "cortical_bone")


def _paint_hip(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks, spine: SpineLandmarks, sign: int,
               rng: np.random.Generator) -> None:
    """One side's acetabulum, pubic and ischial rami, and femur (head, neck, greater trochanter,
    shaft with cortex and yellow marrow); ``sign`` +1 is the right side."""
    H, kb = body.H, body.k_bone
    t_hip, x_h = torso.t_hip, torso.x_hip
    _, y_h = _hip_centre_y(body, spine)
    r_fh = (23.0 if body.male else 21.0) * kb
    t_pub = 0.495 * H
    y_pub = y_h + 58.0 * body.k
    hc = np.array([sign * x_h, y_h, place.zw(t_hip)])
    sl, r2 = ellipsoid(vol, rng, hc, np.full(3, r_fh + 9.0))
    if sl is not None:
        zz = vol.coords(sl)[2]
        xs = vol.coords(sl)[0]
        inner = r2 * (r_fh + 9.0) ** 2 / (r_fh + 1.5) ** 2
        acet = (r2 < 1) & (inner >= 1) & (zz[None, None, :] > hc[2] - 8) & (np.abs(xs)[:, None, None] > x_h - 25) \
            & (vol.org[sl] != 0)
        vol.paint(sl, acet, BONE, "cortical_bone")
    tub = (sign * 0.62 * x_h, y_h - 28 * kb, place.zw(t_hip + 55 * kb))
    for p0, p1, rr in (
        ((sign * 0.85 * x_h, y_h + 18 * kb, place.zw(t_hip - 4)), (sign * 10.0, y_pub, place.zw(t_pub)), 8.5),
        ((sign * 0.9 * x_h, y_h - 15 * kb, place.zw(t_hip + 12)), tub, 11.0),
        (tub, (sign * 12.0, y_pub - 6, place.zw(t_pub + 18 * kb)), 7.0),
    ):
        sl, d2 = capsule(vol, p0, p1, rr * kb)
        if sl is not None:
            m = (d2 < 1) & (vol.org[sl] != 0)
            vol.paint(sl, m, BONE, "cortical_bone")
            vol.paint(sl, m & (d2 < 0.35), BONE, "trabecular_bone")
    gt = np.array([sign * (x_h + 45 * kb), y_h - 10, place.zw(t_hip + 15 * kb)])
    sh0 = np.array([sign * (x_h + 40 * kb), y_h - 5, place.zw(t_hip + 35 * kb)])
    sh1 = np.array([sign * 0.75 * x_h, y_h, place.zw(t_hip + 0.245 * H)])
    for kind, geo in (("ball", (hc, r_fh)), ("cap", (hc, gt, 14.0 * kb)), ("ball", (gt, 17.0 * kb)),
                      ("shaft", (sh0, sh1, 14.0 * kb))):
        if kind == "ball":
            sl, d2 = ellipsoid(vol, rng, geo[0], np.full(3, geo[1]))
        else:
            sl, d2 = capsule(vol, *geo)
        if sl is None:
            continue
        m = (d2 < 1) & (vol.org[sl] != 0)
        vol.paint(sl, m, BONE, "cortical_bone")
        inner_t = "yellow_marrow" if kind == "shaft" else "trabecular_bone"
        vol.paint(sl, m & (d2 < 0.33 if kind == "shaft" else d2 < 0.6), BONE, inner_t)
