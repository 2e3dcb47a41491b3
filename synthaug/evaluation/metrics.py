"""Per-case measurements for the evaluation: organ volumes and SUVs, body size, lesions.

Every function here works on one :class:`~synthaug.core.case.Case` with vectorised numpy
and scipy.ndimage; the definitions are written out in ``docs/evaluation.md``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..core.case import Case
from ..core.geometry import BODY_HU, axial_axis, body_mask, to_ras
from ..core.labels import ORGAN_IDS, ORGAN_LABELS, ORGAN_PARTS

#: Organs measured (the synthaug organ map without background), in label order.
ORGANS: tuple[str, ...] = tuple(name for i, name in sorted(ORGAN_LABELS.items()) if i != 0)
#: Measurements per organ.
ORGAN_METRICS: tuple[str, ...] = ("volume_ml", "suv_mean", "suv_max", "suv_peak", "ct_median_hu", "main_part_pct")
#: Whole-body measurements (reported under the pseudo-organ ``"body"``).
BODY_METRICS: tuple[str, ...] = ("body_volume_ml", "body_extent_mm", "brain_to_bladder_mm", "body_mass_kg",
                                 "lesion_volume_ml", "lesion_count", "lesion_suv_max", "lesion_suv_mean")
#: The two organs whose centroids' distance along the body axis measures stature where the field of view
#: cannot cut it (:func:`landmark_distance_mm`): both lie inside every whole-body scan, head to thigh.
STATURE_LANDMARKS: tuple[str, str] = ("brain", "urinary_bladder")

#: Volume of the SUVpeak sphere (ml).
SUV_PEAK_VOLUME_ML = 1.0
#: Mass density (g/ml) per synthaug organ, for the body-mass estimate.
TISSUE_DENSITY: dict[str, float] = {
    "body_fat": 0.92,
    "soft_tissue": 1.04,
    "bone": 1.9,
    "brain": 1.04,
    "lungs": 0.3,
    "heart": 1.06,
    "liver": 1.06,
    "spleen": 1.06,
    "kidneys": 1.05,
    "urinary_bladder": 1.0,
    "aorta": 1.06,
}
#: Shape of the memorisation feature volumes (X, Y, Z) after area averaging.
FEATURE_SHAPE = (16, 16, 32)


# --- geometry helpers ----------------------------------------------------------------------


def area_resize(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resize by averaging over (nearly) equal blocks (linear interpolation when upsampling)."""
    out = np.asarray(array, dtype=np.float32)
    for axis, m in enumerate(shape):
        n = out.shape[axis]
        if n == m:
            continue
        if n < m:
            factors = [1.0] * out.ndim
            factors[axis] = m / n
            out = ndimage.zoom(out, factors, order=1, mode="nearest", grid_mode=True)
            continue
        edges = np.linspace(0, n, m + 1).round().astype(int)
        sums = np.add.reduceat(out, edges[:-1], axis=axis)
        size = np.diff(edges).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = sums / size
    return out


# --- masks -----------------------------------------------------------------------------------


def sphere_kernel(spacing, volume_ml: float = SUV_PEAK_VOLUME_ML) -> np.ndarray:
    """Normalised kernel over the voxels whose centres lie in a sphere of ``volume_ml`` (at least the centre)."""
    radius = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    spacing = np.asarray(spacing, dtype=float)
    half = np.floor(radius / spacing).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    kernel = (sum(g**2 for g in grids) <= radius**2 + 1e-9).astype(np.float32)
    return kernel / kernel.sum()


def suv_peak(pet: np.ndarray, mask: np.ndarray, spacing, volume_ml: float = SUV_PEAK_VOLUME_ML) -> float:
    """SUVpeak of one organ: the largest mean SUV over the organ's part of a ``volume_ml`` sphere.

    For every organ voxel the mean is taken over the organ voxels whose centres lie in the
    sphere centred on it (two correlations with the spherical kernel, on the organ's
    bounding box). Only centres whose sphere is at least half inside the organ count; an
    organ too thin for any such centre uses all its voxels. NaN for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return math.nan
    kernel = sphere_kernel(spacing, volume_ml) > 0
    if kernel.size == 1:
        return float(np.asarray(pet)[mask].max())
    pad = [k // 2 for k in kernel.shape]
    idx = np.nonzero(mask)
    box = tuple(slice(max(int(i.min()) - p, 0), min(int(i.max()) + p + 1, n)) for i, p, n in zip(idx, pad, mask.shape))
    m = mask[box]
    weights = kernel.astype(np.float32)
    inside = ndimage.correlate(m.astype(np.float32), weights, mode="constant")[m]
    sums = ndimage.correlate(np.where(m, np.asarray(pet, dtype=np.float32)[box], 0.0), weights, mode="constant")[m]
    means = sums / np.maximum(inside, 1.0)
    eligible = inside >= 0.5 * kernel.sum() - 1e-3
    return float(means[eligible].max() if eligible.any() else means.max())


def main_part_pct(mask: np.ndarray, parts: int = 1) -> float:
    """Share (%) of a mask's voxels in its ``parts`` largest 26-connected components (100: the
    organ is whole; less: it is split or has stray pieces). NaN for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    idx = np.nonzero(mask)
    if not idx[0].size:
        return math.nan
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    components, n = ndimage.label(mask[box], structure=np.ones((3, 3, 3), dtype=bool))
    if n <= parts:
        return 100.0
    sizes = np.sort(np.bincount(components.ravel())[1:])[::-1]
    return float(100.0 * sizes[:parts].sum() / sizes.sum())


