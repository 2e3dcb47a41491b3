"""Where things are in a volume: voxel spacing and axis order from an affine, and the body outline."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

#: CT above this (HU) is body, below it air (the one threshold every part of the package uses).
BODY_HU = -500.0
#: Connected body parts smaller than this share of the largest are dropped (noise, a stray hand).
BODY_MIN_COMPONENT_FRACTION = 0.01


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along the array axes of a 4x4 affine."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0))


def axial_axis(affine: np.ndarray) -> int:
    """The array axis that runs closest to the world head-foot (S) axis."""
    ornt = nib.orientations.io_orientation(np.asarray(affine))
    return int(np.nonzero(ornt[:, 0] == 2)[0][0])


def to_ras_affine(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` with its axes flipped / permuted to the closest RAS+ orientation, and its new affine
    (:func:`to_ras` gives the new spacing instead)."""
    arr = np.asarray(array)
    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    new_affine = np.asarray(affine, np.float64) @ nib.orientations.inv_ornt_aff(ornt, arr.shape)
    return nib.orientations.apply_orientation(arr, ornt), new_affine


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip ``array`` to the closest RAS+ axis order; return it and its spacing
    (:func:`to_ras_affine` gives the new affine instead)."""
    ornt = nib.orientations.io_orientation(np.asarray(affine))
    out = nib.orientations.apply_orientation(array, ornt)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = spacing_of(affine)
    return out, spacing


def body_mask(ct: np.ndarray, organs: np.ndarray | None = None, affine: np.ndarray | None = None, *,
              fill_holes: bool = True, largest_only: bool = False) -> np.ndarray:
    """The body: CT > :data:`BODY_HU` or an organ label > 0.

    With ``fill_holes`` (the default), holes inside each axial slice are filled (lungs and bowel
    gas of CTs without organ labels). Connected parts smaller than
    :data:`BODY_MIN_COMPONENT_FRACTION` of the largest are dropped, or, with ``largest_only``,
    every part but the largest (what alignment centres on). A scanner table above the threshold
    that touches or rivals the body is *not* removed.
    """
    mask = np.asarray(ct) > BODY_HU
    if organs is not None:
        mask |= np.asarray(organs) > 0
    if not mask.any():
        return mask
    if fill_holes:
        z = axial_axis(affine) if affine is not None else 2
        structure = np.zeros((3, 3, 3), dtype=bool)
        plane = [slice(None)] * 3
        plane[z] = 1
        structure[tuple(plane)] = ndimage.generate_binary_structure(2, 1)
        mask = ndimage.binary_fill_holes(mask, structure=structure)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        if largest_only:
            return labels == int(np.argmax(sizes))
        mask = (sizes >= BODY_MIN_COMPONENT_FRACTION * sizes.max())[labels]
    return mask
