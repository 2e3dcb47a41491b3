"""nnU-Net v2 dataset export: real AutoPET-layout cases plus synthetic cases.

The result is a plain nnU-Net v2 raw dataset that nnU-Net's own tools accept as is::

    <nnUNet_raw>/DatasetXXX_NAME/
        dataset.json              written by nnunetv2's own generate_dataset_json
        imagesTr/{case}_0000.nii.gz   CT (HU)
        imagesTr/{case}_0001.nii.gz   PET (SUV)
        labelsTr/{case}.nii.gz        lesions {0, 1} or the synthaug organ map
        splits_final.json         5 folds; validation holds real cases only
        synthaug_cases.json       provenance: which case is real/synthetic, demographics,
                                  generator sha256, seeds, resampling, citations

nnU-Net only looks at ``dataset.json``, ``imagesTr``, ``labelsTr`` and ``imagesTs``, so
the two extra files at the dataset root are ignored by it. A copy of
``splits_final.json`` also goes to ``$nnUNet_preprocessed/DatasetXXX_NAME/``, where
``nnUNetv2_train`` reads it.

Real data is never modified: its images are symlinked (or copied) under their nnU-Net
names; a label file that is not already an integer 0/1 (or organ-map) image is
rewritten as uint8 with the original header geometry. The dataset is built in a hidden
temporary folder beside the target and renamed into place at the end, so an interrupted
export leaves no partial dataset under the final name.

:func:`export_nnunet` runs three steps: :func:`~synthaug.data.nnunet_plan.validate_export`
(the arguments), :func:`~synthaug.data.nnunet_plan.plan_export` (every case, file and fold,
read from the inputs' headers, as an :class:`~synthaug.data.nnunet_plan.ExportPlan`) and
:func:`write_export` (the files). nnU-Net's naming and fold conventions are in
:mod:`synthaug.data.nnunet_layout`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..core.case import Case
from ..core.geometry import spacing_of
from ..core.io import (
    CT_FILE,
    PET_FILE,
    CaseError,
    atomic_write_json,
    nifti_bytes,
    replace_dir,
    temporary_dir,
)
from ..core.labels import NUM_ORGAN_CLASSES
from ..sampling.generator import CaseGenerator
from .nnunet_layout import (
    FILE_ENDING,
    LABEL_SETS,
    NUM_FOLDS,
    PET_NORMS,
    RESAMPLE_MODES,
    SIDECAR_FILE,
    SPLITS_FILE,
    SYNTHETIC_PREFIX,
    check_dataset_id,
    dataset_folder_name,
    make_splits,
    nnunet_channel_names,
    nnunet_labels,
)
from .nnunet_plan import ExportCase, ExportPlan, ExportRequest, plan_export, validate_export

__all__ = [
    "CITATIONS", "FILE_ENDING", "LABEL_SETS", "NUM_FOLDS", "PET_NORMS", "RESAMPLE_MODES", "SIDECAR_FILE",
    "SIDECAR_FORMAT", "SPACING_RTOL", "SPLITS_FILE", "SYNTHETIC_PREFIX", "ExportCase", "ExportPlan", "ExportRequest",
    "ExportResult", "check_dataset_id", "dataset_folder_name", "export_nnunet", "make_splits", "nnunet_channel_names",
    "nnunet_labels", "plan_export", "resample_to_spacing", "validate_export", "write_export",
]

#: Relative spacing difference above which ``--resample auto`` resamples a synthetic case.
SPACING_RTOL = 0.01
SIDECAR_FORMAT = "synthaug-nnunet-export/1"

CITATIONS = {
    "nnunet": "Isensee F, Jaeger PF, Kohl SAA, Petersen J, Maier-Hein KH. nnU-Net: a self-configuring method for "
              "deep learning-based biomedical image segmentation. Nature Methods 18, 203-211 (2021). "
              "doi:10.1038/s41592-020-01008-z",
    "autopet": "Gatidis S, et al. A whole-body FDG-PET/CT dataset with manually annotated tumor lesions. "
               "Scientific Data 9, 601 (2022). doi:10.1038/s41597-022-01718-3",
    "cascade": "Yoon et al. Cascaded 3D Diffusion Models for Whole-body 3D 18-F FDG PET/CT synthesis from "
               "Demographics.",
}


def resample_to_spacing(array: np.ndarray, affine: np.ndarray, spacing: Sequence[float], *,
                        order: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample a volume to ``spacing`` (mm) over the same field of view; return ``(array, affine)``.

    ``order=1`` (trilinear) for images, ``order=0`` (nearest) for label maps. The axis
    directions are kept and the outer corner of voxel 0 stays where it was, so the new
    affine describes the same physical space.
    """
    from scipy import ndimage

    affine = np.asarray(affine, dtype=np.float64)
    old = np.asarray(spacing_of(affine))
    new = np.asarray([float(s) for s in spacing])
    if new.shape != (3,) or np.any(new <= 0):
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing!r}")
    shape = tuple(max(1, int(round(n * o / s))) for n, o, s in zip(array.shape, old, new))
    step = new / old  # input voxels per output voxel
    offset = 0.5 * step - 0.5  # input index of output voxel 0's centre
    out = ndimage.affine_transform(array, step, offset=offset, output_shape=shape, order=order,
                                   mode="nearest", prefilter=False)
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] / old * new
    new_affine[:3, 3] = (affine @ np.append(offset, 1.0))[:3]
    return out, new_affine