# --- measurements ----------------------------------------------------------------------------


def organ_measurements(case: Case) -> dict[str, dict[str, float]]:
    """Volume (ml), SUVmean, SUVmax, SUVpeak, CT median (HU) and, for the organs of
    :data:`~synthaug.core.labels.ORGAN_PARTS`, the share of the volume in their main parts
    (:func:`main_part_pct`) of every organ.

    The labelled voxels are grouped by organ with one stable (radix) sort of the
    labels; an organ absent from the case has volume 0 and NaN for the other values.
    """
    where = f"case {case.meta.get('case_id', '?')}"
    if case.organs is None:
        raise ValueError(f"{where}: no organ map; organ-wise measurements need one")
    labels = np.asarray(case.organs).ravel()
    n = len(ORGAN_LABELS)
    if labels.size and int(labels.max()) >= n:
        raise ValueError(f"{where}: organ ids above {n - 1} (outside the synthaug organ map)")
    fg = np.flatnonzero(labels)
    order = fg[np.argsort(labels[fg], kind="stable")]
    bounds = np.searchsorted(labels[order], np.arange(1, n + 1))
    ct = np.asarray(case.ct).ravel()[order]
    pet = None
    if case.pet is not None:
        pet = np.asarray(case.pet, dtype=np.float32).ravel()[order]
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(ORGANS):
        part = slice(bounds[k], bounds[k + 1])
        count = bounds[k + 1] - bounds[k]
        row = {"volume_ml": float(count) * case.voxel_volume_ml, "suv_mean": math.nan, "suv_max": math.nan,
               "suv_peak": math.nan, "ct_median_hu": math.nan, "main_part_pct": math.nan}
        if count:
            row["ct_median_hu"] = float(np.median(ct[part]))
            if pet is not None or name in ORGAN_PARTS:
                mask = np.asarray(case.organs) == ORGAN_IDS[name]
            if pet is not None:
                row["suv_mean"] = float(np.mean(pet[part], dtype=np.float64))
                row["suv_max"] = float(pet[part].max())
                row["suv_peak"] = suv_peak(case.pet, mask, case.spacing)
            if name in ORGAN_PARTS:
                row["main_part_pct"] = main_part_pct(mask, ORGAN_PARTS[name])
        out[name] = row
    return out


def body_mass_kg(ct: np.ndarray, organs: np.ndarray | None, mask: np.ndarray, voxel_ml: float) -> float:
    """Mass (kg) of the body mask: organ voxels at :data:`TISSUE_DENSITY`, unlabelled voxels at 1 + HU/1000 g/ml."""
    density_by_label = np.zeros(len(ORGAN_LABELS), dtype=np.float64)
    for name, rho in TISSUE_DENSITY.items():
        density_by_label[ORGAN_IDS[name]] = rho
    hu_density = np.clip(1.0 + np.asarray(ct, dtype=np.float64)[mask] / 1000.0, 0.0, 2.0)
    if organs is None:
        return float(hu_density.sum() * voxel_ml / 1000.0)
    lab = np.asarray(organs)[mask].astype(np.intp)
    density = np.where(lab > 0, density_by_label[np.minimum(lab, len(density_by_label) - 1)], hu_density)
    return float(density.sum() * voxel_ml / 1000.0)


def lesion_measurements(lesions: np.ndarray | None, voxel_ml: float) -> tuple[float, float]:
    """Total lesion volume (ml) and lesion count (26-connected components); NaN without a mask."""
    if lesions is None:
        return math.nan, math.nan
    mask = np.asarray(lesions) > 0
    _, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    return float(mask.sum()) * voxel_ml, float(count)


