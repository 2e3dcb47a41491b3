"""The phantom's grid-free anatomy: one person's body plan (sizes, composition, shape jitter) in mm,
drawn from the demographics before anything is painted, and the landmarks that follow from it alone
(the spine's centreline, the diaphragm's domes) or from it and the grid (where the body sits).

Depths are measured below the vertex, ``t`` in mm or ``s = t / height``; the knot tables below are
the reference adult (male, 178 cm, 78 kg) along ``s``. Sources and limits: ``docs/phantom.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.demographics import Demographics
from .shapes import Vol, superellipse_area

# Reference adult (male, 178 cm, 78 kg) knot tables along s = depth below vertex / height.
_TS = np.array([0.145, 0.155, 0.170, 0.188, 0.21, 0.25, 0.30, 0.35, 0.40, 0.44, 0.47, 0.50, 0.52, 0.535])
_TRUNK_A = np.array([0, 62, 128, 165, 162, 155, 152, 147, 140, 148, 160, 155, 130, 0.0])
_TRUNK_BA = np.array([0, 45, 75, 93, 100, 108, 108, 102, 95, 92, 90, 85, 60, 0.0])
_TRUNK_BP = np.array([0, 62, 84, 96, 100, 102, 100, 98, 95, 100, 108, 105, 85, 0.0])
_FEMALE_A = np.array([1, .9, .88, .88, .9, .93, .93, .92, .92, .98, 1.03, 1.04, 1.02, 1.0])
_FEMALE_B = np.array([1, .95, .94, .94, .94, .94, .94, .94, .94, .96, 1.0, 1.02, 1.0, 1.0])
_WS = np.array([0.16, 0.185, 0.21, 0.25, 0.30, 0.36, 0.40, 0.44, 0.47, 0.50, 0.52])
_WALL_LAT = np.array([80, 65, 38, 26, 22, 24, 28, 40, 60, 80, 85.0])
_WALL_ANT = np.array([45, 40, 30, 25, 20, 14, 14, 15, 18, 25, 30.0])
_WALL_POST = np.array([55, 45, 38, 35, 35, 38, 42, 55, 70, 70, 70.0])
_SATS = np.array([0.14, 0.17, 0.22, 0.30, 0.36, 0.40, 0.44, 0.48, 0.53])
_SAT_W = {
    "M": {"ant": [0.5, 0.6, 0.7, 0.9, 1.5, 1.7, 1.4, 1.0, 0.9], "post": [0.6, 0.7, 0.8, 0.9, 1.1, 1.2, 1.1, 1.0, 0.9],
          "lat": [0.4, 0.5, 0.6, 0.8, 1.3, 1.5, 1.2, 0.9, 0.8], "thigh": 0.9},
    "F": {"ant": [0.5, 0.6, 0.8, 0.9, 1.3, 1.5, 1.4, 1.2, 1.2], "post": [0.6, 0.7, 0.9, 1.0, 1.1, 1.3, 1.6, 1.8, 1.4],
          "lat": [0.4, 0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 1.8, 1.5], "thigh": 1.5},
}
_SPINE_S = np.array([0.075, 0.10, 0.13, 0.15, 0.20, 0.25, 0.30, 0.36, 0.40, 0.435, 0.46, 0.50])
_SPINE_Y = np.array([-25, -22, -26, -38, -50, -50, -45, -28, -18, -22, -45, -62.0])
_VERT_S = np.array([0.08, 0.15, 0.22, 0.30, 0.36, 0.40, 0.435])
_VERT_A = np.array([10, 13, 15, 18, 21, 24, 25.0])
_VERT_B = np.array([8, 11, 13, 14, 15, 16, 17.0])
#: Superellipse exponent of the trunk's cross-section (outline, cavity, rib cage).
TRUNK_P = 2.4
#: The trunk's extent along s (its profile is zero at both ends).
TRUNK_S = (_TS[0], _TS[-1])
SCAN_END_S = 0.545  # scan ends at the upper thigh (~0.545 x height below the vertex)
#: Phantom version 3's scan end (fraction of height below the vertex): drawn per case in
#: ``SCAN_END_S_V3 +- SCAN_END_JITTER_V3``, from the upper to the middle of the thigh, as whole-body
#: protocols ("skull base or vertex to mid-thigh") end.
SCAN_END_S_V3 = 0.575
SCAN_END_JITTER_V3 = 0.02
#: Segment masses as fractions of body mass (de Leva, J Biomech 1996): head with neck plus trunk, and
#: one thigh (hip to knee joint centre).
HEAD_TRUNK_MASS = {"M": 0.0694 + 0.4346, "F": 0.0668 + 0.4257}
THIGH_MASS = {"M": 0.1416, "F": 0.1478}
#: Hip and knee joint centres below the vertex as fractions of height (Drillis & Contini 1966: 0.530 H
#: and 0.285 H above the floor), and the thigh's distal over proximal radius (a frustum).
HIP_S, KNEE_S, THIGH_TAPER = 0.470, 0.715, 0.6
#: Functional residual capacity (l) by sex: (per cm of height, per year of age, intercept) (Crapo et al.,
#: Bull Eur Physiopathol Respir 1982, upright); supine it is about a fifth smaller, and breathing freely
#: the lungs hold on average half a tidal volume (0.5 l) more.
FRC_L = {"M": (0.0472, 0.009, -5.29), "F": (0.0360, 0.0031, -3.182)}
SUPINE_FRC, HALF_TIDAL_L = 0.8, 0.25


def fov_mass_fraction(s_end: float, male: bool) -> float:
    """Share of body mass from the vertex down to ``s_end`` x height, arms excluded: head, neck and
    trunk, and both thighs' proximal part (each a frustum tapering to :data:`THIGH_TAPER` at the knee).
    At version 1 and 2's scan end (0.545) it is 0.62 for men, the constant those versions use."""
    sex = "M" if male else "F"
    u = float(np.clip((s_end - HIP_S) / (KNEE_S - HIP_S), 0.0, 1.0))
    q = 1.0 - (1.0 - THIGH_TAPER) * u
    thigh_share = (1.0 - q ** 3) / (1.0 - THIGH_TAPER ** 3)
    return HEAD_TRUNK_MASS[sex] + 2.0 * THIGH_MASS[sex] * thigh_share