@dataclass
class ExportResult:
    """What :func:`export_nnunet` wrote."""

    path: Path
    dataset_name: str
    num_real: int
    num_synthetic: int
    splits: list[dict[str, list[str]]]
    splits_paths: list[Path]
    warnings: list[str]


def _needs_resample(spacing: Sequence[float], target: Sequence[float] | None, mode: str) -> bool:
    if target is None or mode == "never":
        return False
    if mode == "always":
        return True
    s, t = np.asarray(spacing, dtype=np.float64), np.asarray(target, dtype=np.float64)
    return bool(np.any(np.abs(s - t) > SPACING_RTOL * t))


# --- writing ----------------------------------------------------------------------------


def _place(src: Path, dst: Path, copy: bool) -> str:
    """Symlink (absolute) or copy ``src`` to ``dst``; return what was done."""
    if copy:
        shutil.copyfile(src, dst)
        return "copy"
    os.symlink(src.resolve(), dst)
    return "link"


def _label_values(arr: np.ndarray, case_id: str, fname: str, labels: str) -> np.ndarray:
    """Validate a label array and return it as uint8 in the export's label set."""
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise CaseError(f"case {case_id}: {fname} holds NaN or infinite label values")
        frac = np.mod(arr, 1) != 0
        if frac.any():
            raise CaseError(f"case {case_id}: {fname} holds non-integer label values (e.g. {float(arr[frac][0]):g}); "
                            "expected integer labels")
    elif not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        raise CaseError(f"case {case_id}: {fname} has dtype {arr.dtype}; expected integer labels")
    lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
    if lo < 0:
        raise CaseError(f"case {case_id}: {fname} holds negative label values (min {lo:g})")
    if labels == "lesions":
        return (arr > 0).astype(np.uint8)  # AutoPET SEG is 0/1; any positive value is lesion
    if hi > NUM_ORGAN_CLASSES - 1:
        bad = sorted(int(v) for v in np.unique(arr) if v > NUM_ORGAN_CLASSES - 1)
        raise CaseError(f"case {case_id}: {fname} holds label ids {bad[:5]} outside the synthaug organ map "
                        f"0-{NUM_ORGAN_CLASSES - 1}")
    return arr.astype(np.uint8)


def _export_label(src: Path, dst: Path, case_id: str, labels: str, copy: bool) -> str:
    """Link/copy a label file when it already is a clean integer label image, else write uint8."""
    try:
        img = nib.load(str(src))
        raw = np.asanyarray(img.dataobj)
    except Exception as err:
        raise CaseError(f"case {case_id}: unreadable {src.name}: {type(err).__name__}: {err}") from None
    clean = _label_values(raw, case_id, src.name, labels)
    on_disk = img.get_data_dtype()
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    unscaled = slope in (None, 1.0) and inter in (None, 0.0)
    if np.issubdtype(on_disk, np.integer) and unscaled and np.array_equal(raw, clean):
        return _place(src, dst, copy)
    if clean.ndim == 4:
        clean = clean[..., 0]
    out = type(img)(clean, img.affine, header=img.header)  # same qform/sform as the original
    out.set_data_dtype(np.uint8)
    out.header.set_slope_inter(1.0, 0.0)
    nib.save(out, str(dst))
    return "converted"


