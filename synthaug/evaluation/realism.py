"""Realism measures that need no phantom: what any whole-body FDG PET in SUV shows.

For one PET (with or without organ labels, CT and lesion mask), :func:`measure` reports

* **body**: the outline (CT > -500 HU when a CT is given, else PET > 0.1 SUV; small specks dropped,
  holes filled slice by slice), its SUV median / 90th / 99th percentile, volume (l) and length (m)
  in the field of view, and the length over which arms are seen apart from it (:func:`arms_length_mm`);
* **liver VOI**: a 3 cm sphere (PERCIST's reference region; Wahl et al., J Nucl Med 2009) at the
  deepest point of the liver, its SUVmean, sd and CoV. The liver is organ 7 of the synthaug map when
  labels are given; else :func:`find_liver` looks for it (the largest homogeneous region of moderate
  uptake in the patient's right half);
* **texture**: the FWHM (mm, per axis) of the Gaussian kernel that would colour white noise into the
  liver's lag-1 autocorrelation (:func:`texture_fwhm`), comparable with a scanner model's ``noise_fwhm_mm``;
* **lesions** (when a mask is given): per connected lesion SUVmax, SUVmean, SUVmean/SUVmax, volume,
  the median SUV of a shell 1-3 voxels outside, and the 10-90 % edge width along the outward normal
  (:func:`edge_width`).

Arrays are reoriented to RAS first (so "right" is the patient's right whatever the file's axis order).
Definitions and the measured table: ``docs/realism.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import erfc

from ..core.geometry import BODY_HU, spacing_of, to_ras, to_ras_affine
from ..core.labels import ORGAN_IDS

__all__ = [
    "LIVER_SUV_RANGE",
    "MIN_ARM_CM2",
    "arms_length_mm",
    "body_outline",
    "edge_profile",
    "edge_width",
    "find_liver",
    "lesion_measures",
    "lesion_measures_in_ras",
    "measure",
    "markdown_table",
    "measure_files",
    "sphere_mask",
    "texture_fwhm",
    "voi_stats",
]

FWHM_PER_SD = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: 10-90 % distance of a Gaussian-blurred step, in units of the Gaussian's sd (2 x 1.2816).
EDGE_10_90_PER_SD = 2.0 * 1.2815515655446004
#: Body outline thresholds.
BODY_SUV = 0.1
#: Connected parts smaller than this (ml) are not body.
MIN_PART_ML = 100.0
#: Smallest cross-section (cm²) of a separate body part in an axial slice that counts towards the arms.
MIN_ARM_CM2 = 10.0
#: Smoothed SUV a liver candidate must have: normal liver SUVmean 1.85 ± 0.43 (Liu et al., Iran J Radiol 2019).
LIVER_SUV_RANGE = (1.0, 4.0)
#: Largest local CoV (sd / mean in a 15 mm FWHM window) of a liver candidate.
LIVER_MAX_LOCAL_COV = 0.3
LIVER_ID = ORGAN_IDS["liver"]


# --- geometry -----------------------------------------------------------------------------------


def _sigma(fwhm_mm: float, spacing: Sequence[float]) -> list[float]:
    return [fwhm_mm / FWHM_PER_SD / s for s in spacing]


def sphere_mask(shape: Sequence[int], spacing: Sequence[float], centre: Sequence[float], radius_mm: float) -> np.ndarray:
    """Voxels whose centres lie within ``radius_mm`` of ``centre`` (voxel indices)."""
    grids = np.ogrid[tuple(slice(0, int(n)) for n in shape)]
    r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    return r2 <= radius_mm**2


def _largest_parts(mask: np.ndarray, spacing: Sequence[float], min_ml: float) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    ml = ndimage.sum(mask, lab, np.arange(1, n + 1)) * float(np.prod(spacing)) / 1000.0
    keep = np.zeros(n + 1, bool)
    keep[1:] = ml >= min_ml
    if not keep.any():
        keep[1 + int(np.argmax(ml))] = True
    return keep[lab]


def arms_length_mm(body: np.ndarray, spacing: Sequence[float], min_cm2: float = MIN_ARM_CM2) -> float:
    """Body length (mm) over which an axial slice of the outline holds three or more separate parts of at
    least ``min_cm2`` each: a torso or head with an arm on each side (arms down beside the trunk, or up
    beside the head). Legs alone give two parts, an arm that touches the trunk joins it, so this is a
    lower bound on the arms' length in the field; 0 means no arms seen apart from the body."""
    voxel_cm2 = float(spacing[0]) * float(spacing[1]) / 100.0
    slices = 0
    for k in range(body.shape[2]):
        lab, n = ndimage.label(body[:, :, k])
        if n >= 3:
            sizes = ndimage.sum(body[:, :, k], lab, np.arange(1, n + 1)) * voxel_cm2
            slices += int((sizes >= min_cm2).sum() >= 3)
    return slices * float(spacing[2])