def landmark_distance_mm(organs: np.ndarray | None, axis: int, spacing_mm: float,
                         landmarks: tuple[str, str] = STATURE_LANDMARKS) -> float:
    """Distance (mm) along array axis ``axis`` (voxels ``spacing_mm`` apart) between the centroids of two
    labelled organs; NaN without labels or with either organ missing.

    A body's extent ends where the field of view ends, so on whole-body scans it follows the protocol more
    than the person; the brain-to-bladder distance lies inside every such scan and grows with height."""
    if organs is None:
        return math.nan
    organs = np.asarray(organs)
    other = tuple(a for a in range(organs.ndim) if a != axis)
    index = np.arange(organs.shape[axis], dtype=np.float64)
    centres = []
    for name in landmarks:
        per_slice = (organs == ORGAN_IDS[name]).sum(axis=other)
        total = per_slice.sum()
        if total == 0:
            return math.nan
        centres.append(float((per_slice * index).sum() / total))
    return abs(centres[0] - centres[1]) * float(spacing_mm)


def measure_case(case: Case) -> dict[str, dict[str, float]]:
    """All measurements of one case: ``{organ: {metric: value}, ..., "body": {metric: value}}``."""
    out = organ_measurements(case)
    mask = body_mask(case.ct, case.organs, case.affine)
    z = axial_axis(case.affine)
    other = tuple(a for a in range(3) if a != z)
    slices = np.nonzero(mask.any(axis=other))[0]
    extent = float((slices[-1] - slices[0] + 1) * case.spacing[z]) if slices.size else 0.0
    lesion_ml, lesion_n = lesion_measurements(case.lesions, case.voxel_volume_ml)
    in_lesions = case.pet[case.lesions > 0] if case.lesions is not None and case.pet is not None else np.zeros(0)
    out["body"] = {
        "body_volume_ml": float(mask.sum()) * case.voxel_volume_ml,
        "body_extent_mm": extent,
        "brain_to_bladder_mm": landmark_distance_mm(case.organs, z, case.spacing[z]),
        "body_mass_kg": body_mass_kg(case.ct, case.organs, mask, case.voxel_volume_ml),
        "lesion_volume_ml": lesion_ml,
        "lesion_count": lesion_n,
        # the case's hottest lesion voxel and mean lesion uptake; NaN without lesions
        "lesion_suv_max": float(in_lesions.max()) if in_lesions.size else math.nan,
        "lesion_suv_mean": float(in_lesions.mean()) if in_lesions.size else math.nan,
    }
    return out


# --- pictures and memorisation features --------------------------------------------------------


def thumbnails(case: Case, max_px: int = 96) -> dict:
    """A coronal PET MIP and a coronal CT slice through the body, at most ``max_px`` pixels high.

    Returns ``{"pet_mip": (rows=Z head-first, cols=X), "ct_slice": ..., "aspect": height/width of a pixel}``.
    """
    ct, spacing = to_ras(np.asarray(case.ct, dtype=np.float32), case.affine)
    pet = to_ras(np.asarray(case.pet, dtype=np.float32), case.affine)[0] if case.pet is not None else np.zeros_like(ct)
    inside = ct > BODY_HU
    ys = np.nonzero(inside.any(axis=(0, 2)))[0]
    y = int((ys[0] + ys[-1]) // 2) if ys.size else ct.shape[1] // 2
    mip = pet.max(axis=1)
    sl = ct[:, y, :]
    nx, nz = mip.shape
    scale = min(1.0, max_px / nz)
    size = (max(1, round(nx * scale)), max(1, round(nz * scale)))
    px = (spacing[0] * nx / size[0], spacing[2] * nz / size[1])

    def view(a: np.ndarray) -> np.ndarray:  # radiological: patient's right on the left, head on top
        return area_resize(a, size)[::-1, ::-1].T.astype(np.float16)

    return {"pet_mip": view(mip), "ct_slice": view(sl), "aspect": float(px[1] / px[0])}


def memorisation_features(case: Case, shape: tuple[int, int, int] = FEATURE_SHAPE) -> np.ndarray:
    """CT and SUV, reoriented to RAS, area-averaged to ``shape`` and scaled to about [0, 1]; one flat vector.

    CT: (clip(HU, -1000, 1000) + 1000) / 2000; SUV: clip(SUV, 0, 10) / 10.
    """
    ct = to_ras(np.asarray(case.ct, dtype=np.float32), case.affine)[0]
    ct = area_resize((np.clip(ct, -1000.0, 1000.0) + 1000.0) / 2000.0, shape)
    if case.pet is not None:
        pet = to_ras(np.asarray(case.pet, dtype=np.float32), case.affine)[0]
        pet = area_resize(np.clip(pet, 0.0, 10.0) / 10.0, shape)
    else:
        pet = np.zeros(shape, dtype=np.float32)
    return np.concatenate([ct.ravel(), pet.ravel()]).astype(np.float32)
