"""Lesion copy-paste between cases (TumorCP / CarveMix style): the cheap baseline for synthetic data.

A :class:`LesionBank` holds every connected lesion of a set of donor cases as a small
box (CT, PET and the lesion's own mask). :func:`paste_lesion` carves one donor lesion
into a recipient patch: inside the donor's mask the recipient's CT and PET are replaced
by the donor's and the lesion label is set; organ labels are left as they are (the lesion
sits in the organ). The place is drawn inside the recipient's body (organ label > 0).

TumorCP (Yang et al., MICCAI 2021) copies tumours object-wise between CT cases;
CarveMix (Zhang et al., 2021) carves a lesion-shaped region. This is the object-level
variant on CT + PET; it is written for this package, not ported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: 26-connectivity in 3D.
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class DonorLesion:
    """One connected lesion cut out of a donor case (arrays of its bounding box)."""

    case_id: str
    ct: np.ndarray
    pet: np.ndarray
    mask: np.ndarray


class LesionBank:
    """Every connected lesion of the donor cases, ready to paste.

    Args:
        cases: case id -> a mapping with ``ct``, ``pet`` and ``lesions`` arrays (X, Y, Z).
        min_voxels: lesions smaller than this are left out (specks).
    """

    def __init__(self, cases: Mapping[str, Mapping[str, np.ndarray]], min_voxels: int = 1) -> None:
        if min_voxels < 1:
            raise ValueError(f"`min_voxels`={min_voxels} must be >= 1")
        lesions: list[DonorLesion] = []
        for case_id, arrays in cases.items():
            for key in ("ct", "pet", "lesions"):
                if arrays.get(key) is None:
                    raise ValueError(f"`cases`[{case_id!r}] has no {key!r} array")
            labels, n = ndimage.label(np.asarray(arrays["lesions"]) > 0, structure=_CONNECTIVITY)
            for i, box in enumerate(ndimage.find_objects(labels), start=1):
                if box is None:
                    continue
                mask = labels[box] == i
                if mask.sum() < min_voxels:
                    continue
                lesions.append(DonorLesion(case_id, np.asarray(arrays["ct"])[box].copy(),
                                           np.asarray(arrays["pet"])[box].copy(), mask))
        self.lesions: tuple[DonorLesion, ...] = tuple(lesions)

    def __len__(self) -> int:
        return len(self.lesions)


def paste_lesion(
    patch: Mapping[str, np.ndarray],
    lesion: DonorLesion,
    rng: np.random.Generator,
    body: np.ndarray | None = None,
) -> dict[str, np.ndarray] | None:
    """Carve ``lesion`` into a copy of ``patch`` at a random place inside the body.

    Args:
        patch: ``ct``, ``pet``, ``lesions`` (and optionally ``organs``) arrays of one shape.
        lesion: the donor lesion.
        rng: draws the place.
        body: where the lesion's centre may go (default ``organs > 0`` if given, else everywhere).

    Returns:
        The new arrays (``organs`` unchanged), or ``None`` when the lesion does not fit
        the patch or the patch has no body voxel.
    """
    shape = np.asarray(patch["ct"]).shape
    size = np.asarray(lesion.mask.shape)
    if np.any(size > np.asarray(shape)):
        return None
    if body is None:
        body = np.asarray(patch["organs"]) > 0 if patch.get("organs") is not None else np.ones(shape, bool)
    # corners whose box centre is a body voxel
    half = size // 2
    centre_ok = np.zeros(shape, bool)
    region = tuple(slice(h, s - (z - h) + 1) for h, s, z in zip(half, shape, size))
    centre_ok[region] = body[region]
    candidates = np.flatnonzero(centre_ok)
    if candidates.size == 0:
        return None
    centre = np.unravel_index(candidates[rng.integers(candidates.size)], shape)
    box = tuple(slice(c - h, c - h + z) for c, h, z in zip(centre, half, size))
    out = {k: np.array(v, copy=True) for k, v in patch.items() if v is not None}
    out["ct"][box][lesion.mask] = lesion.ct[lesion.mask]
    out["pet"][box][lesion.mask] = lesion.pet[lesion.mask]
    out["lesions"][box][lesion.mask] = 1
    return out


def random_paste(
    patch: Mapping[str, np.ndarray], bank: LesionBank, rng: np.random.Generator, prob: float = 0.5,
    max_lesions: int = 2, exclude: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """With probability ``prob``, paste 1..``max_lesions`` random lesions of ``bank`` into ``patch``.

    ``exclude`` names donor cases not to take lesions from (e.g. the recipient itself).
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"`prob`={prob} must be in [0, 1]")
    if max_lesions < 1:
        raise ValueError(f"`max_lesions`={max_lesions} must be >= 1")
    donors = [les for les in bank.lesions if les.case_id not in set(exclude)]
    out = dict(patch)
    if not donors or rng.random() >= prob:
        return out
    for _ in range(int(rng.integers(1, max_lesions + 1))):
        pasted = paste_lesion(out, donors[int(rng.integers(len(donors)))], rng)
        if pasted is not None:
            out = pasted
    return out