def _write_case_arrays(case: Case, case_id: str, images_dir: Path, labels_dir: Path, labels: str) -> None:
    for name, arr in (("ct", case.ct), ("pet", case.pet)):
        if not np.all(np.isfinite(arr)):
            raise CaseError(f"case {case_id}: {name} holds NaN or infinite values")
    label = case.lesions if labels == "lesions" else case.organs
    label = _label_values(np.asarray(label), case_id, labels, labels)
    (images_dir / f"{case_id}_0000{FILE_ENDING}").write_bytes(nifti_bytes(case.ct.astype(np.float32), case.affine))
    (images_dir / f"{case_id}_0001{FILE_ENDING}").write_bytes(nifti_bytes(case.pet.astype(np.float32), case.affine))
    (labels_dir / f"{case_id}{FILE_ENDING}").write_bytes(nifti_bytes(label, case.affine))


def _resample_case(case: Case, target: Sequence[float]) -> Case:
    ct, affine = resample_to_spacing(case.ct.astype(np.float32), case.affine, target, order=1)
    pet, _ = resample_to_spacing(case.pet.astype(np.float32), case.affine, target, order=1)
    organs = None if case.organs is None else resample_to_spacing(case.organs, case.affine, target, order=0)[0]
    lesions = None if case.lesions is None else resample_to_spacing(case.lesions, case.affine, target, order=0)[0]
    return Case(ct=ct, pet=pet, organs=organs, lesions=lesions, affine=affine,
                demographics=case.demographics, meta=dict(case.meta))


def _check_generated(case: Case, case_id: str, labels: str) -> None:
    if case.pet is None:
        raise CaseError(f"generated case {case_id}: the generator returned no PET")
    if (case.lesions if labels == "lesions" else case.organs) is None:
        raise CaseError(f"generated case {case_id}: the generator returned no {labels} labels (`labels` {labels})")


# --- the export: validate, plan, write ------------------------------------------------------


def _default_log(msg: str) -> None:
    print(msg, file=sys.stderr)


def export_nnunet(
    out_root: str | Path,
    dataset_id: int,
    name: str,
    *,
    real: str | Path | None = None,
    synthetic: str | Path | None = None,
    generator: CaseGenerator | Callable[[], CaseGenerator] | None = None,
    n_synthetic: int | None = None,
    ratio: float | None = None,
    labels: str = "lesions",
    pet_norm: str = "CT",
    resample: str = "auto",
    spacing: Sequence[float] | None = None,
    copy: bool = False,
    force: bool = False,
    seed: int = 0,
    preprocessed: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = _default_log,
) -> ExportResult:
    """Write ``<out_root>/DatasetXXX_NAME`` from real and/or synthetic cases.

    Three steps: :func:`validate_export` checks the arguments, :func:`plan_export` decides
    every case and fold from the inputs' headers (an :class:`ExportPlan`), :func:`write_export`
    writes it; nothing is written before the plan is complete.

    Args:
        out_root: the nnU-Net raw folder (``$nnUNet_raw``).
        dataset_id, name: nnU-Net dataset id (1-999) and name.
        real: a cohort in the AutoPET layout (never modified).
        synthetic: a folder of synthetic cases in the AutoPET layout (e.g. a ``synthaug generate`` cache).
        generator: makes ``n_synthetic`` (or ``ratio`` x real) new cases; a zero-argument
            callable is called only after every input has been checked.
        n_synthetic: number of cases to generate.
        ratio: synthetic cases per real case; generates that many, or subsamples ``synthetic``.
        labels: ``lesions`` ({0, 1}) or ``organs`` (the synthaug organ map).
        pet_norm: nnU-Net channel name (normalisation) of the SUV channel, see :data:`PET_NORMS`.
        resample: ``auto`` resamples synthetic cases whose spacing differs by more than 1 %
            from the target spacing (``spacing``, else the real cases' median spacing);
            ``always`` resamples every synthetic case; ``never`` keeps them as they are.
        spacing: target spacing (mm) for resampling; default the real median spacing.
        copy: copy real images instead of symlinking them.
        force: replace an existing dataset folder (and its splits in ``preprocessed``).
        seed: drives demographics, generation seeds, subsampling and fold assignment.
        preprocessed: ``$nnUNet_preprocessed``; ``splits_final.json`` is also written there.
        progress: show a tqdm bar.
        log: receives warnings and notes (default: stderr); ``None`` silences them.
    """
    say = log or (lambda _msg: None)
    request = validate_export(
        out_root, dataset_id, name, real=real, synthetic=synthetic, generator=generator, n_synthetic=n_synthetic,
        ratio=ratio, labels=labels, pet_norm=pet_norm, resample=resample, spacing=spacing, copy=copy, force=force,
        seed=seed, preprocessed=preprocessed,
    )
    plan = plan_export(request, warn=lambda msg: say(f"warning: {msg}"))
    return write_export(plan, generator, progress=progress)