def lung_air_l(height_cm: float, age: float, male: bool) -> float:
    """Air in the lungs of a person lying on a scanner's table, breathing freely (l): the supine
    functional residual capacity plus half a tidal volume. Air has volume but no mass, so a body
    sized from its weight alone lacks it."""
    a, b, c = FRC_L["M" if male else "F"]
    return max(a * height_cm + b * age + c, 1.0) * SUPINE_FRC + HALF_TIDAL_L


class BodyPlan:
    """All anatomical parameters of one person, in mm, drawn before any rasterisation."""

    def __init__(self, d: Demographics, rng: np.random.Generator, *, version: int = 1) -> None:
        """``version``: the phantom version whose sizing to use; 3 sizes the body to what lies in its
        field of view (:func:`fov_mass_fraction`, :func:`lung_air_l`) and ends the scan between upper and
        mid-thigh;
        1 and 2 share the original plan, bit for bit."""
        self.d = d
        male = d.sex == "M"
        self.male = male
        H = d.height_cm * 10.0
        W = d.weight_kg
        age = float(d.age)
        self.H, self.W, self.age = H, W, age
        self.bmi = W / (H / 1000.0) ** 2
        # Body composition: Deurenberg (1991) body-fat %, visceral share by sex and age.
        bf = (1.2 * self.bmi + 0.23 * age - 10.8 * male - 5.4) / 100.0
        self.body_fat = float(np.clip(bf * math.exp(rng.normal(0, 0.06)), 0.05, 0.60))
        fm = W * self.body_fat
        vat_frac = (0.13 + 0.0025 * (age - 45)) if male else (0.06 + 0.002 * (age - 45))
        vat_frac = float(np.clip(vat_frac * math.exp(rng.normal(0, 0.25)), 0.02, 0.35))
        self.vat_l = fm * vat_frac / 0.9
        self.sat_l = fm * (1 - vat_frac) / 0.9
        density = 1.0 / (self.body_fat / 0.9 + (1 - self.body_fat) / 1.1)
        self.bsa = math.sqrt(d.height_cm * W / 3600.0)  # Mosteller
        self.k_len = H / 1780.0
        self.k_bone = (H / 1780.0) ** 0.8 * (1.0 if male else 0.93)
        self.muscle_f = (1.0 if male else 0.85) * float(np.clip(1 - 0.004 * max(age - 40, 0), 0.75, 1.0))
        self.sat_w = _SAT_W["M" if male else "F"]

        # Random shape jitter of the trunk profile: smooth functions of s.
        self._jit = [self._smooth_1d(rng, 0.035) for _ in range(3)]
        self.trunk_scale = (math.exp(rng.normal(0, 0.03)), math.exp(rng.normal(0, 0.04)))  # (a, b)
        self.asym = rng.normal(0, 0.015)

        # Placement: vertex near the top of the field of view, scan ends at the upper (version 3: to mid-) thigh.
        self.vertex_margin = float(rng.uniform(8.0, 24.0))
        jitter = float(rng.uniform(-0.01, 0.01))
        if version >= 3:
            self.s_end = SCAN_END_S_V3 + jitter * (SCAN_END_JITTER_V3 / 0.01)
            self.target_volume_l = (fov_mass_fraction(self.s_end, male) * W / density
                                    + lung_air_l(d.height_cm, age, male))
        else:
            self.s_end = SCAN_END_S + jitter
            self.target_volume_l = 0.62 * W / density  # head..upper thigh, no arms (~62 % of mass)

        # Head (sizes in mm, weakly dependent on height).
        hs = (H / 1780.0) ** 0.3 * (1.0 if male else 0.94) * math.exp(rng.normal(0, 0.03))
        self.hs = hs
        atrophy = 1.0 - 0.0012 * max(age - 30.0, 0.0)
        self.brain_base = np.array([69.0, 85.0, 58.0]) * hs
        self.brain_semi = self.brain_base * atrophy
        self.t_brain = float(self.brain_base[2] + 15.0)
        self.y_brain = -10.0 * hs
        self.face_c = np.array([0.0, self.y_brain + 45 * hs, self.t_brain + 85 * hs])
        self.face_semi = np.array([60.0, 58.0, 68.0]) * hs
        self.t_chin = float(self.face_c[2] + self.face_semi[2])
        self.ventricle_scale = 1.0 + 0.012 * max(age - 30.0, 0.0)

        self._draw_organs(rng)
        self.k, self.t0, self.vat_mm = self._calibrate()

    def _draw_organs(self, rng: np.random.Generator) -> None:
        """Organ scales (linear: body size via BSA, sex, individual variation), positions and contents."""
        male, age = self.male, self.age
        bs = (self.bsa / 1.96) ** (1 / 3)
        self.os = {
            "liver": bs * math.exp(rng.normal(0, 0.05)),
            "spleen": bs * math.exp(rng.normal(0, 0.08)),
            "kidney": bs * math.exp(rng.normal(0, 0.05)),
            "heart": bs * (1.0 if male else 0.92) * math.exp(rng.normal(0, 0.05)),
            "stomach": bs * math.exp(rng.normal(0, 0.1)),
        }
        self.bladder_ml = float(np.clip(np.exp(rng.normal(math.log(180.0), 0.5)), 60.0, 600.0))
        self.aorta_r = (10.5 + 0.06 * (age - 50)) * (self.H / 1780.0) ** 0.5 * (1.0 if male else 0.92)
        self.aorta_r *= math.exp(rng.normal(0, 0.06))
        self.dome_jitter = rng.normal(0, 0.006)
        self.organ_jitter = rng.normal(0, 1.0, size=(8, 3))  # small position jitter (x 6 mm)
        self.heart_axis = np.array([-0.6, 0.55, -0.45]) + rng.normal(0, 0.08, 3)
        self.breast_ml = 0.0
        if not male:
            self.breast_ml = float(np.clip((150 + 35 * (self.bmi - 20)) * math.exp(rng.normal(0, 0.3)), 80, 1500))
        self.gland_frac = float(np.clip(0.45 - 0.006 * (age - 40) + rng.normal(0, 0.05), 0.1, 0.6))
        self.med_fat = float(np.clip(0.15 + 0.025 * (self.bmi - 20) + 0.003 * (age - 40), 0.05, 0.75))
        self.gas_frac = float(rng.uniform(0.03, 0.10))
        self.scoliosis = rng.normal(0, 3.0, 2)

    @staticmethod
    def _smooth_1d(rng: np.random.Generator, amp: float):
        k = rng.uniform(4.0, 14.0, 3)
        ph = rng.uniform(0, 2 * np.pi, 3)
        a = rng.normal(0, amp / math.sqrt(3), 3)

        def f(s):
            s = np.asarray(s, dtype=np.float64)
            return sum(a[i] * np.sin(2 * np.pi * k[i] * s + ph[i]) for i in range(3))

        return f

    # Trunk profiles ---------------------------------------------------------------------
    def trunk_lean(self, s: np.ndarray, k: float | None = None, vat_mm: float | None = None):
        """Lean trunk half-axes (a_left, a_right, b_ant, b_post) at depths ``s``."""
        k = self.k if k is None else k
        vat_mm = self.vat_mm if vat_mm is None else vat_mm
        sa = np.interp(s, _TS, _FEMALE_A) if not self.male else 1.0
        sb = np.interp(s, _TS, _FEMALE_B) if not self.male else 1.0
        a = np.interp(s, _TS, _TRUNK_A) * sa * k * self.trunk_scale[0] * (1 + self._jit[0](s))
        ba = np.interp(s, _TS, _TRUNK_BA) * sb * k * self.trunk_scale[1] * (1 + self._jit[1](s))
        bp = np.interp(s, _TS, _TRUNK_BP) * sb * k * self.trunk_scale[1] * (1 + self._jit[2](s))
        w = np.exp(-(((np.asarray(s) - 0.40) / 0.055) ** 2)) * (a > 0)
        ka = 0.5 if self.male else 0.8
        a = a + ka * vat_mm * w
        ba = ba + vat_mm * w
        return a * (1 - self.asym), a * (1 + self.asym), ba, bp

    def sat(self, s: np.ndarray, t0: float | None = None):
        """Subcutaneous fat thickness (lateral, anterior, posterior) in mm."""
        t0 = self.t0 if t0 is None else t0
        return (np.interp(s, _SATS, self.sat_w["lat"]) * t0, np.interp(s, _SATS, self.sat_w["ant"]) * t0,
                np.interp(s, _SATS, self.sat_w["post"]) * t0)

    def walls(self, s: np.ndarray, k: float | None = None):
        k = (self.k if k is None else k) * self.muscle_f
        return (np.interp(s, _WS, _WALL_LAT) * k, np.interp(s, _WS, _WALL_ANT) * k, np.interp(s, _WS, _WALL_POST) * k)

    def cavity(self, s: np.ndarray, vat: bool = True):
        """Body-cavity half-axes (a_left, a_right, b_ant, b_post) with dome-shaped ends.

        ``vat=False`` gives the cavity without the visceral-fat expansion (organ frame).
        """
        al, ar, ba, bp = self.trunk_lean(s, vat_mm=None if vat else 0.0)
        wl, wa, wp = self.walls(s)
        s = np.asarray(s)
        cap = np.sqrt(np.clip((s - 0.163) / 0.025, 0, 1) * np.clip((0.517 - s) / 0.03, 0, 1))
        return (np.maximum(al - wl, 0) * cap, np.maximum(ar - wl, 0) * cap, np.maximum(ba - wa, 0) * cap,
                np.maximum(bp - wp, 0) * cap)

    def thigh(self, s: np.ndarray, k: float | None = None):
        """Lean thigh half-axes (a, b) and centre |x| for s past the hips."""
        k = self.k if k is None else k
        taper = 1.0 - 0.08 * np.clip((np.asarray(s) - 0.50) / 0.06, 0, 1)
        return 62.0 * k * taper * self.muscle_f ** 0.5, 66.0 * k * taper * self.muscle_f ** 0.5

    def neck(self, k: float | None = None):
        k = self.k if k is None else k
        f = (1.0 if self.male else 0.88) * math.sqrt(k)
        return 56.0 * f, 58.0 * f

    def _volume_l(self, s: np.ndarray, k: float, t0: float, vat_mm: float) -> tuple[float, float, float]:
        """(total, SAT, VAT) modelled volumes in litres over the depths ``s`` for the given scale parameters."""
        ds = (s[1] - s[0]) * self.H
        al, ar, ba, bp = self.trunk_lean(s, k, vat_mm)
        al0, ar0, ba0, bp0 = self.trunk_lean(s, k, 0.0)
        sl, sa, sp = self.sat(s, t0)
        lean = superellipse_area(al, ar, ba, bp, TRUNK_P)
        lean0 = superellipse_area(al0, ar0, ba0, bp0, TRUNK_P)
        outer = superellipse_area(al + sl, ar + sl, ba + sa, bp + sp, TRUNK_P) * (al > 0)
        na, nb = self.neck(k)
        tn = 0.45 * t0
        neck_in = (s * self.H > self.t_chin - 40) & (s < 0.17)
        neck_area = np.pi * (na + tn) * (nb + tn) * neck_in
        ta, tb = self.thigh(s, k)
        tt = self.sat_w["thigh"] * t0
        legs = (s > 0.50) & (s < self.s_end)
        leg_area = 2 * np.pi * (ta + tt) * (tb + tt) * legs
        leg_lean = 2 * np.pi * ta * tb * legs
        total = np.maximum(outer, neck_area) + leg_area * (outer < leg_area)
        head = 4.0 / 3.0 * np.pi * np.prod(self.brain_base + 15.0) * 0.8 + 4.0 / 3.0 * np.pi * np.prod(self.face_semi) * 0.5
        v_total = (total.sum() * ds + head) / 1e6
        v_sat = ((outer - lean).sum() + (leg_area - leg_lean).sum()) * ds / 1e6
        v_vat = (lean - lean0).sum() * ds / 1e6
        return float(v_total), float(v_sat), float(v_vat)

    def _calibrate(self) -> tuple[float, float, float]:
        """Solve lean scale, SAT thickness and VAT expansion so the volumes match the weight."""
        s = np.arange(0.13, self.s_end, 0.002)
        k_lo, k_hi = 0.55, 1.8
        for _ in range(30):
            k = 0.5 * (k_lo + k_hi)
            t0, vat = 10.0, 10.0
            for _ in range(4):
                _, v_sat, v_vat = self._volume_l(s, k, t0, vat)
                t0 = float(np.clip(t0 * (0.6 * self.sat_l) / max(v_sat, 1e-3), 1.0, 120.0))
                vat = float(np.clip(vat * self.vat_l / max(v_vat, 1e-3), 0.0, 150.0))
            v, _, _ = self._volume_l(s, k, t0, vat)
            if v > self.target_volume_l:
                k_hi = k
            else:
                k_lo = k
        return k, t0, vat


