"""TotalSegmentator v2 ``total`` segmentations mapped onto the synthaug organ map.

Real PET/CT cohorts (AutoPET) come without ``ORGANS.nii.gz``. Running
TotalSegmentator v2 (task ``total``) on each CT gives an organ segmentation that
:func:`totalseg_to_synthaug` turns into the synthaug organ map (``synthaug.core.labels``),
so that real and synthetic cases are measured the same way. The mapping is
documented in ``docs/evaluation.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.labels import ORGAN_IDS

# --- the TotalSegmentator v2 "total" class map -------------------------------------------


def _v2_classes() -> dict[int, str]:
    names = [
        "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
        "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
        "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
        "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left",
        "kidney_cyst_right", "sacrum", "vertebrae_S1",
    ]
    names += [f"vertebrae_L{i}" for i in range(5, 0, -1)]
    names += [f"vertebrae_T{i}" for i in range(12, 0, -1)]
    names += [f"vertebrae_C{i}" for i in range(7, 0, -1)]
    names += [
        "heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right",
        "subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left",
        "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava",
        "inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right",
        "iliac_vena_left", "iliac_vena_right",
    ]
    for bone in ("humerus", "scapula", "clavicula", "femur", "hip"):
        names += [f"{bone}_left", f"{bone}_right"]
    names += ["spinal_cord"]
    for muscle in ("gluteus_maximus", "gluteus_medius", "gluteus_minimus", "autochthon", "iliopsoas"):
        names += [f"{muscle}_left", f"{muscle}_right"]
    names += ["brain", "skull"]
    names += [f"rib_left_{i}" for i in range(1, 13)] + [f"rib_right_{i}" for i in range(1, 13)]
    names += ["sternum", "costal_cartilages"]
    return {i + 1: name for i, name in enumerate(names)}


#: TotalSegmentator v2 task ``total``: class id -> class name (117 classes).
TOTALSEG_V2_CLASSES: dict[int, str] = _v2_classes()
TOTALSEG_V2_IDS: dict[str, int] = {name: i for i, name in TOTALSEG_V2_CLASSES.items()}


def _synthaug_id(name: str) -> int:
    """Which synthaug organ a TotalSegmentator v2 class belongs to (see docs/evaluation.md)."""
    if name.startswith(("lung_", "trachea")):
        return ORGAN_IDS["lungs"]  # air-filled: the trachea is grouped with the lungs
    if name in ("heart", "atrial_appendage_left"):
        return ORGAN_IDS["heart"]
    if name == "aorta":
        return ORGAN_IDS["aorta"]
    if name == "liver":
        return ORGAN_IDS["liver"]
    if name == "spleen":
        return ORGAN_IDS["spleen"]
    if name.startswith(("kidney_right", "kidney_left", "kidney_cyst")):
        return ORGAN_IDS["kidneys"]
    if name == "urinary_bladder":
        return ORGAN_IDS["urinary_bladder"]
    if name == "brain":
        return ORGAN_IDS["brain"]
    bones = ("vertebrae_", "sacrum", "humerus", "scapula", "clavicula", "femur", "hip_", "skull", "rib_",
             "sternum", "costal_cartilages")
    if name.startswith(bones):
        return ORGAN_IDS["bone"]
    # muscles, the other vessels, the bowel and the small organs
    return ORGAN_IDS["soft_tissue"]


#: TotalSegmentator v2 ``total`` class id -> synthaug organ id (``synthaug.core.labels``).
TOTALSEG_V2_TO_SYNTHAUG: dict[int, int] = {i: _synthaug_id(name) for i, name in TOTALSEG_V2_CLASSES.items()}

#: Fat window (HU) used to label unsegmented body voxels as body fat.
FAT_HU = (-190.0, -30.0)


def totalseg_to_synthaug(seg: np.ndarray, ct: np.ndarray | None = None, *, where: str = "segmentation") -> np.ndarray:
    """Map a TotalSegmentator v2 ``total`` label map to the synthaug organ map.

    TotalSegmentator labels neither fat nor generic soft tissue. With ``ct`` given,
    unlabelled voxels inside the body mask (:func:`synthaug.core.geometry.body_mask` of the
    CT alone) become ``body_fat`` when their HU lie in :data:`FAT_HU` and
    ``soft_tissue`` otherwise, so that body fat and soft tissue are comparable with
    synthetic organ maps.

    Raises:
        ValueError: ``seg`` holds ids outside the v2 ``total`` map (1-117).
    """
    seg = np.asarray(seg)
    if np.issubdtype(seg.dtype, np.floating) and not np.all(np.mod(seg, 1) == 0):
        raise ValueError(f"{where}: TotalSegmentator labels are not integer-valued")
    seg = seg.astype(np.int64, copy=False)
    lut = np.zeros(max(TOTALSEG_V2_CLASSES) + 1, dtype=np.uint8)
    for src, dst in TOTALSEG_V2_TO_SYNTHAUG.items():
        lut[src] = dst
    lo, hi = int(seg.min()), int(seg.max())
    if lo < 0 or hi >= lut.size:
        bad = sorted({int(v) for v in np.unique(seg) if v < 0 or v >= lut.size})
        raise ValueError(
            f"{where}: label ids {bad[:10]} are outside the TotalSegmentator v2 'total' map 0-{lut.size - 1}"
        )
    organs = lut[seg]
    if ct is not None:
        from ..core.geometry import body_mask

        if ct.shape != organs.shape:
            raise ValueError(f"{where}: segmentation grid {organs.shape} does not match the CT grid {ct.shape}")
        free = body_mask(ct) & (organs == 0)
        fat = free & (ct >= FAT_HU[0]) & (ct <= FAT_HU[1])
        organs[fat] = ORGAN_IDS["body_fat"]
        organs[free & ~fat] = ORGAN_IDS["soft_tissue"]
    return organs


def find_totalseg(organs_dir: str | Path, case_id: str) -> Path | None:
    """The TotalSegmentator output of ``case_id`` in ``organs_dir``, or ``None``.

    Accepted: ``<case_id>.nii.gz`` (a multi-label file, ``--ml``), or a folder
    ``<case_id>/`` holding either one multi-label ``.nii.gz`` or TotalSegmentator's
    one-mask-per-class files (``liver.nii.gz``, ``spleen.nii.gz``, ...).
    """
    organs_dir = Path(organs_dir)
    for name in (f"{case_id}.nii.gz", f"{case_id}.nii"):
        if (organs_dir / name).is_file():
            return organs_dir / name
    folder = organs_dir / case_id
    if folder.is_dir():
        return folder
    return None


def read_totalseg(path: str | Path, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a TotalSegmentator v2 ``total`` output (see :func:`find_totalseg`) as one label map.

    Returns:
        ``(labels (X, Y, Z) in the v2 class ids, affine)``.
    """
    from ..core.io import read_nifti

    path = Path(path)
    if path.is_file():
        return read_nifti(path)
    files = sorted(p for p in path.iterdir() if p.name.endswith((".nii.gz", ".nii")) and not p.name.startswith("."))
    stems = {p.name.split(".nii")[0]: p for p in files}
    per_class = {s: p for s, p in stems.items() if s in TOTALSEG_V2_IDS}
    if per_class:
        labels, affine = None, None
        for stem, p in per_class.items():
            mask, aff = read_nifti(p)
            if labels is None:
                labels, affine = np.zeros(mask.shape, dtype=np.uint8), aff
            elif mask.shape != labels.shape or not np.allclose(aff, affine, atol=1e-3):
                raise ValueError(f"case {case_id}: {p.name} grid differs from the other masks in {path}")
            labels[mask > 0] = TOTALSEG_V2_IDS[stem]
        return labels, affine
    if len(files) == 1:
        return read_nifti(files[0])
    raise FileNotFoundError(
        f"case {case_id}: {path} holds neither one multi-label .nii.gz nor TotalSegmentator per-class masks"
    )
