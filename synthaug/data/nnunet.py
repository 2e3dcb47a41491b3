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
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..core.case import Case
from ..core.demographics import Demographics, sample_population
from ..core.geometry import spacing_of
from ..core.io import (
    CT_FILE,
    DEMOGRAPHICS_FILE,
    META_FILE,
    ORGANS_FILE,
    PET_FILE,
    SEG_FILE,
    CaseError,
    Cohort,
    atomic_write_json,
    nifti_bytes,
    replace_dir,
    same_grid,
    temporary_dir,
)
from ..core.labels import NUM_ORGAN_CLASSES, ORGAN_LABELS
from ..core.seeds import check_seed
from ..sampling.generator import CaseGenerator

LABEL_SETS = ("lesions", "organs")
#: nnU-Net channel names for the PET channel; the name picks the normalisation.
#: ``CT`` (global foreground-based clipping + z-score) is what nnU-Net's own AutoPET
#: converter (Dataset221_AutoPETII_2023) uses for SUV; ``zscore`` is per-case z-scoring,
#: ``noNorm`` feeds SUV unchanged.
PET_NORMS = ("CT", "zscore", "noNorm")
RESAMPLE_MODES = ("auto", "always", "never")
FILE_ENDING = ".nii.gz"
SIDECAR_FILE = "synthaug_cases.json"
SPLITS_FILE = "splits_final.json"
NUM_FOLDS = 5
SYNTHETIC_PREFIX = "synth_"
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

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