# --- landmarks that follow from the body plan ------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where the body sits on the grid: the vertex's world z (mm) and, per slice, the depth below it
    (``t``, mm) and that depth as a share of the height (``s``)."""

    z_vertex: float
    t: np.ndarray
    s: np.ndarray

    def zw(self, t_mm: float) -> float:
        """World z of a depth below the vertex."""
        return self.z_vertex - t_mm

    def zrange(self, s0: float, s1: float) -> slice | None:
        """The slices whose s lies in [s0, s1], or None."""
        idx = np.nonzero((self.s >= s0) & (self.s <= s1))[0]
        return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else None


def place_body(vol: Vol, body: BodyPlan) -> Placement:
    """The vertex ``body.vertex_margin`` below the top of the field of view."""
    z_top = vol.z[-1] + vol.spacing[2] / 2.0
    z_vertex = z_top - body.vertex_margin
    t = (z_vertex - vol.z).astype(np.float64)  # depth below the vertex per slice (mm)
    return Placement(z_vertex=z_vertex, t=t, s=t / body.H)


@dataclass(frozen=True)
class SpineLandmarks:
    """The spine's centreline (world x, y in mm) and vertebral-body half-axes along s."""

    lean_scale: float   # the trunk's lean size factor (1 for the reference man)
    bone_scale: float   # skeletal size factor
    scoliosis: float    # sideways bow of the thoracolumbar spine (mm)

    def y(self, s):
        return np.interp(s, _SPINE_S, _SPINE_Y) * self.lean_scale

    def x(self, s):
        return self.scoliosis * np.sin(np.pi * np.clip((np.asarray(s) - 0.15) / 0.29, 0, 1))

    def vert_a(self, s):
        """Vertebral body half-width (mm)."""
        return np.interp(s, _VERT_S, _VERT_A) * self.bone_scale

    def vert_b(self, s):
        """Vertebral body half-depth (mm)."""
        return np.interp(s, _VERT_S, _VERT_B) * self.bone_scale


