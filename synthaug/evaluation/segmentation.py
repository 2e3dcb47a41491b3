"""Segmentation metrics for the downstream benchmark: Dice, and AutoPET's lesion volumes.

AutoPET's definitions (the challenge's evaluation code, written out in ``docs/downstream.md``):

- **Dice** of the lesion masks, reported for cases that have a lesion;
- **false-positive volume**: the volume of predicted connected components that touch no
  true lesion voxel;
- **false-negative volume**: the volume of true connected components that no predicted
  voxel touches.

Connectivity is 26-neighbourhood (3 x 3 x 3), as in AutoPET's ``cc3d`` labelling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from ..core.labels import ORGAN_LABELS

#: 26-connectivity in 3D.
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; ``nan`` when both are empty (undefined, left out of means)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def _untouched_volume(components_of: np.ndarray, other: np.ndarray) -> int:
    """Number of voxels in the connected components of ``components_of`` that no voxel of ``other`` touches."""
    labels, n = ndimage.label(components_of, structure=_CONNECTIVITY)
    if n == 0:
        return 0
    touched = np.unique(labels[other & (labels > 0)])
    return int(((labels > 0) & ~np.isin(labels, touched)).sum())


def lesion_metrics(pred: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """AutoPET's lesion metrics of one case.

    Args:
        pred, truth: binary lesion masks of the same shape.
        voxel_ml: volume of one voxel in ml.

    Returns:
        ``dice`` (``nan`` when the case has no true lesion: AutoPET scores Dice on positive
        cases only), ``fp_ml`` and ``fn_ml`` (see the module docstring), ``true_ml``, ``pred_ml``.
    """
    if not voxel_ml > 0:
        raise ValueError(f"`voxel_ml`={voxel_ml} must be > 0")
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    has_lesion = bool(truth.any())
    return {
        "dice": dice(pred, truth) if has_lesion else math.nan,
        "fp_ml": _untouched_volume(pred, truth) * voxel_ml,
        "fn_ml": _untouched_volume(truth, pred) * voxel_ml,
        "true_ml": float(truth.sum()) * voxel_ml,
        "pred_ml": float(pred.sum()) * voxel_ml,
    }


def organ_dice(pred: np.ndarray, truth: np.ndarray, labels: Mapping[int, str] = ORGAN_LABELS) -> dict[str, float]:
    """Dice per organ of two label maps (background left out); ``nan`` where an organ is absent in both."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    return {name: dice(pred == i, truth == i) for i, name in labels.items() if i != 0}


def nanmean(values) -> float:
    """Mean over the finite values (``nan`` if there is none)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan
