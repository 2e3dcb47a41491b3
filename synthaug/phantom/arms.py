"""Arms for the phantom (version 2): down at the sides or raised above the head, sized by height,
weight and sex, painted slice by slice as skin, subcutaneous fat, muscle and bone with marrow.

Segment masses follow de Leva (J Biomech 1996) and segment lengths Drillis & Contini (1966)
(:data:`~synthaug.phantom.tables.ARM_SEGMENTS`): each segment is a tapered elliptic cylinder whose
volume is its mass over the body's density. The pose is drawn per case
(:data:`~synthaug.phantom.tables.ARMS_UP_PROBABILITY`). Everything is defined in mm along the depth
below the vertex, so the same person gets the same arms on any grid; the arms are painted only where
the body is not (air), so nothing drawn before them changes, and the field of view cuts them where
they leave it (raised forearms above the head, hands below the scan end, the sides of a narrow grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..core.labels import ORGAN_IDS
from .shapes import Vol
from .tables import ARM_SEGMENTS, ARMS_UP_PROBABILITY, TISSUE_IDS

#: Depth of the shoulder joint below the vertex as a fraction of height (acromion at 0.818 H, Drillis & Contini).
SHOULDER_S = 0.182
SKIN_MM = 2.0
#: Above this depth (fraction of height) raised arms keep clear of the head and neck; below it they join the shoulder.
HEAD_NECK_S = 0.145
#: Radius of the humeral shaft and of the radius / ulna (mm, before the bone scale).
HUMERUS_MM, FOREARM_BONE_MM = 11.0, 6.5


@dataclass(frozen=True)
class ArmLandmarks:
    """What the arms need of a body: size, composition and the outline they must clear (mm)."""

    height_mm: float
    weight_kg: float
    male: bool
    body_fat: float                 # fraction of body mass
    bone_scale: float               # skeletal size factor (1 for the reference man)
    z_vertex: float                 # world z of the vertex
    s_end: float                    # the scan ends this far below the vertex (fraction of height)
    s: np.ndarray                   # depths below the vertex / height where the outline is given
    half_width: np.ndarray          # (2, len(s)): the body's outer half-width on the right (+x), left (-x)
    y_back: float                   # world y of the back at the chest
    y_head: float                   # world y of the head's centre


@dataclass(frozen=True)
class Arms:
    """Painted arms: their subcutaneous fat (a mask of the volume) and a summary for the case meta."""

    fat: np.ndarray
    meta: dict


def _segment_radius(volume_mm3: float, length_mm: float, taper: float) -> float:
    """Proximal radius of a circular frustum of ``volume`` whose distal radius is ``taper`` x it."""
    return math.sqrt(3.0 * volume_mm3 / (math.pi * length_mm * (1.0 + taper + taper**2)))


def arm_plan(lm: ArmLandmarks, rng: np.random.Generator) -> dict:
    """Pose, segment lengths and radii, fat fraction and placement of both arms (grid-free, mm)."""
    H, sex = lm.height_mm, "M" if lm.male else "F"
    density = 1.0 / (lm.body_fat / 0.9 + (1 - lm.body_fat) / 1.1)  # kg/l, as the trunk's
    up = bool(rng.random() < ARMS_UP_PROBABILITY)
    size = math.exp(rng.normal(0, 0.05))  # individual arm volume
    vol = {k: ARM_SEGMENTS[k][sex] / 100.0 * lm.weight_kg / density * 1e6 * size for k in ARM_SEGMENTS}
    length = {k: ARM_SEGMENTS[k]["length"] * H * math.exp(rng.normal(0, 0.03)) for k in ARM_SEGMENTS}
    r_upper = _segment_radius(vol["upper_arm"], length["upper_arm"], 0.78)
    r_fore = _segment_radius(vol["forearm"], length["forearm"], 0.62)
    hand_b = 0.024 * H  # half the hand's breadth
    hand_a = vol["hand"] / (math.pi * hand_b * length["hand"])
    fat = float(np.clip(lm.body_fat * (1.0 if lm.male else 1.2) * math.exp(rng.normal(0, 0.1)), 0.05, 0.6))
    return {
        "pose": "up" if up else "down", "length_mm": length, "volume_ml": {k: v / 1000.0 for k, v in vol.items()},
        "r_upper": r_upper, "r_fore": r_fore, "hand": (hand_a, hand_b), "fat_fraction": fat,
        "gap_mm": float(rng.uniform(1.0, 6.0)), "lift_mm": float(rng.uniform(0.0, 25.0)),
        "angle_deg": float(rng.uniform(10.0, 30.0)), "elbow_out_mm": float(rng.uniform(0.0, 30.0)),
    }


def _profile(lm: ArmLandmarks, plan: dict, t: np.ndarray) -> dict[str, np.ndarray]:
    """Per depth ``t`` (mm below the vertex): the arm's outer semi-axes, its part and the distance along it."""
    H = lm.height_mm
    L = plan["length_mm"]
    t_sh = SHOULDER_S * H
    ru, rf = plan["r_upper"], plan["r_fore"]
    ha, hb = plan["hand"]
    if plan["pose"] == "down":
        u = t - t_sh  # distance along the arm from the shoulder joint, downwards
        direction = 1.0
    else:
        u = (t_sh - t) / math.cos(math.radians(plan["angle_deg"]))  # upwards
        direction = -1.0
    a = np.zeros_like(t)
    b = np.zeros_like(t)
    part = np.zeros(t.shape, np.int8)  # 0 none, 1 upper arm, 2 forearm, 3 hand
    cap = (u < 0) & (u > -0.8 * ru)  # the shoulder cap (deltoid) above the joint
    r = ru * np.sqrt(np.clip(1 - (u / (0.8 * ru)) ** 2, 0, 1))
    a, b, part = np.where(cap, r, a), np.where(cap, r, b), np.where(cap, 1, part)
    upper = (u >= 0) & (u < L["upper_arm"])
    r = ru * (1 - 0.22 * u / L["upper_arm"])
    a, b, part = np.where(upper, 0.95 * r, a), np.where(upper, 1.05 * r, b), np.where(upper, 1, part)
    uf = u - L["upper_arm"]
    fore = (uf >= 0) & (uf < L["forearm"])
    r = rf * (1 - 0.38 * uf / L["forearm"])
    a, b, part = np.where(fore, 0.85 * r, a), np.where(fore, 1.15 * r, b), np.where(fore, 2, part)
    uh = uf - L["forearm"]
    hand = (uh >= 0) & (uh < L["hand"]) & (direction > 0)  # raised hands lie above the head, out of the field
    a, b, part = np.where(hand, ha, a), np.where(hand, hb, b), np.where(hand, 3, part)
    return {"a": a, "b": b, "part": part, "u": u}


