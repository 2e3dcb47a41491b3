"""The studies in an AutoPET download: which form it is, where each study's images are, their ids,
and whether a study can be prepared (all images present and readable, on one grid).

Read-only: used by :mod:`synthaug.data.prepare` to plan a cohort before writing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..core.io import CT_FILE, DEMOGRAPHICS_FILE, PET_FILE, SEG_FILE, same_grid

FORM_TCIA = "tcia"
FORM_NNUNET = "nnunet"
FORM_SYNTHAUG = "synthaug"
FORM_NAMES = {
    FORM_TCIA: "TCIA NIfTI conversion (PETCT_<id>/<study>/{CTres,SUV,SEG}.nii.gz)",
    FORM_NNUNET: "challenge release in nnU-Net structure (imagesTr/, labelsTr/)",
    FORM_SYNTHAUG: "synthaug's AutoPET layout",
}
#: (key of Study.files, file name in the cohort) for the three images a case needs.
IMAGE_KEYS = (("CTres", CT_FILE), ("SUV", PET_FILE), ("SEG", SEG_FILE))
_EXPECTED_FORMS = (
    "expected AutoPET as the TCIA NIfTI conversion (PETCT_<id>/<study>/{CTres,SUV,SEG}.nii.gz) "
    "or the challenge release in nnU-Net structure (imagesTr/*_0000.nii.gz + *_0001.nii.gz, labelsTr/)"
)

_STUDY_DATE_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{4})(?:-|$)")
_TRAILING_NUMBER_RE = re.compile(r"-(\d+)$")
_NNUNET_IMAGE_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii\.gz$")


# --- ids -------------------------------------------------------------------------------


def bare_patient_id(subject_id: str) -> str:
    """``PETCT_0011f3deaf`` -> ``0011f3deaf`` (other ids unchanged, trimmed)."""
    s = str(subject_id).strip()
    return s[len("PETCT_"):] if s.upper().startswith("PETCT_") else s


def study_date(study: str) -> str | None:
    """``YYYYMMDD`` from a TCIA study folder name (``03-23-2003-NA-...``), else ``None``."""
    m = _STUDY_DATE_RE.match(study.strip())
    if not m:
        return None
    month, day, year = m.groups()
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31):
        return None
    return f"{year}{month}{day}"


def _sanitise(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def make_case_id(patient: str, study: str) -> str:
    """A stable case id from a patient id and a TCIA study folder name.

    ``("PETCT_0011f3deaf", "03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445")``
    -> ``0011f3deaf_20030323_10445`` (patient, study date, the study's trailing number).
    A study name without a TCIA date becomes a sanitised name plus a short hash of it.
    """
    p = _sanitise(bare_patient_id(patient)) or "patient"
    date = study_date(study)
    if date is not None:
        tail = _TRAILING_NUMBER_RE.search(study.strip())
        return f"{p}_{date}" + (f"_{tail.group(1)}" if tail else "")
    s = _sanitise(study)
    if s == study and 0 < len(s) <= 32:
        return f"{p}_{s}"
    return f"{p}_{s[:24]}_{_short_hash(study)}".replace("__", "_")


# --- studies in the source -----------------------------------------------------------


@dataclass
class Study:
    """One PET/CT study found in the source."""

    patient_id: str                    # bare id (``PETCT_`` stripped)
    subject_id: str                    # as named in the source
    study: str                         # TCIA study folder name
    files: dict[str, Path | None]      # CTres / SUV / SEG -> source file (None if missing)
    date: str | None = None            # YYYYMMDD
    case_id: str = ""
    nnunet_name: str | None = None
    nnunet_fold: int | None = None
    study_uid: str | None = None
    missing_hint: dict[str, str] = field(default_factory=dict)


@dataclass
class Skip:
    """A study that is not prepared, and why."""

    code: str
    reason: str
    case_id: str = ""
    patient_id: str = ""
    study: str = ""

    def to_dict(self) -> dict:
        return {"case_id": self.case_id, "patient_id": self.patient_id, "study": self.study,
                "code": self.code, "reason": self.reason}


class AlreadyPreparedError(ValueError):
    """The source already is a cohort in synthaug's AutoPET layout."""


def _has_autopet_images(folder: Path) -> bool:
    return any((folder / n).exists() for n in ("CTres.nii.gz", "SUV.nii.gz", "SEG.nii.gz", "PET.nii.gz", "CT.nii.gz"))


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as err:
        raise OSError(f"cannot list {folder}: {err.strerror or err}") from None


def detect_form(source: str | Path) -> str:
    """Which form ``source`` is: ``"tcia"``, ``"nnunet"`` or ``"synthaug"``.

    Raises a one-line :class:`ValueError` saying what was found and what was expected
    when it is none of them (empty folder, CT without PET, DICOM, anything else).
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"`source` folder not found: {source}")
    if not source.is_dir():
        raise ValueError(f"`source` must be a folder, got a file: {source}")
    if (source / "imagesTr").is_dir():
        if not any((source / "imagesTr").glob("*_0000.nii.gz")):
            raise ValueError(f"{source}/imagesTr has no *_0000.nii.gz images; {_EXPECTED_FORMS}")
        return FORM_NNUNET
    subdirs = _subdirs(source)
    direct = [d for d in subdirs if _has_autopet_images(d)]
    nested = [d for d in subdirs if any(_has_autopet_images(s) for s in _subdirs(d))]
    if nested:
        return FORM_TCIA
    if direct:
        if (source / DEMOGRAPHICS_FILE).is_file() or not any(study_date(d.name) for d in direct):
            return FORM_SYNTHAUG
        raise ValueError(
            f"{source} looks like one patient folder of the TCIA NIfTI conversion (study folders "
            f"{direct[0].name!r}, ...); pass the folder that holds the PETCT_<id> folders as `source`"
        )
    _refuse(source)
    raise AssertionError("unreachable")  # pragma: no cover


def source_form(source: str | Path) -> str:
    """:func:`detect_form` for a source to prepare: :class:`AlreadyPreparedError` when it already is a cohort."""
    form = detect_form(source)
    if form == FORM_SYNTHAUG:
        source = Path(source)
        n = sum(1 for d in _subdirs(source) if (d / CT_FILE).exists())
        demo = ("with " if (source / DEMOGRAPHICS_FILE).is_file() else "without ") + DEMOGRAPHICS_FILE
        raise AlreadyPreparedError(
            f"{source} is already in synthaug's AutoPET layout ({n} case folders, {demo}); "
            "use it directly as a cohort, nothing to prepare"
        )
    return form


def _refuse(source: Path) -> None:
    """Raise the clearest error for a folder that is not AutoPET."""
    entries = [p for p in source.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise ValueError(f"`source` {source} is empty; {_EXPECTED_FORMS}")
    files: list[Path] = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if len(Path(root).relative_to(source).parts) > 3:
            dirs[:] = []
        files.extend(Path(root) / n for n in sorted(names))
        if len(files) > 5000:
            break
    nifti = [f for f in files if f.name.endswith((".nii", ".nii.gz"))]
    if nifti:
        names = sorted({f.name for f in nifti})
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        if not any(n in ("SUV.nii.gz", "PET.nii.gz") or n.endswith("_0001.nii.gz") for n in names):
            raise ValueError(
                f"{source} has NIfTI images ({shown}) but no PET/SUV image: synthaug prepare needs "
                f"PET/CT studies; {_EXPECTED_FORMS}"
            )
        raise ValueError(f"{source} has NIfTI images ({shown}) but not in a known layout; {_EXPECTED_FORMS}")
    if any(f.suffix.lower() == ".dcm" for f in files):
        raise ValueError(
            f"{source} holds DICOM files, not NIfTI: pass it as `dicom` (headers are read for demographics) "
            f"and the NIfTI conversion as `source`; {_EXPECTED_FORMS}"
        )
    shown = ", ".join(sorted(p.name for p in entries)[:4])
    raise ValueError(f"{source} does not look like AutoPET (found {shown}); {_EXPECTED_FORMS}")


def find_tcia_studies(source: Path) -> list[Study]:
    """Studies of the TCIA NIfTI conversion: ``<source>/<patient>/<study>/*.nii.gz``."""
    studies = []
    for patient_dir in _subdirs(source):
        for study_dir in _subdirs(patient_dir):
            if not _has_autopet_images(study_dir):
                continue
            files: dict[str, Path | None] = {}
            hints = {}
            for key, name in IMAGE_KEYS:
                p = study_dir / name
                files[key] = p if p.exists() or p.is_symlink() else None
            if files["SUV"] is None and (study_dir / "PET.nii.gz").exists():
                hints["SUV"] = "PET.nii.gz (Bq/ml) is present; AutoPET's SUV.nii.gz is needed"
            if files["CTres"] is None and (study_dir / "CT.nii.gz").exists():
                hints["CTres"] = "CT.nii.gz is present but not resampled to the PET grid (CTres.nii.gz)"
            studies.append(Study(
                patient_id=bare_patient_id(patient_dir.name), subject_id=patient_dir.name,
                study=study_dir.name, files=files, date=study_date(study_dir.name), missing_hint=hints,
            ))
    return studies


def find_nnunet_studies(source: Path) -> tuple[list[Study], list[Skip], list[str]]:
    """Studies of the nnU-Net release; PSMA and unparseable names are returned as skips."""
    warnings: list[str] = []
    dataset_json = source / "dataset.json"
    if dataset_json.is_file():
        try:
            ds = json.loads(dataset_json.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{dataset_json}: not valid JSON ({err})") from None
        ending = ds.get("file_ending", ".nii.gz")
        if ending != ".nii.gz":
            raise ValueError(f"{dataset_json}: file_ending {ending!r} is not supported; expected '.nii.gz'")
        channels = ds.get("channel_names") or ds.get("modality") or {}
        if channels and len(channels) < 2:
            raise ValueError(
                f"{dataset_json}: {len(channels)} channel(s) {dict(channels)}; expected 2 "
                "(0000 = CTres, 0001 = SUV) as in the AutoPET release"
            )
    folds = _read_nnunet_folds(source / "splits_final.json", warnings)
    images = source / "imagesTr"
    labels = source / "labelsTr"
    by_case: dict[str, dict[str, Path]] = defaultdict(dict)
    for p in sorted(images.iterdir()):
        m = _NNUNET_IMAGE_RE.match(p.name)
        if m:
            by_case[m.group("case")][m.group("channel")] = p
    studies, skips = [], []
    for name in sorted(by_case):
        channels = by_case[name]
        parts = name.split("_", 2)
        if parts[0].lower() == "psma":
            skips.append(Skip("not_fdg", "PSMA study; synthaug models 18F-FDG PET/CT only", study=name,
                              patient_id=parts[1] if len(parts) > 1 else ""))
            continue
        if len(parts) < 3 or parts[0].lower() != "fdg" or not parts[1] or not parts[2]:
            skips.append(Skip("bad_name", f"case name {name!r} is not fdg_<patient>_<study>", study=name))
            continue
        label = labels / f"{name}.nii.gz"
        studies.append(Study(
            patient_id=bare_patient_id(parts[1]), subject_id=f"PETCT_{parts[1]}", study=parts[2],
            files={"CTres": channels.get("0000"), "SUV": channels.get("0001"),
                   "SEG": label if label.exists() or label.is_symlink() else None},
            date=study_date(parts[2]), nnunet_name=name, nnunet_fold=folds.get(name),
            missing_hint={"CTres": f"expected imagesTr/{name}_0000.nii.gz", "SUV": f"expected imagesTr/{name}_0001.nii.gz",
                          "SEG": f"expected labelsTr/{name}.nii.gz"},
        ))
    return studies, skips, warnings


def _read_nnunet_folds(path: Path, warnings: list[str]) -> dict[str, int]:
    """case name -> index of the fold whose ``val`` holds it (nnU-Net ``splits_final.json``)."""
    if not path.is_file():
        return {}
    try:
        splits = json.loads(path.read_text())
        out = {}
        for i, fold in enumerate(splits):
            for name in fold["val"]:
                out.setdefault(str(name), i)
        return out
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError) as err:
        warnings.append(f"{path}: unreadable ({type(err).__name__}); nnunet_fold left empty")
        return {}


def assign_case_ids(studies: list[Study]) -> None:
    """Give every study its case id; ids that would collide get a short hash appended."""
    for s in studies:
        s.case_id = make_case_id(s.patient_id, s.study)
    counts = Counter(s.case_id for s in studies)
    for s in studies:
        if counts[s.case_id] > 1:
            s.case_id = f"{s.case_id}_{_short_hash(s.patient_id + '/' + s.study)}"


def find_studies(source: Path, form: str) -> tuple[list[Study], list[Skip], list[str]]:
    """The studies of ``source`` (``form`` from :func:`detect_form`) with their case ids, the cases
    skipped by name (nnU-Net release: PSMA, unparseable) and warnings; raises if no FDG study is found."""
    skips: list[Skip] = []
    warnings: list[str] = []
    if form == FORM_TCIA:
        studies = find_tcia_studies(source)
    else:
        studies, skips, warnings = find_nnunet_studies(source)
    if not studies:
        why = f" ({len(skips)} other case(s) skipped, e.g. {skips[0].reason})" if skips else ""
        raise ValueError(f"{source}: no FDG studies found{why}; {_EXPECTED_FORMS}")
    assign_case_ids(studies)
    return studies, skips, warnings


# --- images --------------------------------------------------------------------------------


def _image_header(path: Path, verify: bool) -> tuple[tuple[int, ...], np.ndarray]:
    img = nib.load(str(path))
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(f"expected a 3D image, got shape {shape}")
    if verify:
        np.asanyarray(img.dataobj)  # decompresses everything: catches truncated files
    return shape, np.asarray(img.affine, dtype=np.float64)


def check_study(study: Study, verify: bool = False) -> Skip | None:
    """Why ``study`` cannot be prepared (missing / unreadable file, grid mismatch), or ``None``."""

    def skip(code: str, reason: str) -> Skip:
        return Skip(code, reason, study.case_id, study.patient_id, study.study)

    for key, name in IMAGE_KEYS:
        if study.files.get(key) is None or not study.files[key].exists():
            hint = study.missing_hint.get(key)
            return skip(f"missing_{key.lower()}", f"missing {name}" + (f" ({hint})" if hint else ""))
    grids = {}
    for key, name in IMAGE_KEYS:
        try:
            grids[key] = _image_header(study.files[key], verify)
        except Exception as err:  # noqa: BLE001 -- nibabel raises many types for corrupt files
            alias = "" if study.files[key].name == name else f" ({study.files[key].name})"
            return skip("unreadable", f"unreadable {name}{alias}: {type(err).__name__}: {err}")
    ct_shape, ct_affine = grids["CTres"]
    for key, name in IMAGE_KEYS[1:]:
        shape, affine = grids[key]
        if not same_grid(ct_shape, ct_affine, shape, affine):
            what = f"shape {shape} vs {ct_shape}" if shape != ct_shape else "affines differ"
            return skip("grid_mismatch", f"{name} grid does not match {CT_FILE} ({what})")
    return None

