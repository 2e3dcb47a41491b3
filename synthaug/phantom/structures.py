"""FDG-visible structures of phantom version 2 that version 1 lacks or merges: palatine tonsils
(their own, hotter tissue instead of the salivary glands'), submandibular glands and the ureters.

Each painter takes a small frozen landmark record (world mm) and paints into the volume where the
tissue allows it; :func:`synthaug.phantom.tissues.version2_values` draws the new tissues' per-case HU and SUV (sources in
:mod:`synthaug.phantom.tables` and ``docs/phantom.md``). Myocardium (varying case to case), vertebral
and pelvic marrow, bowel, renal pelvis, psoas and paraspinal muscles exist since version 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.labels import ORGAN_IDS
from .shapes import Vol, capsule, ellipsoid
from .tables import TISSUE_IDS

#: Ureter radius (mm): lumen and wall, 3-4 mm wide when urine fills it.
URETER_RADIUS_MM = 3.0


@dataclass(frozen=True)
class HeadLandmarks:
    """The face ellipsoid (centre in world mm, semi-axes) and the head's size factor."""

    face_centre: tuple[float, float, float]
    face_semi: tuple[float, float, float]
    head_scale: float


@dataclass(frozen=True)
class UrinaryLandmarks:
    """Each side's ureter path (right, left), renal pelvis to bladder, as world points (mm)."""

    paths: tuple[tuple[tuple[float, float, float], ...], ...]


def paint_head_structures(vol: Vol, lm: HeadLandmarks, rng: np.random.Generator) -> None:
    """Palatine tonsils (the "gland" ellipsoids version 1 puts beside the oropharynx become "tonsil")
    and the submandibular glands, medial to the mandible at its lower border."""
    fc, fs, hs = np.asarray(lm.face_centre), np.asarray(lm.face_semi), lm.head_scale
    chin_z = fc[2] - fs[2]
    soft = (TISSUE_IDS["soft_tissue"], TISSUE_IDS["muscle"])
    for sign in (1, -1):
        tc = np.array([sign * 13 * hs, fc[1] - 18 * hs, fc[2] - 0.35 * fs[2]])
        sl, r2 = ellipsoid(vol, rng, tc, np.array([7, 8, 10.0]) * hs)
        if sl is not None:
            vol.paint(sl, (r2 < 1) & (vol.tis[sl] == TISSUE_IDS["gland"]), None, "tonsil")
        gc = np.array([sign * 30 * hs, fc[1] - 10 * hs, chin_z + 10 * hs])
        sl, r2 = ellipsoid(vol, rng, gc, np.array([10, 13, 9.0]) * hs, deform=1.0)
        if sl is not None:
            m = (r2 < 1) & (vol.org[sl] == ORGAN_IDS["soft_tissue"]) & np.isin(vol.tis[sl], soft)
            vol.paint(sl, m, None, "gland")


def paint_ureters(vol: Vol, lm: UrinaryLandmarks, rng: np.random.Generator) -> list[float]:
    """Each ureter filled with urine over a random share (0.3-1, peristalsis: a stated choice) of its
    length from the renal pelvis, through fat, bowel and muscle only; returns the shares."""
    allowed = [TISSUE_IDS[t] for t in ("bowel", "fat", "muscle", "soft_tissue")]
    shares = []
    for path in lm.paths:
        pts = np.asarray(path, dtype=np.float64)
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        share = float(rng.uniform(0.3, 1.0))
        shares.append(round(share, 3))
        left = share * float(seg.sum())
        for p0, p1, n in zip(pts[:-1], pts[1:], seg):
            if left <= 0:
                break
            end = p0 + (p1 - p0) * min(1.0, left / max(n, 1e-6))
            left -= n
            sl, d2 = capsule(vol, p0, end, URETER_RADIUS_MM)
            if sl is None:
                continue
            m = (d2 < 1) & np.isin(vol.tis[sl], allowed) & np.isin(vol.org[sl], (ORGAN_IDS["soft_tissue"],
                                                                                  ORGAN_IDS["body_fat"]))
            vol.paint(sl, m, ORGAN_IDS["soft_tissue"], "ureter")
    return shares


def ureter_path(pelvis: np.ndarray, psoas: list[np.ndarray], bladder_centre: np.ndarray, bladder_semi: np.ndarray,
                sign: float) -> tuple[tuple[float, float, float], ...]:
    """A ureter from its renal pelvis along the front of the psoas to the bladder's posterolateral base."""
    entry = bladder_centre + np.array([sign * 0.55 * bladder_semi[0], -0.75 * bladder_semi[1], -0.2 * bladder_semi[2]])
    pts = [pelvis, *psoas, entry]
    return tuple(tuple(float(q) for q in p) for p in pts)