def body_outline(pet: np.ndarray | None, spacing: Sequence[float], ct: np.ndarray | None = None) -> np.ndarray:
    """The body: CT > -500 HU when ``ct`` is given, else PET > 0.1 SUV; parts under 100 ml dropped
    (a speck of noise is not body, an arm is), holes filled in each axial slice."""
    if ct is not None:
        mask = np.asarray(ct) > BODY_HU
    elif pet is not None:
        mask = np.asarray(pet) > BODY_SUV
    else:
        raise ValueError("pet/ct: body_outline needs a PET or a CT")
    mask = _largest_parts(mask, spacing, MIN_PART_ML)
    out = np.empty_like(mask)
    for k in range(mask.shape[2]):
        out[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return out


# --- liver ----------------------------------------------------------------------------------------


def find_liver(pet: np.ndarray, spacing: Sequence[float], body: np.ndarray) -> np.ndarray | None:
    """A liver region found without labels (RAS arrays), or ``None``.

    Heuristic: smooth the PET with a 15 mm FWHM Gaussian; keep body voxels whose smoothed SUV is in
    :data:`LIVER_SUV_RANGE` and whose local CoV is at most :data:`LIVER_MAX_LOCAL_COV` (the liver is the
    largest organ with homogeneous, moderate uptake); keep the patient's right half (RAS +x beyond the
    body's centre); return the largest connected region. Bone marrow, blood pool or muscle can join
    it, but the VOI goes to its deepest point, which in a whole-body scan is inside the liver.
    """
    x = np.asarray(pet, dtype=np.float64)
    sig = _sigma(15.0, spacing)
    mean = ndimage.gaussian_filter(x, sig, mode="nearest")
    sq = ndimage.gaussian_filter(x * x, sig, mode="nearest")
    local_sd = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    lo, hi = LIVER_SUV_RANGE
    cand = body & (mean >= lo) & (mean <= hi) & (local_sd <= LIVER_MAX_LOCAL_COV * np.maximum(mean, 1e-6))
    xs = np.nonzero(body)[0]
    if xs.size == 0:
        return None
    cand[: int(math.ceil(float(xs.mean())))] = False
    lab, n = ndimage.label(cand)
    if n == 0:
        return None
    sizes = ndimage.sum(cand, lab, np.arange(1, n + 1))
    return lab == 1 + int(np.argmax(sizes))


def _deepest_point(region: np.ndarray, spacing: Sequence[float]) -> tuple[tuple[int, int, int], float]:
    depth = ndimage.distance_transform_edt(region, sampling=spacing)
    idx = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return tuple(int(i) for i in idx), float(depth[idx])


def voi_stats(pet: np.ndarray, mask: np.ndarray) -> dict:
    """SUVmean, sd (n - 1), CoV and voxel count of ``pet`` in ``mask``."""
    v = np.asarray(pet)[mask].astype(np.float64)
    if v.size == 0:
        return {"suv_mean": None, "sd": None, "cov": None, "voxels": 0}
    m = float(v.mean())
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"suv_mean": m, "sd": sd, "cov": sd / m if m > 0 else None, "voxels": int(v.size)}