# --- small public helpers --------------------------------------------------------------


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset{id:03d}_{name}`` after checking both (id 1-999, name of letters/digits/_/-)."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, (int, np.integer)) or not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"`dataset_id`: expected an integer in 1-999 (nnU-Net's 3-digit ids), got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"`name`: expected letters, digits, '_' or '-' (starting with a letter or digit), got {name!r}")
    return f"Dataset{int(dataset_id):03d}_{name}"


def check_dataset_id(dataset_id: int, name: str, roots: Sequence[str | Path | None]) -> None:
    """Raise if ``dataset_id`` is already used by a differently named dataset in any of ``roots``.

    nnU-Net resolves ``-d ID`` by the ``DatasetXXX_`` prefix in nnUNet_raw, nnUNet_preprocessed
    and nnUNet_results, and stops when it finds two names for one id.
    """
    wanted = dataset_folder_name(dataset_id, name)
    prefix = wanted[: len("Dataset000_")]
    for root in roots:
        if root is None or not Path(root).is_dir():
            continue
        for p in sorted(Path(root).iterdir()):
            if p.name.startswith(prefix) and p.name != wanted and p.is_dir():
                raise ValueError(
                    f"`dataset_id` {int(dataset_id)} is already used by {p.name} in {root}; "
                    f"choose another `dataset_id` (or remove {p})"
                )


def nnunet_labels(labels: str) -> dict[str, int]:
    """nnU-Net ``labels`` entry (name -> consecutive id from 0) for ``lesions`` or ``organs``."""
    if labels == "lesions":
        return {"background": 0, "lesion": 1}
    if labels == "organs":
        return {name: i for i, name in sorted(ORGAN_LABELS.items())}
    raise ValueError(f"`labels`: expected one of {LABEL_SETS}, got {labels!r}")


def nnunet_channel_names(pet_norm: str = "CT") -> dict[int, str]:
    """nnU-Net ``channel_names``: 0 = CT (``CT`` normalisation), 1 = SUV (``pet_norm``)."""
    if pet_norm not in PET_NORMS:
        raise ValueError(f"`pet_norm`: expected one of {PET_NORMS}, got {pet_norm!r}")
    return {0: "CT", 1: pet_norm}


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


def make_splits(real_groups: Mapping[str, Sequence[str]], synthetic: Sequence[str] = (), *,
                n_folds: int = NUM_FOLDS, seed: int = 0,
                strata: Mapping[str, str | None] | None = None) -> list[dict[str, list[str]]]:
    """nnU-Net ``splits_final.json``: ``n_folds`` folds whose validation sets hold only real cases.

    Args:
        real_groups: group (patient) -> its case ids; a group never straddles folds.
        synthetic: synthetic case ids; they are in the training set of every fold.
        n_folds: number of folds. With fewer groups than folds, the folds repeat
            (fold ``k`` validates on group ``k % n_groups``) so that every fold index exists.
        seed: shuffles the groups.
        strata: group -> stratum (e.g. diagnosis); groups are dealt out round-robin per
            stratum so that each fold gets a similar mix.
    """
    groups = sorted(real_groups)
    if not groups:
        raise ValueError("make_splits: no real cases to validate on")
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    if strata:
        order.sort(key=lambda g: str(strata.get(g) or ""))  # stable: shuffled within a stratum
    n_bins = min(n_folds, len(order))
    bins: list[list[str]] = [[] for _ in range(n_bins)]
    for i, g in enumerate(order):
        bins[i % n_bins].append(g)
    all_real = sorted(c for g in groups for c in real_groups[g])
    synth = sorted(synthetic)
    splits = []
    for k in range(n_folds):
        val = sorted(c for g in bins[k % n_bins] for c in real_groups[g])
        val_set = set(val)
        splits.append({"train": [c for c in all_real if c not in val_set] + synth, "val": val})
    return splits


# --- planning ---------------------------------------------------------------------------


@dataclass
class _Item:
    """One case of the export: where it comes from and what to write."""

    case_id: str                      # nnU-Net identifier
    kind: str                         # "real" or "synthetic"
    original_id: str | None = None
    src_dir: Path | None = None       # AutoPET-layout case folder (None: generated)
    demographics: Demographics | None = None
    group: str | None = None          # patient (splits)
    seed: int | None = None           # generated cases
    shape: tuple[int, int, int] | None = None
    affine: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


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


def _header(path: Path, case_id: str) -> tuple[tuple[int, int, int], np.ndarray]:
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise CaseError(f"case {case_id}: unreadable {path.name}: {type(err).__name__}: {err}") from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise CaseError(f"case {case_id}: {path.name} has shape {shape}; expected a 3D volume")
    return shape, affine


def _label_file(labels: str) -> str:
    return SEG_FILE if labels == "lesions" else ORGANS_FILE


def _check_case_files(case_dir: Path, case_id: str, labels: str, what: str) -> tuple[tuple[int, int, int], np.ndarray]:
    """Check that a case folder has CT, SUV and the label file on one grid (headers only)."""
    needed = [CT_FILE, PET_FILE, _label_file(labels)]
    missing = [f for f in needed if not (case_dir / f).is_file()]
    if missing:
        hint = ""
        if labels == "organs" and missing == [ORGANS_FILE]:
            hint = f" (`labels` organs needs {ORGANS_FILE} in every {what} case; real AutoPET has none)"
        elif CT_FILE in missing and any(p.is_dir() and (p / CT_FILE).is_file() for p in case_dir.iterdir()):
            hint = (" - this looks like the original AutoPET download (patient/study sub-folders); "
                    "convert it to the synthaug AutoPET layout first (synthaug prepare)")
        raise CaseError(f"{what} case {case_id}: missing {', '.join(missing)} in {case_dir}{hint}")
    shape, affine = _header(case_dir / CT_FILE, case_id)
    for name in needed[1:]:
        s, a = _header(case_dir / name, case_id)
        if not same_grid(shape, affine, s, a):
            raise CaseError(f"{what} case {case_id}: {name} grid {s} does not match {CT_FILE} grid {shape} "
                            "(or their affines differ by more than 0.001 mm)")
    return shape, affine


def _scan_cohort(root: str | Path, *, what: str, labels: str, strict: bool) -> tuple[list[str], dict[str, Demographics], Path]:
    """Case ids and demographics of an AutoPET-layout folder.

    ``strict``: without ``demographics.csv`` every sub-folder must be a case (real cohorts);
    otherwise only folders holding a ``CTres.nii.gz`` count (a synthetic cache may hold more).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {root}")
    root = root.resolve()
    if (root / DEMOGRAPHICS_FILE).is_file():
        cohort = Cohort(root)
        return list(cohort.case_ids), dict(cohort.demographics), root
    if strict:
        ids = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    else:
        ids = sorted(p.name for p in root.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and (p / CT_FILE).is_file())
    if not ids:
        raise CaseError(f"{what} folder {root}: no case folders found (expected the AutoPET layout "
                        f"<case_id>/{CT_FILE}, {PET_FILE}, {SEG_FILE} plus {DEMOGRAPHICS_FILE})")
    return ids, {}, root


def _patient_ids(root: Path) -> dict[str, str]:
    """case_id -> patient_id from ``demographics.csv`` when it has a ``patient_id`` column."""
    path = root / DEMOGRAPHICS_FILE
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "patient_id" not in fields:
            return {}
        out = {}
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if row.get("case_id") and row.get("patient_id"):
                out[row["case_id"]] = row["patient_id"]
        return out


def _read_meta(case_dir: Path) -> dict:
    path = case_dir / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CaseError(f"case {case_dir.name}: unreadable {META_FILE}: {err}") from None
    return meta if isinstance(meta, dict) else {}


def _nnunet_id(case_id: str, used: dict[str, str], what: str) -> str:
    """A file-name-safe nnU-Net identifier for ``case_id``, unique within the export."""
    new = _BAD_ID_CHARS.sub("_", case_id).strip("._") or "case"
    if new in used:
        raise ValueError(f"{what} case ids {used[new]!r} and {case_id!r} both map to nnU-Net identifier {new!r}; "
                         "rename one of them")
    used[new] = case_id
    return new


def _median_spacing(items: Sequence[_Item]) -> tuple[float, float, float]:
    spacings = np.array([spacing_of(it.affine) for it in items])
    return tuple(float(s) for s in np.median(spacings, axis=0))


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


# --- the export -------------------------------------------------------------------------


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
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        say(f"warning: {msg}")

    # -- arguments ----------------------------------------------------------------------
    folder = dataset_folder_name(dataset_id, name)
    nnunet_labels(labels)
    nnunet_channel_names(pet_norm)
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"`resample`: expected one of {RESAMPLE_MODES}, got {resample!r}")
    check_seed(seed)
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ValueError(f"`spacing`: expected three positive numbers (mm), got {spacing!r}")
    if synthetic is not None and (generator is not None or n_synthetic is not None):
        raise ValueError("give either `synthetic` DIR or `n_synthetic` N (generate), not both")
    if n_synthetic is not None and ratio is not None:
        raise ValueError("give either `n_synthetic` N or `ratio` R, not both")
    if n_synthetic is not None and (isinstance(n_synthetic, bool) or not isinstance(n_synthetic, (int, np.integer))
                                    or n_synthetic < 0):
        raise ValueError(f"`n_synthetic`: expected a non-negative integer, got {n_synthetic!r}")
    if ratio is not None:
        if not np.isfinite(ratio) or ratio < 0:
            raise ValueError(f"`ratio`: expected a non-negative number of synthetic cases per real case, got {ratio!r}")
        if real is None:
            raise ValueError("`ratio` needs `real` (it is the number of synthetic cases per real case)")
    generate = synthetic is None and (n_synthetic is not None or (ratio is not None and ratio > 0))
    if generate and generator is None:
        raise ValueError("generating synthetic cases needs a generator (`generator`)")
    if real is None and synthetic is None and not generate:
        raise ValueError("nothing to export: give `real` and/or `synthetic` / `n_synthetic`")
    if resample == "always" and spacing is None and real is None:
        raise ValueError("`resample` always needs a target: `real` (its median spacing) or `spacing`")

    out_root = Path(out_root).expanduser()
    if out_root.exists() and not out_root.is_dir():
        raise NotADirectoryError(f"`out_root`: not a folder: {out_root}")
    out_root = out_root.resolve()
    target = out_root / folder
    if target.exists() and not force:
        raise FileExistsError(f"dataset folder already exists: {target} (pass `force` to replace it)")
    pp_dir = Path(preprocessed).expanduser().resolve() / folder if preprocessed is not None else None
    check_dataset_id(dataset_id, name, [out_root, pp_dir.parent if pp_dir else None, os.environ.get("nnUNet_results")])
    if pp_dir is not None and (pp_dir / SPLITS_FILE).exists() and not force:
        raise FileExistsError(f"{pp_dir / SPLITS_FILE} already exists (from an earlier export?); "
                              "pass `force` to replace it")

    # -- real cases ---------------------------------------------------------------------
    used: dict[str, str] = {}
    items: list[_Item] = []
    real_root = None
    if real is not None:
        ids, demos, real_root = _scan_cohort(real, what="real", labels=labels, strict=True)
        if target == real_root or target in real_root.parents:
            raise ValueError(f"`real` {real_root} lies inside the dataset folder being written ({target})")
        if labels == "organs":
            lacking = [c for c in ids if not (real_root / c / ORGANS_FILE).is_file()]
            if lacking:
                raise CaseError(f"`labels` organs needs {ORGANS_FILE} in every real case; {len(lacking)} case(s) lack it, "
                                f"e.g. {lacking[0]} (expected {real_root / lacking[0] / ORGANS_FILE})")
        patients = _patient_ids(real_root)
        if not demos:
            warn(f"{real_root} has no {DEMOGRAPHICS_FILE}: no demographics recorded for the real cases")
        for cid in ids:
            if cid.startswith(SYNTHETIC_PREFIX):
                raise ValueError(f"real case {cid!r} starts with {SYNTHETIC_PREFIX!r}, the prefix reserved for "
                                 "synthetic cases; rename it")
            shape, affine = _check_case_files(real_root / cid, cid, labels, "real")
            items.append(_Item(case_id=_nnunet_id(cid, used, "real"), kind="real", original_id=cid,
                               src_dir=real_root / cid, demographics=demos.get(cid),
                               group=patients.get(cid, cid), shape=shape, affine=affine))
    real_items = list(items)
    n_real = len(real_items)

    # -- synthetic cases ----------------------------------------------------------------
    synth_items: list[_Item] = []
    synth_root = None
    if synthetic is not None:
        ids, demos, synth_root = _scan_cohort(synthetic, what="synthetic", labels=labels, strict=False)
        if target == synth_root or target in synth_root.parents:
            raise ValueError(f"`synthetic` {synth_root} lies inside the dataset folder being written ({target})")
        if ratio is not None:
            wanted = int(round(ratio * n_real))
            if wanted > len(ids):
                raise ValueError(f"`ratio` {ratio:g} x {n_real} real cases needs {wanted} synthetic cases, "
                                 f"but {synth_root} holds only {len(ids)}")
            pick = np.sort(np.random.default_rng([seed, 2]).choice(len(ids), size=wanted, replace=False))
            ids = [ids[i] for i in pick]
        for cid in ids:
            shape, affine = _check_case_files(synth_root / cid, cid, labels, "synthetic")
            meta = _read_meta(synth_root / cid)
            demo = demos.get(cid)
            if demo is None and isinstance(meta.get("demographics"), dict):
                try:
                    demo = Demographics(**meta["demographics"])
                except (TypeError, ValueError) as err:
                    raise CaseError(f"synthetic case {cid}: bad demographics in {META_FILE}: {err}") from None
            synth_items.append(_Item(case_id="", kind="synthetic", original_id=cid, src_dir=synth_root / cid,
                                     demographics=demo, shape=shape, affine=affine, meta=meta))
    elif generate:
        n_gen = int(n_synthetic) if n_synthetic is not None else int(round(ratio * n_real))
        like = [it.demographics for it in real_items if it.demographics is not None]
        if real is not None and not like:
            warn("the real cohort has no demographics: synthetic demographics are drawn from the AutoPET-like "
                 "population instead of matched to it")
        demos_gen = sample_population(n_gen, seed, like=like or None)
        case_seeds = [int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(n_gen)] if n_gen else []
        for d, s in zip(demos_gen, case_seeds):
            synth_items.append(_Item(case_id="", kind="synthetic", demographics=d, seed=s))
    for i, it in enumerate(synth_items, start=1):
        it.case_id = f"{SYNTHETIC_PREFIX}{i:05d}"
        it.group = it.case_id
    items += synth_items
    if not items:
        raise ValueError("nothing to export: the inputs give 0 cases")

    # -- target spacing, splits ---------------------------------------------------------
    target_spacing = spacing if spacing is not None else (_median_spacing(real_items) if real_items else None)
    if real_items:
        groups: dict[str, list[str]] = {}
        strata: dict[str, str | None] = {}
        for it in real_items:
            groups.setdefault(it.group, []).append(it.case_id)
            strata.setdefault(it.group, it.demographics.diagnosis if it.demographics else None)
        if len(groups) < NUM_FOLDS:
            warn(f"only {len(groups)} real patient(s) for {NUM_FOLDS} folds: folds repeat "
                 f"(fold k validates on the same cases as fold k mod {len(groups)})")
        splits = make_splits(groups, [it.case_id for it in synth_items], seed=seed, strata=strata)
    else:
        warn("no real cases: there is no honest validation; splits_final.json validates on synthetic cases, "
             "so its scores say nothing about real data")
        splits = make_splits({it.case_id: [it.case_id] for it in synth_items}, seed=seed)

    gen = None
    if generate:
        gen = generator() if not hasattr(generator, "sample") and callable(generator) else generator
        if not isinstance(gen, CaseGenerator):
            raise TypeError(f"generator: {type(gen).__name__} does not implement the CaseGenerator protocol")

    # -- build in a temporary folder beside the target ----------------------------------
    out_root.mkdir(parents=True, exist_ok=True)
    for stale in out_root.glob(f".{folder}.*.tmp"):  # left by an earlier interrupted export of this dataset
        shutil.rmtree(stale, ignore_errors=True)
    tmp = temporary_dir(out_root, folder)
    records = []
    try:
        images_dir, labels_dir = tmp / "imagesTr", tmp / "labelsTr"
        images_dir.mkdir()
        labels_dir.mkdir()
        from ..core.progress import progress_bar

        for it in progress_bar(items, desc=f"export {folder}", unit="case", disable=not progress):
            records.append(_export_item(it, images_dir, labels_dir, labels=labels, copy=copy, gen=gen,
                                        target_spacing=target_spacing, resample=resample))
        _write_metadata(tmp, folder, labels=labels, pet_norm=pet_norm, n_real=n_real, records=records,
                        splits=splits, gen=gen, real_root=real_root, synth_root=synth_root, seed=seed,
                        resample=resample, target_spacing=target_spacing, copy=copy)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    splits_paths = [target / SPLITS_FILE]
    if pp_dir is not None:
        atomic_write_json(pp_dir / SPLITS_FILE, splits)
        splits_paths.append(pp_dir / SPLITS_FILE)
    return ExportResult(path=target, dataset_name=folder, num_real=n_real, num_synthetic=len(synth_items),
                        splits=splits, splits_paths=splits_paths, warnings=warnings)


def _export_item(it: _Item, images_dir: Path, labels_dir: Path, *, labels: str, copy: bool,
                 gen: CaseGenerator | None, target_spacing, resample: str) -> dict:
    """Write one case into the temporary dataset folder; return its sidecar record."""
    rec: dict = {"case_id": it.case_id, "source": it.kind, "original_case_id": it.original_id,
                 "origin": str(it.src_dir) if it.src_dir is not None else "generated",
                 "patient_id": it.group if it.kind == "real" else None,
                 "demographics": it.demographics.to_dict() if it.demographics is not None else None,
                 "resampled": None}
    ct_dst = images_dir / f"{it.case_id}_0000{FILE_ENDING}"
    pet_dst = images_dir / f"{it.case_id}_0001{FILE_ENDING}"
    label_dst = labels_dir / f"{it.case_id}{FILE_ENDING}"
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
        label_how = _export_label(it.src_dir / _label_file(labels), label_dst, it.case_id, labels, copy)
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


def _write_metadata(tmp: Path, folder: str, *, labels: str, pet_norm: str, n_real: int, records: list[dict],
                    splits: list, gen: CaseGenerator | None, real_root: Path | None, synth_root: Path | None,
                    seed: int, resample: str, target_spacing, copy: bool) -> None:
    """dataset.json (nnunetv2's own writer), the provenance sidecar and the splits copy."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    from .. import __version__

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
        "real_root": str(real_root) if real_root else None,
        "synthetic_root": str(synth_root) if synth_root else None,
        "real_images": "copied" if copy else "symlinked",
        "generator": {"sha256": gen.sha256, "settings": gen.settings} if gen is not None else None,
        "seed": seed,
        "resample": {"mode": resample, "target_spacing": list(target_spacing) if target_spacing else None},
        "splits": SPLITS_FILE,
        "citation": citations,
        "cases": records,
    }
    atomic_write_json(tmp / SIDECAR_FILE, sidecar)
    atomic_write_json(tmp / SPLITS_FILE, splits)