def write_export(plan: ExportPlan, generator: CaseGenerator | Callable[[], CaseGenerator] | None = None, *,
                 progress: bool = True) -> ExportResult:
    """Write ``plan``: build the dataset in a hidden folder beside the target, rename it into place,
    then copy ``splits_final.json`` to the preprocessed folder. ``generator`` makes the planned
    generated cases (a zero-argument callable is called here, before anything is written)."""
    from ..core.progress import progress_bar

    gen = _load_generator(generator) if plan.request.generate else None
    out_root, folder, target = plan.request.out_root, plan.request.folder, plan.target
    out_root.mkdir(parents=True, exist_ok=True)
    for stale in out_root.glob(f".{folder}.*.tmp"):  # left by an earlier interrupted export of this dataset
        shutil.rmtree(stale, ignore_errors=True)
    tmp = temporary_dir(out_root, folder)
    try:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        cases = progress_bar(plan.cases, desc=f"export {folder}", unit="case", disable=not progress)
        records = [_export_item(case, tmp, plan, gen) for case in cases]
        _write_metadata(tmp, plan, records, gen)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if plan.request.preprocessed is not None:
        atomic_write_json(plan.request.preprocessed / SPLITS_FILE, plan.splits)
    return ExportResult(path=target, dataset_name=folder, num_real=plan.num_real, num_synthetic=plan.num_synthetic,
                        splits=plan.splits, splits_paths=plan.splits_paths, warnings=list(plan.warnings))


def _load_generator(generator: CaseGenerator | Callable[[], CaseGenerator] | None) -> CaseGenerator:
    gen = generator() if not hasattr(generator, "sample") and callable(generator) else generator
    if not isinstance(gen, CaseGenerator):
        raise TypeError(f"generator: {type(gen).__name__} does not implement the CaseGenerator protocol")
    return gen