def texture_fwhm(pet: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> list[float | None]:
    """Per axis, the FWHM (mm) of the Gaussian kernel that colours white noise to the lag-1
    autocorrelation ``r`` measured in ``mask``: ``2.355 * h / sqrt(-4 ln r)`` (0 for white noise).

    The autocorrelation of Gaussian-filtered white noise (kernel sd ``s``) at lag ``h`` is
    ``exp(-h² / 4s²)``. True structure in ``mask`` adds correlation; ``None`` where too few pairs.
    """
    x = np.asarray(pet, dtype=np.float64)
    vals = x[mask]
    if vals.size < 10 or vals.var() <= 0:
        return [None, None, None]
    m, var = vals.mean(), vals.var()
    out: list[float | None] = []
    for ax, h in enumerate(spacing):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax], b[ax] = slice(0, -1), slice(1, None)
        both = mask[tuple(a)] & mask[tuple(b)]
        if both.sum() < 10:
            out.append(None)
            continue
        r = float(((x[tuple(a)][both] - m) * (x[tuple(b)][both] - m)).mean() / var)
        if r <= 0:
            out.append(0.0)
        elif r >= 1:
            out.append(None)
        else:
            out.append(FWHM_PER_SD * h / math.sqrt(-4.0 * math.log(r)))
    return out


# --- lesions ---------------------------------------------------------------------------------------


def _signed_distance(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) to the mask's surface: negative inside, positive outside. The surface is taken half
    the smallest voxel size beyond the outermost voxel centres."""
    half = min(spacing) / 2.0
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing) - half
    inside = ndimage.distance_transform_edt(mask, sampling=spacing) - half
    return np.where(mask, -inside, outside)


def edge_profile(pet: np.ndarray, mask: np.ndarray, spacing: Sequence[float], inner_mm: float = 10.0,
                 outer_mm: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean SUV against signed distance to the lesion surface (bins of half the smallest voxel size)."""
    d = _signed_distance(mask, spacing)
    step = min(spacing) / 2.0
    sel = (d >= -inner_mm) & (d <= outer_mm)
    edges = np.arange(-inner_mm, outer_mm + step, step)
    idx = np.clip(np.digitize(d[sel], edges) - 1, 0, len(edges) - 2)
    n = np.bincount(idx, minlength=len(edges) - 1)
    s = np.bincount(idx, weights=np.asarray(pet)[sel].astype(np.float64), minlength=len(edges) - 1)
    centres = (edges[:-1] + edges[1:]) / 2.0
    ok = n > 0
    return centres[ok], s[ok] / n[ok]


def _edge_model(x: np.ndarray, top: float, bg: float, x0: float, s: float) -> np.ndarray:
    return bg + (top - bg) * 0.5 * erfc((x - x0) / (math.sqrt(2.0) * s))


