"""Parametric, demography-driven whole-body 18F-FDG PET/CT phantom.

:func:`make_phantom` turns a person's demographics (age, sex, height, weight,
diagnosis) into a :class:`~synthaug.core.case.Case`: CT in HU, PET in SUV (body weight),
the synthaug organ map and a lesion mask, on any :class:`~synthaug.core.grid.Grid`.
It is the built-in training data of the diffusion models and the "conventional
phantom" baseline. See ``docs/phantom.md`` for the anatomy, the tissue tables and
their sources, and the limitations (no lower legs, no patient table, ...).

Conventions: arrays are (X, Y, Z), RAS+ world coordinates in mm (nibabel's
convention: +x towards the patient's **right**, +y anterior, +z towards the head).
The liver therefore lies at larger world x than the spleen. The vertex of the head
sits near the top of the field of view and the scan ends at the upper thigh.

Every random draw comes from ``np.random.default_rng(seed)`` (split into independent
streams for anatomy, tissue values, lesions, texture and noise), so the same seed and
demographics give identical arrays; the anatomy is defined in mm, independent of
the grid it is sampled on. ``version`` picks the anatomy: 1 is what the shipped demo weights were
trained on (kept bit for bit), 2 adds arms and FDG-visible structures (:mod:`.arms`,
:mod:`.structures`) and images the PET with the scanner model (:mod:`.scanner`).
"""

from __future__ import annotations

import math

import numpy as np

from ..core.case import Case
from ..core.demographics import DIAGNOSES, DIAGNOSIS_MIX, Demographics
from ..core.grid import Grid, get_preset
from ..core.labels import ORGAN_IDS
from ..core.seeds import check_seed
from .arms import ArmLandmarks, paint_arms
from .bodyplan import SCAN_END_S, TRUNK_P, TRUNK_S, BodyPlan, diaphragm_landmarks, place_body, spine_landmarks
from .lesion_paint import lesion_shape, lesion_tissue
from .scanner import PHANTOM_V1_IMAGING, ScannerModel, apply_scanner, get_scanner, phantom_ct, phantom_v1_pet
from .shapes import Field, Vol, capsule, ellipsoid, rot_y, rot_z, rotation, superellipse_term
from .structures import HeadLandmarks, UrinaryLandmarks, paint_head_structures, paint_ureters, ureter_path
from .tables import (
    LESION_DIAMETER_MM,
    LESION_MODEL,
    LESION_SUVMAX,
    PET_SUV,
    PET_SUV_V2,
    TISSUE_IDS,
    TISSUES,
)
from .tissues import tissue_values, version2_values
from .torso import paint_cavity, paint_torso, paint_visceral

#: Anatomy versions (``make_phantom(version=...)``) and the string their cases record: 1 is the phantom the
#: shipped demo weights were trained on (bit for bit), 2 adds arms, structures, the liver re-check and the scanner.
PHANTOM_VERSIONS = {1: "1.0", 2: "2.0"}
DEFAULT_PHANTOM_VERSION = 2
PHANTOM_VERSION = PHANTOM_VERSIONS[DEFAULT_PHANTOM_VERSION]

__all__ = ["ANATOMY_FOV_MM", "DEFAULT_PHANTOM_VERSION", "PHANTOM_VERSION", "PHANTOM_VERSIONS", "SCAN_END_S",
           "draw_diagnosis", "impute_demographics", "lesion_plan", "lesion_rng", "lesion_uptake", "make_phantom"]

# --- demographics ------------------------------------------------------------------------------


def _check_demographics(demographics: Demographics) -> Demographics:
    if not isinstance(demographics, Demographics):
        raise ValueError(f"demographics: expected a synthaug Demographics, got {type(demographics).__name__}")
    missing = [f for f in ("age", "sex", "height_cm", "weight_kg") if getattr(demographics, f) is None]
    if missing:
        raise ValueError(
            f"the phantom needs age, sex, height_cm and weight_kg; missing: {', '.join(missing)} "
            "(impute them first, e.g. with synthaug.phantom.body.impute_demographics)"
        )
    if demographics.age < 18:
        raise ValueError(f"age={demographics.age:g}: the phantom models adults only (age 18-120)")
    if not 120.0 <= demographics.height_cm <= 230.0:
        raise ValueError(f"height_cm={demographics.height_cm:g}: the phantom models adult heights 120-230 cm")
    bmi = demographics.bmi
    if not 12.0 <= bmi <= 70.0:
        raise ValueError(f"BMI={bmi:.1f} (weight {demographics.weight_kg:g} kg at {demographics.height_cm:g} cm) "
                         "is outside the phantom's range 12-70 kg/m^2")
    return demographics


def impute_demographics(demographics: Demographics, seed: int) -> Demographics:
    """Fill unknown age/sex/height/weight from the AutoPET-like population model.

    Known fields are kept; the diagnosis is left as it is (the phantom draws an unknown
    diagnosis from the AutoPET mix). Deterministic in ``seed``.
    """
    from ..core.demographics import HEIGHT_BY_SEX, LOG_BMI_BY_SEX, MALE_FRACTION

    rng = np.random.default_rng(seed)
    d = demographics
    sex = d.sex or ("M" if rng.random() < MALE_FRACTION else "F")
    age = d.age if d.age is not None else float(np.clip(rng.normal(60.0, 14.0), 18.0, 92.0))
    height = d.height_cm if d.height_cm is not None else float(np.clip(rng.normal(*HEIGHT_BY_SEX[sex]), 140, 205))
    if d.weight_kg is None:
        mu, sd = LOG_BMI_BY_SEX[sex]
        weight = float(np.clip(np.exp(rng.normal(mu, sd)), 15.0, 50.0)) * (height / 100.0) ** 2
    else:
        weight = d.weight_kg
    return Demographics(round(age, 1), sex, round(height, 1), round(weight, 1), d.diagnosis)


# --- rasterisation -----------------------------------------------------------------------------