def _export_item(it: ExportCase, tmp: Path, plan: ExportPlan, gen: CaseGenerator | None) -> dict:
    """Write one case into the temporary dataset folder ``tmp``; return its sidecar record."""
    labels, copy, resample = plan.request.labels, plan.request.copy, plan.request.resample
    target_spacing, images_dir, labels_dir = plan.target_spacing, tmp / "imagesTr", tmp / "labelsTr"
    rec: dict = {"case_id": it.case_id, "source": it.kind, "original_case_id": it.original_id,
                 "origin": str(it.src_dir) if it.src_dir is not None else "generated",
                 "patient_id": it.group if it.kind == "real" else None,
                 "demographics": it.demographics.to_dict() if it.demographics is not None else None,
                 "resampled": None}
    ct_dst, pet_dst, label_dst = (tmp / f for f in it.files)
    if it.kind == "synthetic":
        rec["generator_sha256"] = it.meta.get("model_sha256")
        rec["seed"] = it.meta.get("seed")
        rec["generator_source"] = it.meta.get("source")
    if it.src_dir is not None:
        if it.kind == "synthetic" and _needs_resample(spacing_of(it.affine), target_spacing, resample):
            from ..core.io import read_case

            case = read_case(it.src_dir, demographics=it.demographics, require_lesions=labels == "lesions")
            _check_generated(case, it.case_id, labels)
            rec["resampled"] = {"from_spacing": list(spacing_of(case.affine)), "to_spacing": list(target_spacing)}
            _write_case_arrays(_resample_case(case, target_spacing), it.case_id, images_dir, labels_dir, labels)
            rec["files"] = "resampled"
            return rec
        ct_how = _place(it.src_dir / CT_FILE, ct_dst, copy)
        _place(it.src_dir / PET_FILE, pet_dst, copy)
        label_how = _export_label(it.src_dir / plan.request.label_file, label_dst, it.case_id, labels, copy)
        rec["files"] = {"images": ct_how, "label": label_how}
        return rec
    # generated
    case = gen.sample([it.demographics], seed=[it.seed], progress=False)[0]
    _check_generated(case, it.case_id, labels)
    rec.update(generator_sha256=gen.sha256, seed=it.seed, generator_source=case.meta.get("source", "synthetic"))
    if _needs_resample(case.spacing, target_spacing, resample):
        rec["resampled"] = {"from_spacing": list(case.spacing), "to_spacing": list(target_spacing)}
        case = _resample_case(case, target_spacing)
    _write_case_arrays(case, it.case_id, images_dir, labels_dir, labels)
    rec["files"] = "generated"
    return rec


def _write_metadata(tmp: Path, plan: ExportPlan, records: list[dict], gen: CaseGenerator | None) -> None:
    """dataset.json (nnunetv2's own writer), the provenance sidecar and the splits copy."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    from .. import __version__

    req, n_real = plan.request, plan.num_real
    folder, labels, pet_norm = req.folder, req.labels, req.pet_norm
    n_synth = len(records) - n_real
    citations = [CITATIONS["nnunet"]]
    if n_real:
        citations.append(CITATIONS["autopet"])
    if gen is not None and "phantom" not in json.dumps(gen.settings, default=str):
        citations.append(CITATIONS["cascade"])
    # NB: no citation= argument: nnunetv2 2.x writes `release` into it; citations live in the sidecar.
    generate_dataset_json(
        str(tmp),
        nnunet_channel_names(pet_norm),
        nnunet_labels(labels),
        num_training_cases=len(records),
        file_ending=FILE_ENDING,
        dataset_name=folder.split("_", 1)[1],
        reference="https://autopet.grand-challenge.org/" if n_real else None,
        release=f"synthaug {__version__}",
        description=f"{n_real} real + {n_synth} synthetic FDG PET/CT cases (CT, SUV); {labels} labels; "
                    f"provenance in {SIDECAR_FILE}",
        license="see the licences of the real source data and of the synthaug generator weights",
        converted_by=f"synthaug {__version__} export-nnunet",
    )
    sidecar = {
        "format": SIDECAR_FORMAT,
        "synthaug_version": __version__,
        "dataset": folder,
        "labels": labels,
        "label_map": nnunet_labels(labels),
        "channel_names": {str(k): v for k, v in nnunet_channel_names(pet_norm).items()},
        "num_real": n_real,
        "num_synthetic": n_synth,
        "real_root": str(plan.real_root) if plan.real_root else None,
        "synthetic_root": str(plan.synthetic_root) if plan.synthetic_root else None,
        "real_images": "copied" if req.copy else "symlinked",
        "generator": {"sha256": gen.sha256, "settings": gen.settings} if gen is not None else None,
        "seed": req.seed,
        "resample": {"mode": req.resample, "target_spacing": list(plan.target_spacing) if plan.target_spacing else None},
        "splits": SPLITS_FILE,
        "citation": citations,
        "cases": records,
    }
    atomic_write_json(tmp / SIDECAR_FILE, sidecar)
    atomic_write_json(tmp / SPLITS_FILE, plan.splits)