def _centre_x(lm: ArmLandmarks, plan: dict, t: np.ndarray, a: np.ndarray, side: int) -> np.ndarray:
    """|x| of the arm's axis per depth: clear of the body's outline by the plan's gap."""
    H = lm.height_mm
    hw = np.interp(t / H, lm.s, lm.half_width[side])
    clear = np.where(a > 0, hw + a + plan["gap_mm"], 0.0)
    step = float(np.median(np.diff(t))) if t.size > 1 else 1.0
    window = max(int(round(80.0 / max(abs(step), 1e-6))), 1)
    x = ndimage.maximum_filter1d(clear, 2 * window + 1, mode="nearest")  # a straight arm does not follow the waist
    if plan["pose"] == "up":
        t_sh = SHOULDER_S * H
        x_sh = float(np.interp(SHOULDER_S, lm.s, lm.half_width[side])) - 0.2 * plan["r_upper"]
        x_el = float(clear[t < t_sh - 0.5 * plan["length_mm"]["upper_arm"]].max(initial=x_sh)) + plan["elbow_out_mm"]
        f = np.clip((t_sh - t) / plan["length_mm"]["upper_arm"], 0, 1)
        x = np.maximum(x_sh + (x_el - x_sh) * f, np.where(t < HEAD_NECK_S * H, clear, 0.0))  # clear of head and neck
    return x