def edge_width(pet: np.ndarray, mask: np.ndarray, spacing: Sequence[float], inner_mm: float = 10.0,
               outer_mm: float = 20.0) -> float | None:
    """10-90 % edge width (mm) along the outward normal: a blurred step (erf) fitted to the profile of
    :func:`edge_profile` from its highest point inside the lesion outwards; ``None`` if it does not fit.
    For a step blurred by a Gaussian PSF the result is 1.09 x the PSF's FWHM."""
    x, y = edge_profile(pet, mask, spacing, inner_mm, outer_mm)
    inside = x <= 0
    if not inside.any() or x.size < 6:
        return None
    top = int(np.argmax(np.where(inside, y, -np.inf)))
    xs, ys = x[top:], y[top:]
    if xs.size < 5 or ys[0] <= ys[-3:].mean():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, _ = curve_fit(_edge_model, xs, ys, p0=[ys[0], ys[-3:].mean(), 0.0, 3.0], maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    width = EDGE_10_90_PER_SD * abs(float(popt[3]))
    return width if math.isfinite(width) and width < outer_mm + inner_mm else None


def lesion_measures(pet: np.ndarray, lesions: np.ndarray, spacing: Sequence[float], min_voxels: int = 3) -> list[dict]:
    """Per connected lesion (at least ``min_voxels``): SUVmax, SUVmean, their ratio, volume (ml), the median
    SUV of a shell 1-3 voxels outside, and the 10-90 % edge width (mm)."""
    pet = np.asarray(pet)
    lab, n = ndimage.label(np.asarray(lesions) > 0)
    out = []
    vox_ml = float(np.prod(spacing)) / 1000.0
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        pad = tuple(slice(max(s.start - 8, 0), min(s.stop + 8, dim)) for s, dim in zip(sl, lab.shape))
        m = lab[pad] == i
        if int(m.sum()) < min_voxels:
            continue
        p = pet[pad]
        v = p[m].astype(np.float64)
        shell = ndimage.binary_dilation(m, iterations=3) & ~ndimage.binary_dilation(m, iterations=1)
        vmax = float(v.max())
        out.append({"suv_max": vmax, "suv_mean": float(v.mean()), "mean_over_max": float(v.mean()) / vmax if vmax > 0 else None,
                    "volume_ml": float(m.sum()) * vox_ml,
                    "surround_suv": float(np.median(p[shell])) if shell.any() else None,
                    "edge_width_mm": edge_width(p, m, spacing)})
    return out


def lesion_measures_in_ras(pet: np.ndarray, lesions: np.ndarray, affine: np.ndarray, min_voxels: int = 3) -> list[dict]:
    """:func:`lesion_measures` of ``lesions`` on ``pet`` in any orientation: both are reoriented to RAS
    first (``affine`` their voxel-to-world map), as :func:`measure` does, so that edge profiles and the
    shell run along the same axes whatever the file's order."""
    pet_ras, spacing = to_ras(pet, affine)
    return lesion_measures(pet_ras, to_ras(np.asarray(lesions) > 0, affine)[0], spacing, min_voxels)


def _summary(rows: list[dict], keys: Sequence[str]) -> dict:
    out = {"n": len(rows)}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = {"median": float(np.median(vals)), "p25": float(np.percentile(vals, 25)),
                  "p75": float(np.percentile(vals, 75))} if vals else None
    return out


LESION_KEYS = ("suv_max", "suv_mean", "mean_over_max", "volume_ml", "surround_suv", "edge_width_mm")


# --- all together ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ras:
    pet: np.ndarray
    ct: np.ndarray | None
    organs: np.ndarray | None
    lesions: np.ndarray | None
    spacing: tuple[float, float, float]


def _as_ras(pet, affine, ct, organs, lesions) -> _Ras:
    pet = np.asarray(pet)
    if pet.ndim != 3:
        raise ValueError(f"pet: expected a 3D array, got shape {pet.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine: expected 4x4, got {affine.shape}")
    parts = {}
    for name, arr in (("ct", ct), ("organs", organs), ("lesions", lesions)):
        if arr is not None and np.asarray(arr).shape != pet.shape:
            raise ValueError(f"{name}: shape {np.asarray(arr).shape} differs from the PET's {pet.shape}")
        parts[name] = None if arr is None else to_ras_affine(arr, affine)[0]
    pet_ras, aff = to_ras_affine(pet.astype(np.float32, copy=False), affine)
    return _Ras(pet_ras, parts["ct"], parts["organs"], parts["lesions"], spacing_of(aff))


def measure(pet: np.ndarray, affine: np.ndarray, *, ct: np.ndarray | None = None, organs: np.ndarray | None = None,
            lesions: np.ndarray | None = None, voi_radius_mm: float = 15.0, texture_radius_mm: float = 25.0) -> dict:
    """All realism measures of one PET in SUV (see the module docstring); a JSON-ready dict."""
    if not (voi_radius_mm > 0 and texture_radius_mm > 0):
        raise ValueError("voi_radius_mm/texture_radius_mm: must be > 0 mm")
    r = _as_ras(pet, affine, ct, organs, lesions)
    sp, p = r.spacing, r.pet
    body = body_outline(p, sp, r.ct)
    vals = p[body].astype(np.float64)
    area_cm2 = body.sum(axis=(0, 1)) * sp[0] * sp[1] / 100.0
    z_in = np.nonzero(area_cm2 >= 25.0)[0]  # slices with at least 25 cm² of body
    out: dict = {
        "spacing_mm": [round(s, 4) for s in sp],
        "shape": list(p.shape),
        "body": {
            "source": "ct" if r.ct is not None else "pet",
            "suv_median": float(np.median(vals)) if vals.size else None,
            "suv_p90": float(np.percentile(vals, 90)) if vals.size else None,
            "suv_p99": float(np.percentile(vals, 99)) if vals.size else None,
            "volume_l": float(body.sum()) * float(np.prod(sp)) / 1e6,
            "length_m": float(z_in[-1] - z_in[0] + 1) * sp[2] / 1000.0 if z_in.size else 0.0,
            "arms_mm": arms_length_mm(body, sp),
        },
    }
    if r.organs is not None and (r.organs == LIVER_ID).any():
        lab, n = ndimage.label(r.organs == LIVER_ID)
        sizes = ndimage.sum(lab > 0, lab, np.arange(1, n + 1))
        region, method = lab == 1 + int(np.argmax(sizes)), "labels"
    else:
        region, method = find_liver(p, sp, body), "heuristic"
    if region is None:
        out["liver"] = {"method": method, "found": False}
    else:
        centre, depth = _deepest_point(region, sp)
        voi = sphere_mask(p.shape, sp, centre, voi_radius_mm)
        tex = sphere_mask(p.shape, sp, centre, texture_radius_mm) & region
        out["liver"] = {"method": method, "found": True, "centre_voxel_ras": list(centre),
                        "depth_mm": depth, "voi_fits": depth >= voi_radius_mm,
                        "region_ml": float(region.sum()) * float(np.prod(sp)) / 1000.0,
                        **voi_stats(p, voi), "texture_fwhm_mm": texture_fwhm(p, tex, sp)}
    if r.lesions is not None:
        rows = lesion_measures(p, r.lesions, sp)
        out["lesions"] = {"summary": _summary(rows, LESION_KEYS), "per_lesion": rows}
    return out


def measure_files(pet_path: str | Path, *, ct_path: str | Path | None = None, organs_path: str | Path | None = None,
                  lesions_path: str | Path | None = None, **kwargs) -> dict:
    """:func:`measure` on NIfTI files (read with :func:`synthaug.core.io.read_nifti`; all on the PET's grid)."""
    from ..core.io import read_nifti, same_grid

    pet, affine = read_nifti(pet_path, np.float32)
    extra = {}
    for key, path in (("ct", ct_path), ("organs", organs_path), ("lesions", lesions_path)):
        if path is None:
            continue
        arr, aff = read_nifti(path, np.float32 if key == "ct" else None)
        if not same_grid(pet.shape, affine, arr.shape, aff):
            raise ValueError(f"{key}_path: {path} is not on the PET's grid ({arr.shape} vs {pet.shape})")
        extra[key] = arr
    return measure(pet, affine, **extra, **kwargs)


# --- report ----------------------------------------------------------------------------------------------

#: Rows of the markdown table: (label, path into a :func:`measure` result, format).
TABLE_ROWS = (
    ("body SUV median", ("body", "suv_median"), "{:.2f}"),
    ("body SUV p90", ("body", "suv_p90"), "{:.2f}"),
    ("body SUV p99", ("body", "suv_p99"), "{:.2f}"),
    ("body volume (l)", ("body", "volume_l"), "{:.1f}"),
    ("body length in FOV (m)", ("body", "length_m"), "{:.2f}"),
    ("arms seen apart from the body over (mm)", ("body", "arms_mm"), "{:.0f}"),
    ("liver VOI SUVmean", ("liver", "suv_mean"), "{:.2f}"),
    ("liver VOI CoV", ("liver", "cov"), "{:.3f}"),
    ("liver found by", ("liver", "method"), "{}"),
    ("liver texture FWHM x/y/z (mm)", ("liver", "texture_fwhm_mm"), "{}"),
    ("lesions (n)", ("lesions", "summary", "n"), "{}"),
    ("lesion SUVmax (median)", ("lesions", "summary", "suv_max", "median"), "{:.1f}"),
    ("lesion SUVmean (median)", ("lesions", "summary", "suv_mean", "median"), "{:.2f}"),
    ("lesion SUVmean/SUVmax (median)", ("lesions", "summary", "mean_over_max", "median"), "{:.2f}"),
    ("lesion edge 10-90 % (mm, median)", ("lesions", "summary", "edge_width_mm", "median"), "{:.1f}"),
)


def _lookup(d: object, path: Sequence[str]) -> object:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _cell(value: object, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "/".join("-" if v is None else f"{v:.1f}" for v in value)
    return fmt.format(value)


def markdown_table(results: dict[str, dict]) -> str:
    """One column per measured image (``results``: name -> :func:`measure` result), one row per measure."""
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, path, fmt in TABLE_ROWS:
        cells = [_cell(_lookup(results[n], path), fmt) for n in names]
        if all(c == "-" for c in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