class _Phantom:
    """Rasterises a :class:`BodyPlan` on a grid (organ map, tissue map)."""

    def __init__(self, body: BodyPlan, grid: Grid, rng: np.random.Generator) -> None:
        self.b = body
        self.v = Vol(grid)
        self.rng = rng
        self.place = place_body(self.v, body)
        self.z_vertex, self.t, self.s = self.place.z_vertex, self.place.t, self.place.s
        self.zw, self.zrange = self.place.zw, self.place.zrange
        self.spine = spine_landmarks(body)
        self.spine_y, self.spine_x, self.vert_a, self.vert_b = self.spine.y, self.spine.x, self.spine.vert_a, self.spine.vert_b
        self.diaphragm = diaphragm_landmarks(body)

    # ---- body outline and layers ----
    def body(self) -> None:
        self.torso = paint_torso(self.v, self.place, self.b, self.rng)
        self.xw, self.yw, self.sat_mask = self.torso.xw, self.torso.yw, self.torso.sat_mask
        self.x_hip, self.t_hip = self.torso.x_hip, self.torso.t_hip

    def trunk_contents(self) -> None:
        self.cavity = paint_cavity(self.v, self.place, self.b, self.torso, self.spine, self.diaphragm, self.rng)

    # ---- organs ----
    def organs(self) -> None:
        b, v, rng = self.b, self.v, self.rng
        H = b.H
        j = b.organ_jitter * 6.0
        cav = lambda s_: [float(q[0]) for q in b.cavity(np.array([s_]), vat=False)]  # noqa: E731
        tR, tL = self.diaphragm.t_right, self.diaphragm.t_left

        def below_diaphragm(sl, margin=2.0):
            xs, ys, zs = v.coords(sl)
            tdd = self.diaphragm.depth(xs[:, None], ys[None, :])
            return (self.zw(0) - zs)[None, None, :] > tdd[:, :, None] + margin

        def in_cavity(sl):
            return v.tis[sl] == TISSUE_IDS["bowel"]

        # Heart (myocardium shell around the blood pool).
        a27, _, ba27, _ = cav(0.27)
        hc = np.array([-0.18 * a27, 0.3 * ba27, self.zw(0.268 * H)]) + j[0]
        hsemi = np.array([62.0, 47.0, 50.0]) * b.os["heart"]
        rot = rotation(b.heart_axis, (0, 0, 1))
        sl, r2 = ellipsoid(v, rng, hc, hsemi, rot, deform=4.0, corr=40.0)
        if sl is not None:
            m = (r2 < 1) & (v.org[sl] != 0)
            v.paint(sl, m, ORGAN_IDS["heart"], "myocardium")
            v.paint(sl, m & (r2 < 0.62), ORGAN_IDS["heart"], "blood")
            # epicardial fat grows with BMI
            shell = (r2 >= 1) & (r2 < (1 + (2 + 0.3 * max(b.bmi - 20, 0)) / 50.0) ** 2) & (v.tis[sl] == TISSUE_IDS["soft_tissue"])
            v.paint(sl, shell, ORGAN_IDS["body_fat"], "fat")

        # Aorta: ascending, arch (half torus), descending to the bifurcation at L4.
        r = b.aorta_r
        s_arch, s_root, s_bif = 0.205, 0.262, 0.405
        xa, ya = 18.0 * b.k, hc[1] + 12.0
        ysp = lambda s_: float(self.spine_y(s_) + self.vert_b(s_))  # noqa: E731
        xd = lambda s_: -18.0 * b.k + 10.0 * b.k * np.clip((np.asarray(s_) - 0.30) / 0.1, 0, 1)  # noqa: E731
        yd_top = ysp(s_arch) + r + 2
        self.aorta_path = []
        sl, d2 = capsule(v, (xa, ya, self.zw(s_root * H)), (xa, ya, self.zw(s_arch * H)), r)
        if sl is not None:
            v.paint(sl, (d2 < 1) & (v.org[sl] != 0), ORGAN_IDS["aorta"], "blood")
        p0 = np.array([xa, ya, self.zw(s_arch * H)])
        p1 = np.array([float(xd(s_arch)), yd_top, self.zw(s_arch * H)])
        cen = 0.5 * (p0 + p1)
        R = 0.5 * float(np.linalg.norm(p1 - p0))
        e1 = (p1 - p0) / (2 * R)
        e2 = np.array([0, 0, 1.0])
        n = np.cross(e1, e2)
        sl = v.box(cen - R - r - 2, cen + R + r + 2)
        if sl is not None:
            xs, ys, zs = v.coords(sl)
            q = [(xs - cen[0])[:, None, None], (ys - cen[1])[None, :, None], (zs - cen[2])[None, None, :]]
            uu = q[0] * e1[0] + q[1] * e1[1] + q[2] * e1[2]
            vv = q[0] * e2[0] + q[1] * e2[1] + q[2] * e2[2]
            ww = q[0] * n[0] + q[1] * n[1] + q[2] * n[2]
            dd = (np.sqrt(uu**2 + vv**2) - R) ** 2 + ww**2
            m = (dd < r**2) & (vv >= -1.0) & (v.org[sl] != 0)
            v.paint(sl, m, ORGAN_IDS["aorta"], "blood")
        zs = self.zrange(s_arch, s_bif)
        if zs is not None:
            ss = self.s[zs]
            cx = xd(ss)
            cy = np.array([ysp(q) for q in ss]) + r + 2
            rr = r * (1 - 0.15 * np.clip((ss - s_arch) / (s_bif - s_arch), 0, 1))
            box = v.box((-120, -150, -1e9), (80, 150, 1e9))
            if box is not None:
                sub = (box[0], box[1], zs)
                xs, ys, _ = v.coords(sub)
                m = (((xs[:, None] - cx[None, :]) / rr)[:, None, :] ** 2
                     + ((ys[:, None] - cy[None, :]) / rr)[None, :, :] ** 2) < 1
                v.paint(sub, m & (v.org[sub] != 0), ORGAN_IDS["aorta"], "blood")
        self.aorta_x, self.aorta_y = xd, lambda s_: ysp(s_) + r + 2

        # Liver: tapered, deformed ellipsoid under the right dome.
        a33, _, ba33, bp33 = cav(0.33)
        lc = np.array([0.36 * a33, 0.05 * ba33, self.zw(tR + 0.062 * H)]) + j[1]
        lsemi = np.array([88.0, 74.0, 116.0]) * b.os["liver"]  # ~1.4 l at BSA 1.96 m^2 (Urata 1995)
        field = Field(rng, lc - lsemi.max() * 1.2, lc + lsemi.max() * 1.2, 45.0, ncomp=3)
        sl = v.box(lc - lsemi * 1.15, lc + lsemi * 1.15)
        if sl is not None:
            xs, ys, zs = v.coords(sl)
            dx = (xs - lc[0])[:, None, None] + 7.0 * field(xs, ys, zs, comp=0)
            dy = (ys - lc[1])[None, :, None] + 7.0 * field(xs, ys, zs, comp=1)
            dz = (zs - lc[2])[None, None, :] + 7.0 * field(xs, ys, zs, comp=2)
            u = dx / lsemi[0]
            taper = np.clip(0.35 + 0.65 * (u + 1) / 1.6, 0.3, 1.0)
            dy = dy - 0.25 * lsemi[1] * np.clip(-u, 0, 1)  # left lobe lies anterior
            r2 = u**2 + (dy / (lsemi[1] * taper)) ** 2 + (dz / (lsemi[2] * taper)) ** 2
            m = (r2 < 1) & in_cavity(sl) & below_diaphragm(sl)
            v.paint(sl, m, ORGAN_IDS["liver"], "liver")
        self.liver_c = lc

        # Spleen: posterolateral left, under the left dome.
        a32, _, ba32, bp32 = cav(0.32)
        spc = np.array([-0.72 * a32, -0.45 * bp32, self.zw(tL + 0.035 * H)]) + j[2] * 0.6
        sl, r2 = ellipsoid(v, rng, spc, np.array([24.0, 50.0, 52.0]) * b.os["spleen"], rot_z(35.0), deform=5.0)
        if sl is not None:
            m = (r2 < 1) & in_cavity(sl) & below_diaphragm(sl)
            v.paint(sl, m, ORGAN_IDS["spleen"], "spleen")

        # Stomach (soft tissue / bowel, gas cap anteriorly).
        stc = np.array([-0.33 * a32, 0.35 * ba32, self.zw(tL + 0.05 * H)]) + j[3]
        ssemi = np.array([42.0, 38.0, 62.0]) * b.os["stomach"]
        sl, r2 = ellipsoid(v, rng, stc, ssemi, rot_y(25.0), deform=6.0)
        if sl is not None:
            m = (r2 < 1) & in_cavity(sl) & below_diaphragm(sl)
            ys = v.coords(sl)[1]
            gas = m & (ys[None, :, None] > stc[1] + 0.55 * ssemi[1])
            v.paint(sl, m & ~gas, ORGAN_IDS["soft_tissue"], "bowel")
            v.paint(sl, gas, ORGAN_IDS["soft_tissue"], "gas")

        # Kidneys with renal pelvis (urine).
        for i, sign in enumerate((1, -1)):
            kc, ksemi, pc = self.kidney(i)
            rot = rot_y(sign * 15.0) @ rot_z(-sign * 25.0)
            sl, r2 = ellipsoid(v, rng, kc, ksemi, rot, deform=3.0)
            if sl is None:
                continue
            m = (r2 < 1) & (v.org[sl] != 0)
            v.paint(sl, m, ORGAN_IDS["kidneys"], "kidney")
            sl2, r2p = ellipsoid(v, rng, pc, ksemi * np.array([0.35, 0.38, 0.42]), rot)
            if sl2 is not None:
                v.paint(sl2, (r2p < 1) & (v.org[sl2] == ORGAN_IDS["kidneys"]), None, "renal_pelvis")

        # Psoas muscles beside the lumbar spine.
        zs = self.zrange(0.36, 0.48)
        if zs is not None:
            ss = self.s[zs]
            rp = self.psoas_radius(ss)
            yp = self.spine_y(ss) + 4
            for sign in (1, -1):
                xp = sign * (self.vert_a(ss) + rp + 2)
                m = (superellipse_term(self.xw[:, zs], xp, rp, rp, 2)[:, None, :] + superellipse_term(self.yw[:, zs], yp, rp, rp, 2)[None, :, :]) < 1
                sl = (slice(None), slice(None), zs)
                v.paint(sl, m & (v.tis[sl] == TISSUE_IDS["bowel"]), ORGAN_IDS["soft_tissue"], "muscle")

        # Urinary bladder above the pubic symphysis.
        bc, bsemi, rb = self.bladder()
        sl, r2 = ellipsoid(v, rng, bc, bsemi, deform=0.06 * rb)
        if sl is not None:
            v.paint(sl, (r2 < 1) & (v.org[sl] != 0), ORGAN_IDS["urinary_bladder"], "bladder_urine")

    def kidney(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre, semi-axes and renal-pelvis centre of kidney ``i`` (0: right, 1: left; world mm)."""
        b, sign = self.b, 1 - 2 * i
        s_k = 0.365 if sign > 0 else 0.355
        a_k = float(b.cavity(np.array([s_k]), vat=False)[0][0])
        kc = np.array([sign * 0.42 * a_k, float(self.spine_y(s_k)) + 6.0, self.zw(s_k * b.H)]) + b.organ_jitter[4 + i] * 6.0 * 0.5
        ksemi = np.array([27.0, 23.0, 54.0]) * b.os["kidney"]
        return kc, ksemi, kc - sign * np.array([0.45 * ksemi[0], -0.1 * ksemi[1], 0.0])

    def bladder(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Centre and semi-axes (world mm) and radius scale of the urinary bladder, above the pubic symphysis."""
        b = self.b
        rb = (b.bladder_ml * 1000 * 3 / (4 * np.pi * 1.15 * 0.95 * 0.9)) ** (1 / 3)
        bsemi = np.array([1.15, 0.95, 0.9]) * rb
        ba48 = float(b.cavity(np.array([0.47]), vat=False)[2][0])
        return np.array([0.0, 0.25 * ba48, self.zw(0.495 * b.H - 0.75 * bsemi[2])]), bsemi, rb

    def psoas_radius(self, s: np.ndarray) -> np.ndarray:
        return np.interp(s, [0.36, 0.41, 0.45, 0.48], [8, 22, 22, 15]) * self.b.k * self.b.muscle_f

    # ---- airways ----
    def airways(self) -> None:
        b, v = self.b, self.v
        H = b.H
        s_car = 0.235
        t_lar = b.t_chin + 5.0
        rt = 8.0 * b.k_bone
        y_t = lambda s_: float(self.spine_y(s_) + self.vert_b(s_) + 18.0 * b.k)  # noqa: E731
        s_lar = t_lar / H
        pts = [(0.0, y_t(s_lar), self.zw(t_lar)), (0.0, y_t(0.17), self.zw(0.17 * H)), (0.0, y_t(s_car), self.zw(s_car * H))]
        for p0, p1 in zip(pts[:-1], pts[1:]):
            sl, d2 = capsule(v, p0, p1, rt)
            if sl is not None:
                v.paint(sl, (d2 < 1) & (v.org[sl] != 0), ORGAN_IDS["lungs"], "gas")
        for sign in (1, -1):
            p1 = (sign * 45.0 * b.k, y_t(s_car) - 6, self.zw(s_car * H + 35 * b.k_len))
            sl, d2 = capsule(v, pts[-1], p1, 0.75 * rt)
            if sl is not None:
                v.paint(sl, (d2 < 1) & (v.org[sl] != 0), ORGAN_IDS["lungs"], "gas")

    # ---- head ----
    def head(self) -> None:
        b, v, rng = self.b, self.v, self.rng
        base = b.brain_base
        c = np.array([0.0, b.y_brain, self.zw(b.t_brain)])
        # scalp + face (soft tissue), skull shell, brain.
        sl, r2 = ellipsoid(v, rng, c, base + 15.0, deform=2.0, corr=60.0)
        if sl is not None:
            v.paint(sl, r2 < 1, ORGAN_IDS["soft_tissue"], "muscle")
        fc = b.face_c.copy()
        fc[2] = self.zw(fc[2])
        sl, r2 = ellipsoid(v, rng, fc, b.face_semi, deform=3.0, corr=50.0)
        if sl is not None:
            v.paint(sl, (r2 < 1) & (v.tis[sl] != TISSUE_IDS["muscle"]), ORGAN_IDS["soft_tissue"], "soft_tissue")
            # nasal cavity / oral air
            xs, ys, zs = v.coords(sl)
            air = (r2 < 0.55) & (np.abs(xs)[:, None, None] < 9 * b.hs) & (ys[None, :, None] > fc[1] + 5) & \
                  (np.abs(zs - (fc[2] + 0.2 * b.face_semi[2]))[None, None, :] < 18 * b.hs)
            v.paint(sl, air, ORGAN_IDS["soft_tissue"], "gas")
        sl, r2 = ellipsoid(v, rng, c, base + 9.0)
        if sl is not None:
            xs, ys, zs = v.coords(sl)
            # inner radius^2 of the skull in the same normalisation (base + 2 mm)
            q = [(xs - c[0])[:, None, None], (ys - c[1])[None, :, None], (zs - c[2])[None, None, :]]
            inner = (q[0] / (base[0] + 2)) ** 2 + (q[1] / (base[1] + 2)) ** 2 + (q[2] / (base[2] + 2)) ** 2
            skull = (r2 < 1) & (inner >= 1)
            dipl = skull & (r2 < 0.93) & (inner > 1.07)
            v.paint(sl, skull, ORGAN_IDS["bone"], "cortical_bone")
            v.paint(sl, dipl, ORGAN_IDS["bone"], "trabecular_bone")
            v.paint(sl, inner < 1, ORGAN_IDS["soft_tissue"], "csf")
        bsemi = b.brain_semi
        bc = c + np.array([0, 0, (base[2] - bsemi[2]) * 0.5])
        sl, r2 = ellipsoid(v, rng, bc, bsemi, deform=2.5, corr=30.0)
        if sl is not None:
            m = r2 < 1
            xs, ys, zs = v.coords(sl)
            gm_shell = 0.80**2  # outer shell holds ~half the volume, like grey matter
            fissure = (np.abs(xs - bc[0])[:, None, None] < 1.5) & ((zs - bc[2])[None, None, :] > -5)
            v.paint(sl, m, ORGAN_IDS["brain"], "brain_wm")
            v.paint(sl, m & (r2 >= gm_shell), ORGAN_IDS["brain"], "brain_gm")
            v.paint(sl, m & fissure, ORGAN_IDS["brain"], "csf")
        # cerebellum, deep grey nuclei, ventricles
        cb = bc + np.array([0, -0.5 * bsemi[1], -0.55 * bsemi[2]])
        sl, r2 = ellipsoid(v, rng, cb, np.array([0.7, 0.4, 0.42]) * bsemi, deform=2.0)
        if sl is not None:
            v.paint(sl, (r2 < 1) & (v.org[sl] != ORGAN_IDS["bone"]), ORGAN_IDS["brain"], "brain_gm")
        for sign in (1, -1):
            sl, r2 = ellipsoid(v, rng, bc + np.array([sign * 22 * b.hs, -5 * b.hs, -10 * b.hs]), np.array([11, 20, 12.0]) * b.hs)
            if sl is not None:
                v.paint(sl, (r2 < 1) & (v.org[sl] == ORGAN_IDS["brain"]), None, "brain_gm")
            vs = np.array([6.0, 24.0, 9.0]) * b.hs * np.array([b.ventricle_scale, 1.0, b.ventricle_scale ** 0.5])
            sl, r2 = ellipsoid(v, rng, bc + np.array([sign * 9 * b.hs, 0, 8 * b.hs]), vs)
            if sl is not None:
                v.paint(sl, (r2 < 1) & (v.org[sl] == ORGAN_IDS["brain"]), None, "csf")
        # salivary glands and tonsils
        for sign in (1, -1):
            pc = np.array([sign * 48 * b.hs, fc[1] - 38 * b.hs, fc[2] - 0.1 * b.face_semi[2]])
            sl, r2 = ellipsoid(v, rng, pc, np.array([11, 17, 22.0]) * b.hs, deform=1.5)
            if sl is not None:
                v.paint(sl, (r2 < 1) & (v.org[sl] == ORGAN_IDS["soft_tissue"]), None, "gland")
            tc = np.array([sign * 13 * b.hs, fc[1] - 18 * b.hs, fc[2] - 0.35 * b.face_semi[2]])
            sl, r2 = ellipsoid(v, rng, tc, np.array([7, 8, 10.0]) * b.hs)
            if sl is not None:
                v.paint(sl, (r2 < 1) & (v.org[sl] == ORGAN_IDS["soft_tissue"]), None, "gland")
        # mandible: U-shaped bone in the lower face
        tch = b.t_chin
        zs = self.zrange((tch - 38 * b.hs) / b.H, (tch - 4) / b.H)
        if zs is not None:
            box = v.box((-70, fc[1] - 60, -1e9), (70, fc[1] + 80, 1e9))
            if box is not None:
                sub = (box[0], box[1], zs)
                xs, ys, _ = v.coords(sub)
                rr = (xs[:, None] / (50 * b.hs)) ** 2 + ((ys[None, :] - (fc[1] - 15 * b.hs)) / (62 * b.hs)) ** 2
                ring = (rr < 1) & (rr > 0.72) & (ys[None, :] > fc[1] - 30 * b.hs)
                m = np.broadcast_to(ring[:, :, None], tuple(q.stop - q.start for q in sub)) & (v.org[sub] != 0)
                v.paint(sub, m, ORGAN_IDS["bone"], "cortical_bone")

    # ---- skeleton ----
    def skeleton(self) -> None:
        b, v, rng = self.b, self.v, self.rng
        H = b.H
        bone = ORGAN_IDS["bone"]
        # Vertebral levels: C1..C7, T1..T12, L1..L5.
        t_c1 = max(0.075 * H, b.t_brain + 0.95 * b.brain_base[2])
        cerv = np.linspace(t_c1, 0.15 * H, 8)
        h = 0.285 * H / 18.5
        tl = 0.15 * H + np.concatenate([np.arange(13) * h, 12 * h + np.arange(1, 6) * 1.3 * h])
        bounds = np.concatenate([cerv, tl[1:]])  # 25 boundaries, 24 vertebrae
        self.vert_bounds = bounds
        self.t_s1 = float(bounds[-1])
        zs = self.zrange(bounds[0] / H, bounds[-1] / H)
        if zs is not None:
            tt = self.t[zs]
            ss = self.s[zs]
            lev = np.clip(np.searchsorted(bounds, tt) - 1, 0, 23)
            frac = (tt - bounds[lev]) / (bounds[lev + 1] - bounds[lev])
            disc = np.where(lev < 7, 0.22, np.where(lev < 19, 0.18, 0.2))
            is_disc = (frac < disc) & (lev > 0)
            va, vb = self.vert_a(ss), self.vert_b(ss)
            cx, cy = self.spine_x(ss), self.spine_y(ss)
            box = v.box((-140, -250, -1e9), (140, 150, 1e9))
            if box is not None:
                sub = (box[0], box[1], zs)
                xs, ys, _ = v.coords(sub)
                tx = ((xs[:, None] - cx) / va) ** 2
                ty = ((ys[:, None] - cy) / vb) ** 2
                rho = tx[:, None, :] + ty[None, :, :]
                body_m = rho < 1
                inside = v.org[sub] != 0
                v.paint(sub, body_m & inside & ~is_disc[None, None, :], bone, "trabecular_bone")
                v.paint(sub, body_m & inside & ~is_disc[None, None, :] & (rho > 0.86), bone, "cortical_bone")
                v.paint(sub, body_m & inside & is_disc[None, None, :], ORGAN_IDS["soft_tissue"], "cartilage")
                # canal, lamina ring, spinous and transverse processes (upper 70 % of each level)
                rc = np.where(lev < 7, 9.0, np.where(lev < 19, 7.5, 9.0)) * b.k_bone
                ccy = cy - vb - rc - 1.0
                dxc = xs[:, None] - cx
                dyc = ys[:, None] - ccy
                rr = np.sqrt(dxc[:, None, :] ** 2 + dyc[None, :, :] ** 2)
                post = ((frac > disc) & (frac < 0.85))[None, None, :]
                ring = (rr >= rc) & (rr < rc + 5.0 * b.k_bone) & (dyc[None, :, :] < 2.0)
                spin_len = np.where(lev < 7, 20.0, np.where(lev < 19, 28.0, 26.0)) * b.k
                spin = (np.abs(dxc)[:, None, :] < 3.0 * b.k_bone) & (dyc[None, :, :] < -rc) & \
                       (dyc[None, :, :] > -rc - spin_len)
                trans_w = np.where(lev < 7, 22.0, np.where(lev < 19, 28.0, 38.0)) * b.k_bone
                trans = (np.abs(dyc[None, :, :] - 0.0) < 5.0 * b.k_bone) & (np.abs(dxc)[:, None, :] < trans_w)
                pm = (ring | spin | trans) & post & inside
                v.paint(sub, pm & (v.org[sub] != ORGAN_IDS["lungs"]), bone, "trabecular_bone")
                v.paint(sub, (rr < rc) & inside, ORGAN_IDS["soft_tissue"], "spinal_cord")

        # Ribs, sternum: shell just outside the body cavity, ribs dropping anteriorly.
        zs = self.zrange(0.155, 0.42)
        if zs is not None:
            ss = self.s[zs]
            tt = self.t[zs]
            cal, car, cba, cbp = b.cavity(ss)
            rib_top = 0.15 * H
            h = 0.285 * H / 18.5
            L = np.maximum(0.5 * (cal + cba), 1.0)
            o1 = 1.0 + 1.5 / L
            o2 = 1.0 + 9.0 / L
            box = v.box((-260, -250, -1e9), (260, 250, 1e9))
            if box is not None:
                sub = (box[0], box[1], zs)
                tx1 = superellipse_term(self.xw[box[0], zs], 0, cal * o1, car * o1, TRUNK_P)
                ty1 = superellipse_term(self.yw[box[1], zs], 0, cbp * o1, cba * o1, TRUNK_P)
                tx2 = superellipse_term(self.xw[box[0], zs], 0, cal * o2, car * o2, TRUNK_P)
                ty2 = superellipse_term(self.yw[box[1], zs], 0, cbp * o2, cba * o2, TRUNK_P)
                shell = ((tx2[:, None, :] + ty2[None, :, :]) < 1) & ((tx1[:, None, :] + ty1[None, :, :]) >= 1)
                shell &= v.org[sub] != 0
                ii, jj, kk = np.nonzero(shell)
                xs, ys, _ = v.coords(sub)
                X, Y = xs[ii], ys[jj]
                theta = np.abs(np.arctan2(X, Y - 0.0))  # 0 anterior, pi posterior
                drop = 62.0 * b.k_len
                tsh = tt[kk] - drop * (1 - theta / np.pi)
                f = (tsh - rib_top) / h - 0.5
                kr = np.rint(f)
                in_rib = (np.abs(f - kr) < 0.21) & (kr >= 0) & (kr <= 11)
                kr = kr.astype(int)
                tmin = np.where(kr < 7, 0.28, np.where(kr < 10, 0.55, 1.5))
                cart = np.where(kr < 7, 0.10, np.where(kr < 10, 0.3, 9.9))
                is_bone = in_rib & (theta >= tmin)
                is_cart = in_rib & (theta >= cart) & (theta < tmin)
                sx = (np.abs(X) < 15.0 * b.k_bone) & (Y > 0) & (tt[kk] > 0.172 * H) & (tt[kk] < 0.30 * H)
                o = v.org[sub]
                tis = v.tis[sub]
                sel = is_bone | sx
                o[ii[sel], jj[sel], kk[sel]] = bone
                # thin, marrow-filled: at 3-4 mm voxels ribs read ~150-300 HU like trabecular bone
                tis[ii[is_bone], jj[is_bone], kk[is_bone]] = TISSUE_IDS["trabecular_bone"]
                tis[ii[sx], jj[sx], kk[sx]] = TISSUE_IDS["trabecular_bone"]
                sel = is_cart & ~sx
                o[ii[sel], jj[sel], kk[sel]] = ORGAN_IDS["soft_tissue"]
                tis[ii[sel], jj[sel], kk[sel]] = TISSUE_IDS["cartilage"]

        # Clavicles and scapulae.
        ca = b.trunk_lean(np.array([0.18]))
        cb_ = b.cavity(np.array([0.22]))
        for sign in (1, -1):
            p0 = (sign * 22.0 * b.k, float(ca[2][0]) * 0.8, self.zw(0.172 * H))
            p1 = (sign * (float(ca[0][0]) - 25.0), -5.0, self.zw(0.168 * H))
            sl, d2 = capsule(v, p0, p1, 7.0 * b.k_bone)
            if sl is not None:
                v.paint(sl, (d2 < 1) & (v.org[sl] != 0), bone, "cortical_bone")
                v.paint(sl, (d2 < 0.45) & (v.org[sl] == bone), bone, "trabecular_bone")
            sc = np.array([sign * 0.6 * float(cb_[0][0]), -float(cb_[3][0]) - 14.0 * b.k, self.zw(0.225 * H)])
            sl, r2 = ellipsoid(v, rng, sc, np.array([48.0, 5.0, 72.0]) * b.k_bone, rot_z(sign * 28.0))
            if sl is not None:
                v.paint(sl, (r2 < 1) & (v.org[sl] != 0) & (v.org[sl] != ORGAN_IDS["lungs"]), bone, "trabecular_bone")

        # Pelvis: iliac wings (shell with angular extent), sacrum, acetabula, pubic and ischial rami.
        t_crest, t_hip = 0.405 * H, self.t_hip
        y_pel = float(self.spine_y(0.42)) + 35.0 * b.k
        y_h = y_pel - 5.0
        x_h = self.x_hip
        r_fh = (23.0 if b.male else 21.0) * b.k_bone
        zs = self.zrange(t_crest / H, (t_hip - 10) / H)
        if zs is not None:
            tt = self.t[zs]
            f = np.clip((tt - t_crest) / (t_hip - 10 - t_crest), 0, 1)
            a_il = (138.0 if not b.male else 132.0) * b.k_bone * (1 - f) + (x_h + 22) * f
            b_il = 78.0 * b.k_bone * (1 - f) + 58.0 * b.k_bone * f
            th_h = math.atan2(x_h, y_h - y_pel)
            th_lo = 1.0 * (1 - f) + (th_h - 0.35) * f
            th_hi = 2.75 * (1 - f) + (th_h + 0.35) * f
            box = v.box((-220, y_pel - 130, -1e9), (220, y_pel + 130, 1e9))
            if box is not None:
                sub = (box[0], box[1], zs)
                xs, ys, _ = v.coords(sub)
                rho = ((xs[:, None] / a_il) ** 2)[:, None, :] + (((ys[:, None] - y_pel) / b_il) ** 2)[None, :, :]
                thick = (1 - 10.0 / a_il) ** 2
                shell = (rho < 1) & (rho >= thick[None, None, :]) & (v.org[sub] != 0)
                ii, jj, kk = np.nonzero(shell)
                th = np.abs(np.arctan2(xs[ii], ys[jj] - y_pel))
                ok = (th >= th_lo[kk]) & (th <= th_hi[kk])
                mid = ok & (rho[ii, jj, kk] < 1 - 0.5 * (1 - thick[kk])) & (rho[ii, jj, kk] > thick[kk] + 0.3 * (1 - thick[kk]))
                o, tis = v.org[sub], v.tis[sub]
                o[ii[ok], jj[ok], kk[ok]] = bone
                tis[ii[ok], jj[ok], kk[ok]] = TISSUE_IDS["cortical_bone"]
                tis[ii[mid], jj[mid], kk[mid]] = TISSUE_IDS["trabecular_bone"]
        zs = self.zrange(self.t_s1 / H, 0.505)
        if zs is not None:
            tt = self.t[zs]
            f = np.clip((tt - self.t_s1) / (0.505 * H - self.t_s1), 0, 1)
            ysac = float(self.spine_y(0.435)) - 5.0 - 0.3 * (tt - self.t_s1)
            asac = (48.0 * (1 - f) + 12.0 * f) * b.k_bone
            bsac = (18.0 * (1 - f) + 8.0 * f) * b.k_bone
            box = v.box((-80, -260, -1e9), (80, 100, 1e9))
            if box is not None:
                sub = (box[0], box[1], zs)
                xs, ys, _ = v.coords(sub)
                rho = ((xs[:, None] / asac) ** 2)[:, None, :] + (((ys[:, None] - ysac) / bsac) ** 2)[None, :, :]
                m = (rho < 1) & (v.org[sub] != 0)
                v.paint(sub, m, bone, "trabecular_bone")
                v.paint(sub, m & (rho > 0.6), bone, "cortical_bone")
        t_pub = 0.495 * H
        y_pub = y_h + 58.0 * b.k
        for sign in (1, -1):
            hc = np.array([sign * x_h, y_h, self.zw(t_hip)])
            sl, r2 = ellipsoid(v, rng, hc, np.full(3, r_fh + 9.0))
            if sl is not None:
                zz = v.coords(sl)[2]
                xs = v.coords(sl)[0]
                inner = r2 * (r_fh + 9.0) ** 2 / (r_fh + 1.5) ** 2
                acet = (r2 < 1) & (inner >= 1) & (zz[None, None, :] > hc[2] - 8) & (np.abs(xs)[:, None, None] > x_h - 25) \
                    & (v.org[sl] != 0)
                v.paint(sl, acet, bone, "cortical_bone")
            tub = (sign * 0.62 * x_h, y_h - 28 * b.k_bone, self.zw(t_hip + 55 * b.k_bone))
            for p0, p1, rr in (
                ((sign * 0.85 * x_h, y_h + 18 * b.k_bone, self.zw(t_hip - 4)), (sign * 10.0, y_pub, self.zw(t_pub)), 8.5),
                ((sign * 0.9 * x_h, y_h - 15 * b.k_bone, self.zw(t_hip + 12)), tub, 11.0),
                (tub, (sign * 12.0, y_pub - 6, self.zw(t_pub + 18 * b.k_bone)), 7.0),
            ):
                sl, d2 = capsule(v, p0, p1, rr * b.k_bone)
                if sl is not None:
                    m = (d2 < 1) & (v.org[sl] != 0)
                    v.paint(sl, m, bone, "cortical_bone")
                    v.paint(sl, m & (d2 < 0.35), bone, "trabecular_bone")
            # Femur: head, neck, greater trochanter, shaft (cortex + yellow marrow).
            gt = np.array([sign * (x_h + 45 * b.k_bone), y_h - 10, self.zw(t_hip + 15 * b.k_bone)])
            sh0 = np.array([sign * (x_h + 40 * b.k_bone), y_h - 5, self.zw(t_hip + 35 * b.k_bone)])
            sh1 = np.array([sign * 0.75 * x_h, y_h, self.zw(t_hip + 0.245 * H)])
            for kind, geo in (("ball", (hc, r_fh)), ("cap", (hc, gt, 14.0 * b.k_bone)), ("ball", (gt, 17.0 * b.k_bone)),
                              ("shaft", (sh0, sh1, 14.0 * b.k_bone))):
                if kind == "ball":
                    sl, d2 = ellipsoid(v, rng, geo[0], np.full(3, geo[1]))
                else:
                    sl, d2 = capsule(v, *geo)
                if sl is None:
                    continue
                m = (d2 < 1) & (v.org[sl] != 0)
                v.paint(sl, m, bone, "cortical_bone")
                inner_t = "yellow_marrow" if kind == "shaft" else "trabecular_bone"
                v.paint(sl, m & (d2 < 0.33 if kind == "shaft" else d2 < 0.6), bone, inner_t)

    def visceral(self) -> None:
        paint_visceral(self.v, self.b, self.cavity)


# --- lesions -------------------------------------------------------------------------------------

_ALLOWED = {
    "node": ("fat", "soft_tissue", "muscle", "bowel", "lesion"),
    "subcutaneous": ("fat", "muscle", "lesion"),
    "muscle": ("muscle", "fat", "lesion"),
    "lung": ("lung", "soft_tissue", "lesion"),
    "liver": ("liver", "lesion"),
    "spleen": ("spleen", "lesion"),
    "bone": ("trabecular_bone", "cortical_bone", "yellow_marrow", "lesion"),
}


def _node_chains(ph: _Phantom) -> dict[str, list[tuple[float, float, float]]]:
    """Lymph-node chains as polylines in world mm."""
    b = ph.b
    H = b.H
    zw = ph.zw
    k = b.k
    ysp = lambda s_: float(ph.spine_y(s_))  # noqa: E731
    a20 = float(b.cavity(np.array([0.21]))[0][0])
    ch: dict[str, list[tuple[float, float, float]]] = {}
    for name, sign in (("R", 1), ("L", -1)):
        ch[f"cervical_{name}"] = [(sign * 32 * k, -5.0, zw(b.t_chin + 5)), (sign * 40 * k, -15.0, zw(0.155 * H))]
        ch[f"supraclavicular_{name}"] = [(sign * 40 * k, 0.0, zw(0.158 * H)), (sign * 70 * k, -5.0, zw(0.168 * H))]
        ch[f"axillary_{name}"] = [(sign * (a20 + 12), -10.0, zw(0.19 * H)), (sign * (a20 + 8), 5.0, zw(0.235 * H))]
        ch[f"hilar_{name}"] = [(sign * 42 * k, ysp(0.24) + 40, zw(0.235 * H)), (sign * 48 * k, ysp(0.26) + 45, zw(0.26 * H))]
        ch[f"iliac_{name}"] = [(sign * 15.0, ysp(0.41) + 25, zw(0.41 * H)), (sign * 70 * k, ysp(0.45) + 40, zw(0.465 * H))]
        ch[f"inguinal_{name}"] = [(sign * (ph.x_hip - 5), -12 + 75 * k, zw(0.49 * H)), (sign * (ph.x_hip - 15), -12 + 70 * k, zw(0.52 * H))]
    ch["mediastinal"] = [(8.0, ysp(0.19) + 35, zw(0.19 * H)), (5.0, ysp(0.23) + 35, zw(0.23 * H)), (0.0, ysp(0.25) + 30, zw(0.25 * H))]
    ch["para_aortic"] = [(float(ph.aorta_x(0.34)) + 22, float(ph.aorta_y(0.34)), zw(0.34 * H)),
                         (float(ph.aorta_x(0.40)) + 22, float(ph.aorta_y(0.40)), zw(0.40 * H))]
    ch["mesenteric"] = [(-30.0, 20.0 * k, zw(0.37 * H)), (30.0, 30.0 * k, zw(0.41 * H))]
    return ch


def lesion_plan(diagnosis: str, rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """(site, diameter_mm, suvmax) for each lesion of a case: the diagnosis-conditioned lesion
    model (:data:`LESION_MODEL`) shared by the phantom and :mod:`synthaug.phantom.lesions`. Sites:
    ``node:<chain>`` (:func:`_node_chains`), ``subcutaneous``, ``muscle``, ``lung``,
    ``lung_primary``, ``liver``, ``spleen``, ``bone``."""
    if diagnosis == "NEGATIVE":
        return []
    mdl = LESION_MODEL[diagnosis]
    plan: list[tuple[str, float, float]] = []

    def size(median: float, sdlog: float = 0.45) -> float:
        return float(np.clip(np.exp(rng.normal(math.log(median), sdlog)), *LESION_DIAMETER_MM))

    def suv(median: float, sdlog: float = 0.45) -> float:
        return float(np.clip(np.exp(rng.normal(math.log(median), sdlog)), *LESION_SUVMAX))

    if diagnosis == "LYMPHOMA":
        n = 1 + int(rng.negative_binomial(2, 2.0 / (2.0 + mdl["mean_count"] - 1)))
        chains = ["cervical_R", "cervical_L", "supraclavicular_R", "supraclavicular_L", "axillary_R", "axillary_L",
                  "mediastinal", "hilar_R", "hilar_L", "para_aortic", "mesenteric", "iliac_R", "iliac_L",
                  "inguinal_R", "inguinal_L"]
        w = np.array([2, 2, 1, 1, 1.5, 1.5, 3, 1, 1, 2, 1, 1, 1, 1, 1.0])
        k_ch = 1 + int(rng.binomial(4, 0.4))
        involved = list(rng.choice(len(chains), size=k_ch, replace=False, p=w / w.sum()))
        extranodal = rng.random() < 0.35
        for _ in range(min(n, 35)):
            r = rng.random()
            if extranodal and r < 0.2:
                site = ["spleen", "spleen", "bone", "liver", "lung"][int(rng.integers(5))]
            else:
                site = "node:" + chains[involved[int(rng.integers(len(involved)))]]
            plan.append((site, size(mdl["median_diameter_mm"]), suv(mdl["median_suvmax"])))
    elif diagnosis == "MELANOMA":
        n = 1 + int(rng.negative_binomial(2, 2.0 / (2.0 + mdl["mean_count"] - 1)))
        sites = ["subcutaneous", "node:axillary_R", "node:axillary_L", "node:inguinal_R", "node:inguinal_L",
                 "node:cervical_R", "node:cervical_L", "node:iliac_R", "lung", "liver", "bone", "muscle", "spleen"]
        w = np.array([30, 6, 6, 6, 6, 3, 3, 2, 15, 10, 8, 4, 3.0])
        for _ in range(min(n, 30)):
            site = sites[int(rng.choice(len(sites), p=w / w.sum()))]
            plan.append((site, size(mdl["median_diameter_mm"]), suv(mdl["median_suvmax"])))
    elif diagnosis == "LUNG_CANCER":
        plan.append(("lung_primary", size(30.0, 0.35), suv(11.0, 0.4)))
        for _ in range(int(rng.poisson(2.0))):
            ch = ["mediastinal", "mediastinal", "hilar_R", "hilar_L", "supraclavicular_R", "supraclavicular_L"]
            plan.append(("node:" + ch[int(rng.integers(len(ch)))], size(15.0), suv(mdl["median_suvmax"])))
        if rng.random() < 0.35:
            sites = ["bone", "liver", "lung", "node:para_aortic"]
            w = np.array([0.4, 0.25, 0.25, 0.1])
            for _ in range(1 + int(rng.poisson(1.5))):
                plan.append((sites[int(rng.choice(4, p=w))], size(14.0), suv(7.0)))
    return plan


def draw_diagnosis(rng: np.random.Generator) -> str:
    """A diagnosis drawn from AutoPET's mix (:data:`synthaug.core.demographics.DIAGNOSIS_MIX`), for a
    case whose diagnosis is unknown."""
    names = list(DIAGNOSIS_MIX)
    p = np.array([DIAGNOSIS_MIX[k] for k in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def lesion_uptake(r2: np.ndarray, background: float, suvmax: float, diameter_mm: float,
                  rng: np.random.Generator) -> np.ndarray:
    """A lesion's uptake above its background (SUV, before the PSF) at normalised radii^2 ``r2``
    (< 1 inside): it peaks at ``suvmax`` in the centre and falls by 40 % to the rim; lesions of
    30 mm and more have a necrotic core in 30 % of cases."""
    contrast = max(suvmax - background, 0.5 * suvmax)
    prof = 1.0 - 0.4 * np.clip(r2, 0, 1)
    if diameter_mm >= 30 and rng.random() < 0.3:  # necrotic core
        prof = np.where(r2 < 0.2, 0.3, prof)
    return contrast * prof


def _place_lesions(ph: _Phantom, plan, pet: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """Rasterise the lesions: write their uptake into ``pet`` and their tissue; return the mask."""
    v = ph.v
    mask = np.zeros(v.shape, np.uint8)
    info: list[dict] = []
    if not plan:
        return mask, info
    chains = _node_chains(ph)
    cache: dict[str, np.ndarray] = {}

    def voxels(site: str) -> np.ndarray:
        if site not in cache:
            if site == "subcutaneous":
                sel = ph.sat_mask & (v.tis == TISSUE_IDS["fat"])
            elif site == "bone":
                sel = v.tis == TISSUE_IDS["trabecular_bone"]
            else:
                sel = v.tis == TISSUE_IDS[site]
            cache[site] = np.flatnonzero(sel)
        return cache[site]

    world = lambda idx: np.array([v.x[idx[0]], v.y[idx[1]], v.z[idx[2]]])  # noqa: E731
    for site, diam, suvmax in plan:
        kind = site.split(":")[0]
        kind = "lung" if kind == "lung_primary" else kind
        centre = None
        for _ in range(12):
            if site.startswith("node:"):
                pts = np.array(chains[site[5:]])
                u = rng.random() * (len(pts) - 1)
                i0 = min(int(u), len(pts) - 2)
                c = pts[i0] + (u - i0) * (pts[i0 + 1] - pts[i0]) + rng.normal(0, 6.0, 3)
            else:
                idx = voxels("lung" if kind == "lung" else kind)
                if idx.size == 0:
                    break
                picks = rng.integers(idx.size, size=3)
                if site == "lung_primary":  # upper-lobe predominance
                    zs = np.unravel_index(idx[picks], v.shape)[2]
                    pick = idx[picks[int(np.argmax(zs))]] if rng.random() < 0.6 else idx[picks[0]]
                else:
                    pick = idx[picks[0]]
                c = world(np.unravel_index(pick, v.shape)) + rng.uniform(-0.5, 0.5, 3) * np.array(v.spacing)
            ijk = np.rint((c - np.array([v.x[0], v.y[0], v.z[0]])) / np.array(v.spacing)).astype(int)
            if np.any(ijk < 0) or np.any(ijk >= np.array(v.shape)):
                continue
            if TISSUES[v.tis[tuple(ijk)]] in _ALLOWED[kind]:
                centre = c
                break
        if centre is None:
            continue
        sl, r2 = lesion_shape(v, rng, centre, diam)
        ijk = tuple(int(q) for q in ijk)
        if sl is None:
            continue
        allowed = np.isin(v.tis[sl], [TISSUE_IDS[t] for t in _ALLOWED[kind]])
        m = (r2 < 1) & allowed
        if not m.any():  # sub-voxel lesion: keep the voxel that holds its centre
            local = tuple(i - s.start for i, s in zip(ijk, sl))
            if all(0 <= q < r2.shape[a] for a, q in enumerate(local)):
                m[local] = True
                r2 = r2.copy()
                r2[local] = 0.0
        if not m.any():
            continue
        bg = pet[sl][m]
        pet[sl][m] = bg + lesion_uptake(r2[m], float(bg.mean()), suvmax, diam, rng)
        v.tis[sl][m] = TISSUE_IDS[lesion_tissue(kind, rng)]
        if kind in ("node", "subcutaneous", "muscle"):
            orgs = v.org[sl]
            orgs[m & (orgs == ORGAN_IDS["body_fat"])] = ORGAN_IDS["soft_tissue"]
        mask[sl][m] = 1
        info.append({"site": site, "centre_mm": [round(float(q), 1) for q in centre], "diameter_mm": round(diam, 1),
                     "suvmax": round(suvmax, 2), "voxels": int(m.sum())})
    return mask, info


# --- public API ------------------------------------------------------------------------------------


def _streams(seed: int, n: int = 5) -> list[np.random.Generator]:
    """Independent child streams of ``seed``: anatomy, tissue values, lesions, texture, noise (the first
    five, as in version 1) and version 2's additions (the sixth)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def lesion_rng(seed: int) -> np.random.Generator:
    """The stream :func:`make_phantom` draws a case's lesions from (after the diagnosis, when it
    draws that too): with it, :func:`synthaug.phantom.lesions.add_lesions` follows the phantom's lesion plan."""
    return _streams(seed)[2]


def make_phantom(demographics: Demographics, *, preset: str = "demo", grid: Grid | None = None, seed: int,
                 version: int = DEFAULT_PHANTOM_VERSION, scanner: ScannerModel | str | None = "default") -> Case:
    """Synthesise one whole-body FDG PET/CT case with organ and lesion labels.

    Args:
        demographics: age, sex, height and weight must be known (else ``ValueError``;
            see :func:`impute_demographics`). An unknown diagnosis is drawn from the
            AutoPET mix (recorded in ``meta["diagnosis"]``).
        preset: grid preset used when ``grid`` is not given (``"demo"``: 128x128x256 at 4 mm).
        grid: any output grid; the body is placed in mm (vertex near the top of the FOV).
        seed: all randomness comes from ``np.random.default_rng(seed)``.
        version: the anatomy (:data:`PHANTOM_VERSIONS`): 2 (default) adds arms, FDG-visible structures and
            the re-checked tissue values; 1 is what the shipped demo weights were trained on, bit for bit.
        scanner: how the PET is imaged: ``"default"`` (version 2: the scanner model's default preset;
            version 1: its own 6 mm PSF and noise), a preset name or :class:`~synthaug.phantom.scanner.ScannerModel`,
            or ``None`` / ``"off"`` (the activity, no blur or noise). Recorded in ``meta["scanner"]``.

    Returns:
        A :class:`Case` with float32 ``ct`` (HU) and ``pet`` (SUV_bw), uint8 ``organs``
        (synthaug organ map) and ``lesions`` (0/1), and provenance in ``meta``.
    """
    d = _check_demographics(demographics)
    seed = check_seed(seed)
    if isinstance(version, bool) or version not in PHANTOM_VERSIONS:
        raise ValueError(f"version={version!r}: choose one of {sorted(PHANTOM_VERSIONS)}")
    v1_imaging = version == 1 and isinstance(scanner, str) and scanner == "default"
    model = None if v1_imaging else get_scanner(scanner)
    out_grid = get_preset(preset).output_grid
    if grid is not None:
        if not isinstance(grid, Grid):
            raise ValueError(f"grid: expected a synthaug Grid, got {type(grid).__name__}")
        out_grid = grid
    r_anat, r_tissue, r_lesion, r_tex, r_noise, r_v2 = _streams(seed, 6)
    diagnosis = d.diagnosis
    drawn = diagnosis is None
    if drawn:
        diagnosis = draw_diagnosis(r_lesion)
    assert diagnosis in DIAGNOSES

    body = BodyPlan(d, r_anat)
    build_grid = _anatomy_grid(out_grid)
    ph = _Phantom(body, build_grid, r_anat)
    for step in (ph.body, ph.trunk_contents, ph.organs, ph.airways, ph.head, ph.skeleton, ph.visceral):
        step()
    v = ph.v
    added = _version2_anatomy(ph, r_v2) if version >= 2 else {}
    table = PET_SUV if version == 1 else PET_SUV_V2
    hu, hu_sd, suv, cv, tissue_summary = tissue_values(body.age, body.bmi, body.male, r_tissue, table)
    if version >= 2:
        tissue_summary["suv"].update(version2_values(hu, hu_sd, suv, cv, body.age, r_v2))

    # PET activity: tissue uptake with smooth heterogeneity, then lesions; then the scanner.
    lo = (-300.0, -300.0, ph.zw(body.s_end * body.H) - 20)
    hi = (300.0, 300.0, ph.z_vertex + 20)
    het = Field(r_tex, lo, hi, 14.0)(v.x, v.y, v.z)
    tis = v.tis
    pet = suv[tis] * np.maximum(1.0 + cv[tis] * het, 0.1)
    plan = lesion_plan(diagnosis, r_lesion)
    lesions, lesion_info = _place_lesions(ph, plan, pet, r_lesion)
    tis = v.tis
    if v1_imaging:
        pet = phantom_v1_pet(pet, v.spacing, body.W, r_noise)
    else:
        pet = apply_scanner(pet, v.spacing, model, body.W, rng=r_noise)
    ct = phantom_ct(hu[tis], hu_sd[tis], v.spacing, body.W, r_tex, r_noise)
    # Store like scanners do: whole HU for CT, 1/512 SUV steps for PET (far below the noise);
    # this also makes the NIfTI files compress 2-3x better.
    np.rint(ct, out=ct)
    pet = np.rint(pet * 512.0) / np.float32(512.0)

    crop = tuple(slice((nb - n) // 2, (nb - n) // 2 + n) for nb, n in zip(build_grid.shape, out_grid.shape))
    ct, pet, organs, lesions = ct[crop], pet[crop], v.org[crop], lesions[crop]

    meta = {
        "source": "phantom",
        "seed": seed,
        "generator": "phantom",
        "phantom_version": PHANTOM_VERSIONS[version],
        "preset": preset if grid is None else None,
        "grid": out_grid.to_dict(),
        "diagnosis": diagnosis,
        "diagnosis_drawn": drawn,
        "body": {"bmi": round(body.bmi, 2), "body_fat_fraction": round(body.body_fat, 3),
                 "sat_l": round(body.sat_l, 2), "vat_l": round(body.vat_l, 2),
                 "vertex_z_mm": round(ph.z_vertex, 1), "scan_end_z_mm": round(ph.zw(body.s_end * body.H), 1),
                 "lean_scale": round(body.k, 3), "sat_thickness_mm": round(body.t0, 1), **added},
        "tissues": tissue_summary,
        "scanner": dict(PHANTOM_V1_IMAGING) if v1_imaging else (None if model is None else model.to_dict()),
        "lesions": lesion_info,
    }
    return Case(ct=np.ascontiguousarray(ct, dtype=np.float32), pet=np.ascontiguousarray(pet, dtype=np.float32),
                organs=np.ascontiguousarray(organs), lesions=np.ascontiguousarray(lesions), affine=out_grid.affine,
                demographics=d, meta=meta)


def _version2_anatomy(ph: _Phantom, rng: np.random.Generator) -> dict:
    """Version 2's additions to the painted body: arms (their fat counts as subcutaneous), then the
    head and urinary structures; returns their summary for ``meta["body"]``."""
    arms = paint_arms(ph.v, _arm_landmarks(ph), rng)
    ph.sat_mask |= arms.fat
    paint_head_structures(ph.v, HeadLandmarks((0.0, float(ph.b.face_c[1]), ph.zw(ph.b.face_c[2])),
                                              tuple(float(q) for q in ph.b.face_semi), ph.b.hs), rng)
    return {"arms": arms.meta, "ureter_filled_share": paint_ureters(ph.v, _urinary_landmarks(ph), rng)}


def _arm_landmarks(ph: _Phantom) -> ArmLandmarks:
    """The body's outer half-width per depth (trunk, neck, head, thighs; right and left) and what else the arms need."""
    b = ph.b
    s = np.arange(-0.05, 0.70, 0.002)
    t = s * b.H
    al, ar, _, bp = b.trunk_lean(s)
    sl, _, sp = b.sat(s)
    trunk = (s >= TRUNK_S[0]) & (s <= min(TRUNK_S[1], b.s_end))
    neck = np.where((t >= b.t_chin - 45) & (s <= 0.175), b.neck()[0] + 0.45 * b.t0, 0.0)
    head = (b.brain_base[0] + 15) * np.sqrt(np.clip(1 - ((t - b.t_brain) / (b.brain_base[2] + 15)) ** 2, 0, 1))
    face = b.face_semi[0] * np.sqrt(np.clip(1 - ((t - b.face_c[2]) / b.face_semi[2]) ** 2, 0, 1))
    thigh = np.where((s >= 0.46) & (s <= b.s_end), ph.x_hip + 10.0 * b.k + b.thigh(s)[0] + b.sat_w["thigh"] * b.t0, 0.0)
    common = np.maximum.reduce([neck, head, face, thigh])
    half = np.stack([np.maximum(np.where(trunk, side + sl, 0.0), common) for side in (ar, al)])
    i30 = int(np.argmin(np.abs(s - 0.30)))
    return ArmLandmarks(height_mm=b.H, weight_kg=b.W, male=b.male, body_fat=b.body_fat, bone_scale=b.k_bone,
                        z_vertex=ph.z_vertex, s_end=b.s_end, s=s, half_width=half, y_back=-float(bp[i30] + sp[i30]),
                        y_head=float(b.y_brain))


def _urinary_landmarks(ph: _Phantom) -> UrinaryLandmarks:
    """Each ureter's path: renal pelvis, the front of the psoas at L4 and at the pelvic brim, the bladder."""
    bc, bsemi, _ = ph.bladder()
    paths = []
    for i, sign in ((0, 1.0), (1, -1.0)):
        pelvis = ph.kidney(i)[2]
        psoas = []
        for s_, out in ((0.40, 1.0), (0.445, 0.5)):
            rp = float(ph.psoas_radius(s_))
            y = float(ph.spine_y(s_)) + 4.0 + rp + (3.0 if out == 1.0 else 10.0)
            psoas.append(np.array([sign * (float(ph.vert_a(s_)) + out * rp + 2.0), y, ph.zw(s_ * ph.b.H)]))
        paths.append(ureter_path(pelvis, psoas, bc, bsemi, sign))
    return UrinaryLandmarks(paths=tuple(paths))


#: The smallest field of view (mm) the anatomy is built on: the whole body, head to thigh.
ANATOMY_FOV_MM = (512.0, 512.0, 1024.0)


def _anatomy_grid(grid: Grid) -> Grid:
    """``grid`` extended (same spacing, same voxel centres) to at least :data:`ANATOMY_FOV_MM`.

    The body is always built whole and the requested grid is cropped from its centre, so a
    small field of view (e.g. an abdominal CT grid) shows the mid-trunk instead of failing.
    """
    shape = []
    for n, sp, fov in zip(grid.shape, grid.spacing, ANATOMY_FOV_MM):
        if n * sp >= fov:
            shape.append(n)
            continue
        m = int(math.ceil(fov / sp))
        m += (m - n) % 2  # keep voxel centres aligned with the requested grid
        shape.append(m)
    return grid if tuple(shape) == grid.shape else Grid(tuple(shape), grid.spacing)
