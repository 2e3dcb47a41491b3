"""Checking and planning an nnU-Net v2 export, before anything is written.

:func:`validate_export` checks every argument of :func:`synthaug.data.nnunet.export_nnunet`
(one clear line per problem, naming the parameter); :func:`plan_export` then reads the
inputs (folder listings, NIfTI headers, ``meta.json``) and decides every case, its
nnU-Net identifier and files, the target spacing and the folds, as an :class:`ExportPlan`.
Nothing here writes a file; :mod:`synthaug.data.nnunet` writes the plan.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

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
    same_grid,
)
from ..core.seeds import check_seed
from .nnunet_layout import (
    FILE_ENDING,
    NUM_FOLDS,
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

_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


# --- what an export is asked for, and what it will write -------------------------------


@dataclass(frozen=True)
class ExportRequest:
    """The checked arguments of an export (:func:`validate_export`); the inputs not read yet."""

    out_root: Path                    # resolved nnU-Net raw folder
    folder: str                       # DatasetXXX_NAME
    real: str | Path | None
    synthetic: str | Path | None
    n_synthetic: int | None
    ratio: float | None
    generate: bool                    # new cases come from the generator
    labels: str
    pet_norm: str
    resample: str
    spacing: tuple[float, float, float] | None
    copy: bool
    seed: int
    preprocessed: Path | None         # <nnUNet_preprocessed>/DatasetXXX_NAME, if given

    @property
    def target(self) -> Path:
        """The dataset folder the export writes."""
        return self.out_root / self.folder

    @property
    def label_file(self) -> str:
        """The AutoPET-layout file that holds the exported labels."""
        return _label_file(self.labels)


@dataclass(frozen=True, eq=False)
class ExportCase:
    """One case of an export: its nnU-Net identifier, where it comes from, and what to write."""

    case_id: str                      # nnU-Net identifier
    kind: str                         # "real" or "synthetic"
    group: str                        # patient: a fold never splits one
    original_id: str | None = None
    src_dir: Path | None = None       # AutoPET-layout case folder (None: generated)
    demographics: Demographics | None = None
    seed: int | None = None           # generated cases
    shape: tuple[int, int, int] | None = None
    affine: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def files(self) -> tuple[str, str, str]:
        """CT image, SUV image and label, relative to the dataset folder."""
        return (f"imagesTr/{self.case_id}_0000{FILE_ENDING}", f"imagesTr/{self.case_id}_0001{FILE_ENDING}",
                f"labelsTr/{self.case_id}{FILE_ENDING}")


@dataclass(frozen=True, eq=False)
class ExportPlan:
    """What an export will write (:func:`plan_export`): the dataset folder, every case with its
    source and files, the target spacing for resampling, the folds, and the warnings on the way."""

    request: ExportRequest
    cases: tuple[ExportCase, ...]
    real_root: Path | None
    synthetic_root: Path | None
    target_spacing: tuple[float, float, float] | None
    splits: list[dict[str, list[str]]]
    warnings: tuple[str, ...] = ()

    @property
    def target(self) -> Path:
        return self.request.target

    @property
    def real_cases(self) -> tuple[ExportCase, ...]:
        return tuple(c for c in self.cases if c.kind == "real")

    @property
    def synthetic_cases(self) -> tuple[ExportCase, ...]:
        return tuple(c for c in self.cases if c.kind == "synthetic")

    @property
    def num_real(self) -> int:
        return len(self.real_cases)

    @property
    def num_synthetic(self) -> int:
        return len(self.synthetic_cases)

    @property
    def splits_paths(self) -> list[Path]:
        """Where ``splits_final.json`` goes: the dataset folder, and the preprocessed folder if given."""
        pp = self.request.preprocessed
        return [self.target / SPLITS_FILE] + ([pp / SPLITS_FILE] if pp is not None else [])

    @property
    def files(self) -> list[Path]:
        """Every file the export writes, the case files in case order first."""
        per_case = [self.target / f for c in self.cases for f in c.files]
        return per_case + [self.target / "dataset.json", self.target / SIDECAR_FILE, *self.splits_paths]


# --- reading the inputs (headers and listings only) ------------------------------------


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


def _median_spacing(items: Sequence[ExportCase]) -> tuple[float, float, float]:
    spacings = np.array([spacing_of(it.affine) for it in items])
    return tuple(float(s) for s in np.median(spacings, axis=0))


# --- step 1: the arguments ------------------------------------------------------------


def validate_export(
    out_root: str | Path,
    dataset_id: int,
    name: str,
    *,
    real: str | Path | None = None,
    synthetic: str | Path | None = None,
    generator: object | None = None,
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
) -> ExportRequest:
    """Check every argument of :func:`~synthaug.data.nnunet.export_nnunet` (same meanings) before
    any work; raise with one line naming the parameter. Reads only whether folders exist."""
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
    generate = _check_sources(real, synthetic, generator, n_synthetic, ratio)
    if resample == "always" and spacing is None and real is None:
        raise ValueError("`resample` always needs a target: `real` (its median spacing) or `spacing`")
    out_root, pp_dir = _check_output(out_root, dataset_id, name, folder, preprocessed, force)
    return ExportRequest(out_root=out_root, folder=folder, real=real, synthetic=synthetic, n_synthetic=n_synthetic,
                         ratio=ratio, generate=generate, labels=labels, pet_norm=pet_norm, resample=resample,
                         spacing=spacing, copy=copy, seed=seed, preprocessed=pp_dir)


def _check_sources(real, synthetic, generator, n_synthetic, ratio) -> bool:
    """Check how the cases are asked for; return whether new cases are to be generated."""
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
    return generate


def _check_output(out_root, dataset_id, name, folder, preprocessed, force) -> tuple[Path, Path | None]:
    """Check where the dataset goes; return the resolved ``out_root`` and preprocessed dataset folder."""
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
    return out_root, pp_dir


# --- step 2: the plan -----------------------------------------------------------------


def plan_export(request: ExportRequest, *, warn: Callable[[str], None] | None = None) -> ExportPlan:
    """Decide every case, file and fold of ``request`` from the inputs' listings and headers.

    Raises on bad inputs (missing or mismatched files, clashing ids, too few synthetic cases)
    before anything is written; each warning goes to ``warn`` as it arises and into the plan.
    """
    warnings: list[str] = []

    def note(msg: str) -> None:
        warnings.append(msg)
        if warn is not None:
            warn(msg)

    real_cases, real_root = _plan_real(request, note)
    synth_cases, synth_root = _plan_synthetic(request, real_cases, note)
    if not real_cases and not synth_cases:
        raise ValueError("nothing to export: the inputs give 0 cases")
    spacing = request.spacing
    target_spacing = spacing if spacing is not None else (_median_spacing(real_cases) if real_cases else None)
    splits = _plan_splits(real_cases, synth_cases, request.seed, note)
    return ExportPlan(request=request, cases=tuple(real_cases + synth_cases), real_root=real_root,
                      synthetic_root=synth_root, target_spacing=target_spacing, splits=splits,
                      warnings=tuple(warnings))


def _plan_real(request: ExportRequest, warn: Callable[[str], None]) -> tuple[list[ExportCase], Path | None]:
    """The real cases, each checked (files, one grid) from its headers."""
    if request.real is None:
        return [], None
    labels, target = request.labels, request.target
    ids, demos, real_root = _scan_cohort(request.real, what="real", labels=labels, strict=True)
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
    used: dict[str, str] = {}
    cases = []
    for cid in ids:
        if cid.startswith(SYNTHETIC_PREFIX):
            raise ValueError(f"real case {cid!r} starts with {SYNTHETIC_PREFIX!r}, the prefix reserved for "
                             "synthetic cases; rename it")
        shape, affine = _check_case_files(real_root / cid, cid, labels, "real")
        cases.append(ExportCase(case_id=_nnunet_id(cid, used, "real"), kind="real", original_id=cid,
                                src_dir=real_root / cid, demographics=demos.get(cid),
                                group=patients.get(cid, cid), shape=shape, affine=affine))
    return cases, real_root


def _plan_synthetic(request: ExportRequest, real_cases: list[ExportCase],
                    warn: Callable[[str], None]) -> tuple[list[ExportCase], Path | None]:
    """The synthetic cases: those of ``synthetic`` (checked, maybe subsampled), or those to generate."""
    n_real, seed = len(real_cases), request.seed
    if request.synthetic is not None:
        return _plan_synthetic_folder(request, n_real)
    if not request.generate:
        return [], None
    n_gen = int(request.n_synthetic) if request.n_synthetic is not None else int(round(request.ratio * n_real))
    like = [c.demographics for c in real_cases if c.demographics is not None]
    if request.real is not None and not like:
        warn("the real cohort has no demographics: synthetic demographics are drawn from the AutoPET-like "
             "population instead of matched to it")
    demos_gen = sample_population(n_gen, seed, like=like or None)
    case_seeds = [int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(n_gen)] if n_gen else []
    return [ExportCase(case_id=_synthetic_id(i), kind="synthetic", group=_synthetic_id(i), demographics=d, seed=s)
            for i, (d, s) in enumerate(zip(demos_gen, case_seeds), start=1)], None


def _plan_synthetic_folder(request: ExportRequest, n_real: int) -> tuple[list[ExportCase], Path]:
    ids, demos, synth_root = _scan_cohort(request.synthetic, what="synthetic", labels=request.labels, strict=False)
    target, ratio = request.target, request.ratio
    if target == synth_root or target in synth_root.parents:
        raise ValueError(f"`synthetic` {synth_root} lies inside the dataset folder being written ({target})")
    if ratio is not None:
        wanted = int(round(ratio * n_real))
        if wanted > len(ids):
            raise ValueError(f"`ratio` {ratio:g} x {n_real} real cases needs {wanted} synthetic cases, "
                             f"but {synth_root} holds only {len(ids)}")
        pick = np.sort(np.random.default_rng([request.seed, 2]).choice(len(ids), size=wanted, replace=False))
        ids = [ids[i] for i in pick]
    cases = []
    for i, cid in enumerate(ids, start=1):
        shape, affine = _check_case_files(synth_root / cid, cid, request.labels, "synthetic")
        meta = _read_meta(synth_root / cid)
        demo = demos.get(cid)
        if demo is None and isinstance(meta.get("demographics"), dict):
            try:
                demo = Demographics(**meta["demographics"])
            except (TypeError, ValueError) as err:
                raise CaseError(f"synthetic case {cid}: bad demographics in {META_FILE}: {err}") from None
        cases.append(ExportCase(case_id=_synthetic_id(i), kind="synthetic", group=_synthetic_id(i), original_id=cid,
                                src_dir=synth_root / cid, demographics=demo, shape=shape, affine=affine, meta=meta))
    return cases, synth_root


def _synthetic_id(i: int) -> str:
    return f"{SYNTHETIC_PREFIX}{i:05d}"


def _plan_splits(real_cases: list[ExportCase], synth_cases: list[ExportCase], seed: int,
                 warn: Callable[[str], None]) -> list[dict[str, list[str]]]:
    """Folds that validate on real cases only (patient-level, stratified by diagnosis)."""
    if not real_cases:
        warn("no real cases: there is no honest validation; splits_final.json validates on synthetic cases, "
             "so its scores say nothing about real data")
        return make_splits({c.case_id: [c.case_id] for c in synth_cases}, seed=seed)
    groups: dict[str, list[str]] = {}
    strata: dict[str, str | None] = {}
    for c in real_cases:
        groups.setdefault(c.group, []).append(c.case_id)
        strata.setdefault(c.group, c.demographics.diagnosis if c.demographics else None)
    if len(groups) < NUM_FOLDS:
        warn(f"only {len(groups)} real patient(s) for {NUM_FOLDS} folds: folds repeat "
             f"(fold k validates on the same cases as fold k mod {len(groups)})")
    return make_splits(groups, [c.case_id for c in synth_cases], seed=seed, strata=strata)