def paint_arms(vol: Vol, lm: ArmLandmarks, rng: np.random.Generator) -> Arms:
    """Draw both arms (:func:`arm_plan`) and paint them into the air of ``vol``; returns their fat."""
    plan = arm_plan(lm, rng)
    fat_mask = np.zeros(vol.shape, bool)
    t_all = lm.z_vertex - vol.z
    prof = _profile(lm, plan, t_all)
    ks = np.flatnonzero((prof["part"] > 0) & (t_all <= lm.s_end * lm.height_mm))  # the scan ends at the thighs
    y_c = (lm.y_head + rng.uniform(-20.0, 10.0)) if plan["pose"] == "up" else None
    for side, sign in ((0, 1.0), (1, -1.0)):
        if ks.size == 0:
            break
        x_c = _centre_x(lm, plan, t_all, prof["a"], side)
        for k in ks:
            a, b, part = float(prof["a"][k]), float(prof["b"][k]), int(prof["part"][k])
            yc = y_c if y_c is not None else lm.y_back + b + plan["lift_mm"]
            _paint_slice(vol, k, sign * float(x_c[k]), yc, a, b, part, float(prof["u"][k]), lm, plan, fat_mask)
    meta = {"pose": plan["pose"], "volume_ml": {k: round(v, 1) for k, v in plan["volume_ml"].items()},
            "length_mm": {k: round(v, 1) for k, v in plan["length_mm"].items()},
            "fat_fraction": round(plan["fat_fraction"], 3)}
    return Arms(fat=fat_mask, meta=meta)


def _paint_slice(vol: Vol, k: int, xc: float, yc: float, a: float, b: float, part: int, u: float,
                 lm: ArmLandmarks, plan: dict, fat_mask: np.ndarray) -> None:
    """One axial slice of one arm: skin, fat, muscle and bone(s), into the air of slice ``k``."""
    box = vol.box((xc - a - 1, yc - b - 1, -np.inf), (xc + a + 1, yc + b + 1, np.inf))
    if box is None:
        return
    xs, ys = vol.x[box[0]], vol.y[box[1]]
    dx, dy = (xs - xc)[:, None], (ys - yc)[None, :]
    sl = (box[0], box[1], slice(k, k + 1))
    air = vol.org[sl][:, :, 0] == 0

    def inside(sa: float, sb: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
        return ((dx - cx) / max(sa, 1e-3)) ** 2 + ((dy - cy) / max(sb, 1e-3)) ** 2 < 1 if sa > 0 and sb > 0 else \
            np.zeros(air.shape, bool)

    outer = inside(a, b) & air
    if not outer.any():
        return
    ai, bi = a - SKIN_MM, b - SKIN_MM
    f = min(ai, bi) * (1 - math.sqrt(1 - plan["fat_fraction"]))  # fat layer holding the fat fraction
    if part == 3:
        f = min(f, 4.0)
    org = vol.org[sl][:, :, 0]
    tis = vol.tis[sl][:, :, 0]
    org[outer], tis[outer] = ORGAN_IDS["soft_tissue"], TISSUE_IDS["soft_tissue"]  # skin
    fat = inside(ai, bi) & outer
    org[fat], tis[fat] = ORGAN_IDS["body_fat"], TISSUE_IDS["fat"]
    lean = inside(ai - f, bi - f) & outer
    org[lean], tis[lean] = ORGAN_IDS["soft_tissue"], TISSUE_IDS["muscle"]
    fat_mask[sl][:, :, 0] |= fat & ~lean
    kb = lm.bone_scale
    if part == 1:  # humerus: head near the shoulder, condyles near the elbow, shaft with fatty marrow
        L = plan["length_mm"]["upper_arm"]
        end = u < 35.0 * kb or u > L - 30.0 * kb
        rb = (22.0 if u < 35.0 * kb else 14.0) * kb if end else HUMERUS_MM * kb
        bones = [(0.0, 0.0, rb * (1.6 if u > L - 30.0 * kb else 1.0), rb, end)]
    elif part == 2:  # radius (anterior) and ulna (posterior), neutral rotation
        bones = [(0.0, s * 0.3 * b, FOREARM_BONE_MM * kb, FOREARM_BONE_MM * kb, False) for s in (1.0, -1.0)]
    else:  # hand: metacarpals as one plate
        bones = [(0.0, 0.0, 0.45 * a, 0.7 * b, True)]
    for cx, cy, ra, rb_, spongy in bones:
        ra, rb_ = min(ra, 0.9 * (ai - f)), min(rb_, 0.9 * (bi - f))
        cort = inside(ra, rb_, cx, cy) & outer
        org[cort], tis[cort] = ORGAN_IDS["bone"], TISSUE_IDS["cortical_bone"]
        core = inside(ra - 3.0, rb_ - 3.0, cx, cy) & outer
        tis[core] = TISSUE_IDS["trabecular_bone" if spongy else "yellow_marrow"]