def spine_landmarks(body: BodyPlan) -> SpineLandmarks:
    return SpineLandmarks(lean_scale=body.k, bone_scale=body.k_bone, scoliosis=body.scoliosis[0])


@dataclass(frozen=True)
class DiaphragmLandmarks:
    """The diaphragm's two domes (paraboloids): each apex's depth below the vertex (mm), world x and
    the shared world y (mm), and their curvature (1/mm). Lungs lie above, the abdomen below."""

    t_right: float
    t_left: float
    x_right: float
    x_left: float
    y: float
    curvature: float

    def depth(self, x, y):
        """Depth below the vertex (mm) of the diaphragm over world ``x`` (column) and ``y`` (row)."""
        return np.minimum(self.t_right + self.curvature * ((x - self.x_right) ** 2 + (y - self.y) ** 2),
                          self.t_left + self.curvature * ((x - self.x_left) ** 2 + (y - self.y) ** 2))


def diaphragm_landmarks(body: BodyPlan) -> DiaphragmLandmarks:
    """The right dome at 0.293 H (jittered), the left 1.2 % of the height lower."""
    s0 = np.array([0.30])
    a0 = float(body.cavity(s0)[0][0])
    bp0 = float(body.cavity(s0)[3][0])
    t_right = (0.293 + body.dome_jitter) * body.H
    return DiaphragmLandmarks(t_right=t_right, t_left=t_right + 0.012 * body.H, x_right=0.4 * a0, x_left=-0.45 * a0,
                              y=0.1 * bp0, curvature=0.05 * body.H / (0.6 * a0) ** 2 / 2.0)
