"""Turn AutoPET, in the forms users actually download it, into a synthaug cohort.

Two source forms are read (see ``docs/real_data.md``):

``tcia``
    The TCIA NIfTI conversion of FDG-PET-CT-Lesions:
    ``<source>/PETCT_<id>/<MM-DD-YYYY-NA-description-NNNNN>/{CT,CTres,PET,SUV,SEG}.nii.gz``,
    several studies per patient.
``nnunet``
    The challenge release in nnU-Net structure: ``imagesTr/fdg_<id>_<study>_0000.nii.gz``
    (CTres), ``_0001`` (SUV), ``labelsTr/fdg_<id>_<study>.nii.gz``, ``dataset.json``,
    ``splits_final.json`` and ``fdg_metadata.csv``. ``<study>`` is the TCIA study
    folder name, so both forms give the same case ids.

The output is synthaug's AutoPET layout: ``<out>/<case_id>/{CTres,SUV,SEG}.nii.gz``
(symbolic links to the source, or copies), ``demographics.csv`` (plus a ``patient_id``
column so splits can stay patient-level), ``cases.csv`` (provenance per case) and
``prepare_report.json``. Demographics come from the metadata CSV and, when given, DICOM
headers; a field that no source gives stays empty: nothing is invented.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import os
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..core.demographics import DEMOGRAPHICS_COLUMNS, Demographics, demographics_rows
from ..core.io import (
    CT_FILE,
    DEMOGRAPHICS_FILE,
    META_FILE,
    PET_FILE,
    SEG_FILE,
    atomic_write_bytes,
    remove_stale_temporaries,
    replace_dir,
    same_grid,
    temporary_dir,
)

FORM_TCIA = "tcia"
FORM_NNUNET = "nnunet"
FORM_SYNTHAUG = "synthaug"
FORM_NAMES = {
    FORM_TCIA: "TCIA NIfTI conversion (PETCT_<id>/<study>/{CTres,SUV,SEG}.nii.gz)",
    FORM_NNUNET: "challenge release in nnU-Net structure (imagesTr/, labelsTr/)",
    FORM_SYNTHAUG: "synthaug's AutoPET layout",
}
#: How images get into the cohort: symlink, falling back to a copy; symlink only; copy.
MODES = ("auto", "symlink", "copy")

CASES_FILE = "cases.csv"
REPORT_FILE = "prepare_report.json"
METADATA_NAMES = ("fdg_metadata.csv",)
#: Columns of ``demographics.csv`` written by prepare: synthaug's columns + ``patient_id``.
PREPARED_DEMOGRAPHICS_COLUMNS = (*DEMOGRAPHICS_COLUMNS, "patient_id")
CASES_COLUMNS = (
    "case_id", "patient_id", "subject_id", "study", "study_date", "study_uid", "form", "stored_as",
    "nnunet_fold", "metadata_match", "dicom_match",
    "age_source", "sex_source", "height_source", "weight_source", "diagnosis_source",
    "ctres_source", "suv_source", "seg_source",
)
_IMAGE_KEYS = (("CTres", CT_FILE), ("SUV", PET_FILE), ("SEG", SEG_FILE))
_PREPARED_BY = "synthaug prepare"
_EXPECTED_FORMS = (
    "expected AutoPET as the TCIA NIfTI conversion (PETCT_<id>/<study>/{CTres,SUV,SEG}.nii.gz) "
    "or the challenge release in nnU-Net structure (imagesTr/*_0000.nii.gz + *_0001.nii.gz, labelsTr/)"
)

_STUDY_DATE_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{4})(?:-|$)")
_TRAILING_NUMBER_RE = re.compile(r"-(\d+)$")
_NNUNET_IMAGE_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii\.gz$")


class AlreadyPreparedError(ValueError):
    """The source already is a cohort in synthaug's AutoPET layout."""


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


def _normalise_date(value: str | None) -> str | None:
    """``YYYYMMDD`` from ``MM-DD-YYYY`` (TCIA), ``YYYY-MM-DD``, ``YYYYMMDD`` or ``MM/DD/YYYY``."""
    if not value:
        return None
    text = str(value).strip()
    for pattern, order in (
        (r"(\d{2})[-/](\d{2})[-/](\d{4})", "mdy"),
        (r"(\d{4})-(\d{2})-(\d{2})", "ymd"),
        (r"(\d{4})(\d{2})(\d{2})", "ymd"),
    ):
        m = re.fullmatch(pattern, text)
        if m:
            a, b, c = m.groups()
            return f"{c}{a}{b}" if order == "mdy" else f"{a}{b}{c}"
    return None


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
            for key, name in _IMAGE_KEYS:
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


# --- metadata CSV ------------------------------------------------------------------------

_META_REQUIRED = ("Subject ID",)
_META_LOCATORS = ("File Location", "Study Date", "Study UID")
_META_VALUES = ("diagnosis", "age", "sex")
_META_OPTIONAL_VALUES = ("height", "height_cm", "weight", "weight_kg", "PatientSize", "PatientWeight")


@dataclass
class MetaStudy:
    """What the metadata CSV says about one study (rows of its series merged)."""

    patient_id: str
    subject_id: str
    study: str | None
    date: str | None
    uid: str | None
    values: dict[str, str] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    matched: bool = False


class MetadataTable:
    """The AutoPET ``fdg_metadata.csv`` (TCIA series list + ``diagnosis``, ``age``, ``sex``), by study."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"metadata CSV not found: {self.path}")
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            text = self.path.read_text(encoding="latin-1")
        reader = csv.DictReader(_io.StringIO(text))
        found = [f.strip() for f in (reader.fieldnames or []) if f is not None]
        lower = {f.lower(): f for f in found}
        missing = [repr(c) for c in _META_REQUIRED if c.lower() not in lower]
        if not any(c.lower() in lower for c in _META_LOCATORS):
            missing.append(" or ".join(repr(c) for c in _META_LOCATORS))
        if not any(c.lower() in lower for c in _META_VALUES):
            missing.append(" or ".join(repr(c) for c in _META_VALUES))
        if missing:
            shown = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "") if found else "no header"
            raise ValueError(
                f"metadata CSV {self.path}: missing column(s) {'; '.join(missing)} (expected AutoPET's fdg_metadata.csv: "
                f"Subject ID, Study UID, Study Date, File Location, diagnosis, age, sex, ...; found: {shown})"
            )
        self.value_columns = [c for c in (*_META_VALUES, *_META_OPTIONAL_VALUES) if c.lower() in lower]
        studies: dict[tuple, MetaStudy] = {}
        for row in reader:
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(v, str) or v is None}
            subject = row.get("subject id", "")
            if not subject:
                continue
            patient = bare_patient_id(subject)
            folder = _study_from_location(row.get("file location", ""), subject)
            date = _normalise_date(row.get("study date")) or (study_date(folder) if folder else None)
            uid = row.get("study uid") or None
            key = (patient, folder) if folder else (patient, "uid", uid) if uid else (patient, "date", date)
            ms = studies.get(key)
            if ms is None:
                ms = studies[key] = MetaStudy(patient, subject, folder, date, uid)
            ms.uid = ms.uid or uid
            ms.date = ms.date or date
            for col in self.value_columns:
                value = row.get(col.lower(), "")
                if not value:
                    continue
                old = ms.values.get(col)
                if old is None:
                    ms.values[col] = value
                elif old != value:
                    ms.conflicts.append(f"{col}: {old!r} vs {value!r}")
        self.studies = list(studies.values())
        self._by_folder = {(m.patient_id, m.study): m for m in self.studies if m.study}
        self._by_uid = {m.uid: m for m in self.studies if m.uid}
        self._by_date: dict[tuple, list[MetaStudy]] = defaultdict(list)
        for m in self.studies:
            if m.date:
                self._by_date[(m.patient_id, m.date)].append(m)

    def match(self, study: Study) -> tuple[MetaStudy | None, str]:
        """The metadata of ``study`` and how it was matched (``folder``, ``date``, or ``""``)."""
        m = self._by_folder.get((study.patient_id, study.study))
        if m is not None:
            return m, "folder"
        if study.date:
            candidates = self._by_date.get((study.patient_id, study.date), [])
            if len(candidates) == 1:
                return candidates[0], "date"
        return None, ""


def _study_from_location(location: str, subject: str) -> str | None:
    """The study folder from a TCIA ``File Location`` (``./FDG-PET-CT-Lesions/PETCT_x/<study>/<series>``)."""
    if not location:
        return None
    parts = [p for p in re.split(r"[\\/]+", location) if p not in ("", ".")]
    bare = bare_patient_id(subject)
    for i, part in enumerate(parts[:-1]):
        if part == subject or bare_patient_id(part) == bare:
            return parts[i + 1]
    return None


# --- DICOM headers -----------------------------------------------------------------------

_DICOM_TAGS = ["PatientID", "StudyInstanceUID", "StudyDate", "Modality", "PatientAge", "PatientSex",
               "PatientSize", "PatientWeight"]
_DICOM_FIELDS = ("PatientAge", "PatientSex", "PatientSize", "PatientWeight")


@dataclass
class DicomStudy:
    """Demographic DICOM header fields of one study (series merged, PET series first)."""

    uid: str | None
    patient_id: str | None
    date: str | None
    folder: tuple[str, str] | None
    values: dict[str, str] = field(default_factory=dict)
    series: int = 0
    matched: bool = False


def scan_dicom(root: str | Path, progress: bool = False) -> list[DicomStudy]:
    """Read one header per series folder under ``root`` (``stop_before_pixels``, no pixel data).

    Series are grouped into studies by StudyInstanceUID; PET (``PT``) series are read
    first for each field, since ``PatientWeight`` is required there for SUV.
    """
    import pydicom

    from ..core.progress import progress_bar

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"`dicom` folder not found: {root}")
    headers = []
    walker = progress_bar(os.walk(root), desc="DICOM headers", unit=" folders", disable=not progress)
    for dirpath, dirs, names in walker:
        dirs.sort()
        for name in sorted(names)[:5]:  # one readable file per series folder is enough
            try:
                ds = pydicom.dcmread(os.path.join(dirpath, name), stop_before_pixels=True, specific_tags=_DICOM_TAGS)
            except Exception:  # noqa: BLE001 -- not DICOM (or unreadable): try the next file
                continue
            headers.append((Path(dirpath), ds))
            break
    if not headers:
        raise ValueError(f"`dicom` {root}: no readable DICOM file found (expected a TCIA download: "
                         "PETCT_<id>/<study>/<series>/*.dcm)")
    studies: dict[tuple, DicomStudy] = {}
    order = sorted(headers, key=lambda h: (str(getattr(h[1], "Modality", "")) != "PT", str(h[0])))
    for folder, ds in order:
        uid = str(getattr(ds, "StudyInstanceUID", "") or "") or None
        pid = str(getattr(ds, "PatientID", "") or "") or None
        patient = bare_patient_id(pid) if pid else None
        date = _normalise_date(str(getattr(ds, "StudyDate", "") or ""))
        key = ("uid", uid) if uid else ("pd", patient, date, str(folder.parent))
        st = studies.get(key)
        if st is None:
            st = studies[key] = DicomStudy(uid, patient, date, _dicom_folder_key(root, folder, patient))
        st.series += 1
        for tag in _DICOM_FIELDS:
            value = getattr(ds, tag, None)
            text = "" if value is None else str(value).strip()
            if text and tag not in st.values and not _is_zero(text):
                st.values[tag] = text
    return sorted(studies.values(), key=lambda s: (s.patient_id or "", s.date or "", s.uid or ""))


def _is_zero(text: str) -> bool:
    """DICOM writers put 0 in PatientSize/PatientWeight when it was not recorded."""
    try:
        return float(text) == 0.0
    except ValueError:
        return False


def _dicom_folder_key(root: Path, series_dir: Path, patient: str | None) -> tuple[str, str] | None:
    """(patient, study folder) from a TCIA-style path ``.../PETCT_<id>/<study>/<series>``."""
    parts = series_dir.relative_to(root).parts
    for i, part in enumerate(parts[:-1]):
        if patient is not None and bare_patient_id(part) == patient:
            return patient, parts[i + 1]
    return None


class DicomIndex:
    """DICOM studies by StudyInstanceUID, TCIA folder and (patient, date)."""

    def __init__(self, studies: list[DicomStudy]) -> None:
        self.studies = studies
        self._by_uid = {s.uid: s for s in studies if s.uid}
        self._by_folder = {s.folder: s for s in studies if s.folder}
        self._by_date: dict[tuple, list[DicomStudy]] = defaultdict(list)
        for s in studies:
            if s.patient_id and s.date:
                self._by_date[(s.patient_id, s.date)].append(s)

    def match(self, study: Study) -> tuple[DicomStudy | None, str]:
        """The DICOM study of ``study`` and how it was matched (``uid``, ``folder``, ``date``, ``""``)."""
        if study.study_uid and study.study_uid in self._by_uid:
            return self._by_uid[study.study_uid], "uid"
        s = self._by_folder.get((study.patient_id, study.study))
        if s is not None:
            return s, "folder"
        if study.date:
            candidates = self._by_date.get((study.patient_id, study.date), [])
            if len(candidates) == 1:
                return candidates[0], "date"
        return None, ""


# --- demographics ------------------------------------------------------------------------

# field -> (DICOM tag, metadata CSV columns in order of preference)
_FIELD_SOURCES = {
    "age": ("PatientAge", ("age",)),
    "sex": ("PatientSex", ("sex",)),
    "height_cm": ("PatientSize", ("height_cm", "height", "PatientSize")),
    "weight_kg": ("PatientWeight", ("weight_kg", "weight", "PatientWeight")),
    "diagnosis": (None, ("diagnosis",)),
}


def _parse_one(field_name: str, key: str, value: str) -> object:
    """One field via :meth:`Demographics.from_mapping` (so range checks stay in one place)."""
    return getattr(Demographics.from_mapping({key: value}), field_name)


def merge_demographics(
    case_id: str, meta: MetaStudy | None, dicom: DicomStudy | None, warnings: list[str]
) -> tuple[Demographics, dict[str, str]]:
    """Demographics of one case and where each field came from (``dicom``, ``metadata`` or ``""``).

    DICOM headers win for age, sex, height and weight (they are the study's own record);
    the metadata CSV fills what DICOM lacks and gives the diagnosis. A value that cannot
    be read or is out of range is left unknown and reported; nothing is invented.
    """
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name, (tag, columns) in _FIELD_SOURCES.items():
        candidates = []
        if dicom is not None and tag and tag in dicom.values:
            candidates.append(("dicom", tag, dicom.values[tag]))
        if meta is not None:
            for col in columns:
                if col in meta.values:
                    candidates.append(("metadata", col, meta.values[col]))
                    break
        parsed = []
        for origin, key, raw in candidates:
            try:
                v = _parse_one(name, key, raw)
            except ValueError as err:
                warnings.append(f"{case_id}: {origin} {key}={raw!r} ignored ({err})")
                continue
            if v is not None:
                parsed.append((origin, v))
        if not parsed:
            values[name], sources[name] = None, ""
            continue
        origin, v = parsed[0]
        values[name], sources[name] = v, origin
        if len(parsed) > 1 and not _agree(name, v, parsed[1][1]):
            warnings.append(f"{case_id}: {name} differs between DICOM ({v}) and metadata CSV ({parsed[1][1]}); "
                            "DICOM value kept")
    return Demographics(**values), sources


def _agree(name: str, a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= (1.0 if name == "age" else 0.5)
    return a == b


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

    for key, name in _IMAGE_KEYS:
        if study.files.get(key) is None or not study.files[key].exists():
            hint = study.missing_hint.get(key)
            return skip(f"missing_{key.lower()}", f"missing {name}" + (f" ({hint})" if hint else ""))
    grids = {}
    for key, name in _IMAGE_KEYS:
        try:
            grids[key] = _image_header(study.files[key], verify)
        except Exception as err:  # noqa: BLE001 -- nibabel raises many types for corrupt files
            alias = "" if study.files[key].name == name else f" ({study.files[key].name})"
            return skip("unreadable", f"unreadable {name}{alias}: {type(err).__name__}: {err}")
    ct_shape, ct_affine = grids["CTres"]
    for key, name in _IMAGE_KEYS[1:]:
        shape, affine = grids[key]
        if not same_grid(ct_shape, ct_affine, shape, affine):
            what = f"shape {shape} vs {ct_shape}" if shape != ct_shape else "affines differ"
            return skip("grid_mismatch", f"{name} grid does not match {CT_FILE} ({what})")
    return None


# --- writing --------------------------------------------------------------------------------


def _file_record(path: Path) -> dict:
    st = path.stat()
    return {"source": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _case_is_current(case_dir: Path, files: dict[str, dict], mode: str) -> bool:
    """True when ``case_dir`` already holds exactly these source files, stored per ``mode``."""
    meta_path = case_dir / META_FILE
    try:
        old = json.loads(meta_path.read_text())["prepare"]["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for name, rec in files.items():
        prev = old.get(name)
        if not isinstance(prev, dict) or any(prev.get(k) != rec[k] for k in ("source", "size", "mtime_ns")):
            return False
        stored = prev.get("stored_as")
        if (mode == "symlink" and stored != "symlink") or (mode == "copy" and stored != "copy"):
            return False
        target = case_dir / name
        if stored == "symlink":
            if not target.is_symlink() or os.readlink(target) != rec["source"]:
                return False
        elif target.is_symlink() or not target.is_file() or target.stat().st_size != rec["size"]:
            return False
    return True


def _store(src: str, dst: Path, mode: str) -> str:
    if mode in ("auto", "symlink"):
        try:
            os.symlink(src, dst)
            return "symlink"
        except OSError as err:
            if mode == "symlink":
                raise OSError(f"cannot create a symbolic link {dst} -> {src} ({err.strerror}); "
                              "use mode='copy', or mode='auto' to copy where links fail") from None
    shutil.copyfile(src, dst)
    return "copy"


def _write_case_folder(out: Path, case_id: str, files: dict[str, dict], meta: dict, mode: str) -> dict[str, str]:
    """Build ``<out>/<case_id>`` in a temporary folder and rename it into place."""
    tmp = temporary_dir(out, case_id)
    try:
        stored = {}
        for name, rec in files.items():
            stored[name] = _store(rec["source"], tmp / name, mode)
        meta = json.loads(json.dumps(meta))
        for name, how in stored.items():
            meta["prepare"]["files"][name]["stored_as"] = how
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        replace_dir(tmp, out / case_id)  # an old case's links are removed, never what they point to
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stored


def _write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_bytes(path, data)
    return True


def _csv_bytes(columns: Iterable[str], rows: Iterable[Mapping[str, object]]) -> bytes:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue().encode("utf-8")


def _check_out(source: Path, out: Path) -> None:
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise ValueError(f"`out` {out} is inside `source` {source}; the source is never modified, choose another folder")
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` must be a folder, got a file: {out}")
    if not out.is_dir():
        return
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if not entries or (out / REPORT_FILE).is_file():
        return
    for p in entries:
        try:
            ok = p.is_dir() and json.loads((p / META_FILE).read_text()).get("prepared_by") == _PREPARED_BY
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            raise ValueError(f"`out` {out} is not empty and was not written by synthaug prepare (found {p.name!r}); "
                             "choose an empty or new folder")


# --- the whole job -------------------------------------------------------------------------


def prepare_autopet(
    source: str | Path,
    out: str | Path,
    *,
    dicom: str | Path | None = None,
    metadata: str | Path | None = None,
    mode: str = "auto",
    verify: bool = False,
    progress: bool = False,
) -> dict:
    """Write a synthaug cohort from AutoPET in either of its download forms.

    Args:
        source: the TCIA NIfTI conversion (folder of ``PETCT_<id>`` folders) or the
            nnU-Net release (folder with ``imagesTr``/``labelsTr``).
        out: the cohort folder to write (new, empty, or an earlier prepare's output).
        dicom: optional DICOM tree; one header per series is read for PatientAge,
            PatientSex, PatientSize (m) and PatientWeight (kg).
        metadata: the ``fdg_metadata.csv``; found automatically in ``source`` if omitted.
        mode: ``"auto"`` (symlink, copy where links fail), ``"symlink"`` or ``"copy"``.
        verify: decompress every image to catch truncated files (slow on the full set).
        progress: show tqdm progress bars.

    Returns:
        The report (also written to ``<out>/prepare_report.json``) plus a ``"run"``
        entry with what this run wrote (not part of the JSON file, so re-runs leave it
        byte-identical).

    Raises:
        AlreadyPreparedError: ``source`` already is a synthaug cohort.
        ValueError, FileNotFoundError: bad input, with a one-line message.
    """
    from .. import __version__
    from ..core.progress import progress_bar

    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    source, out = Path(source), Path(out)
    form = detect_form(source)
    if form == FORM_SYNTHAUG:
        n = sum(1 for d in _subdirs(source) if (d / CT_FILE).exists())
        demo = ("with " if (source / DEMOGRAPHICS_FILE).is_file() else "without ") + DEMOGRAPHICS_FILE
        raise AlreadyPreparedError(
            f"{source} is already in synthaug's AutoPET layout ({n} case folders, {demo}); "
            "use it directly as a cohort, nothing to prepare"
        )
    _check_out(source, out)
    if metadata is None:
        for name in METADATA_NAMES:
            if (source / name).is_file():
                metadata = source / name
                break
    table = MetadataTable(metadata) if metadata is not None else None
    dicom_index = DicomIndex(scan_dicom(dicom, progress=progress)) if dicom is not None else None

    warnings: list[str] = []
    skips: list[Skip] = []
    if form == FORM_TCIA:
        studies = find_tcia_studies(source)
    else:
        studies, skips, warnings = find_nnunet_studies(source)
    if not studies:
        why = f" ({len(skips)} other case(s) skipped, e.g. {skips[0].reason})" if skips else ""
        raise ValueError(f"{source}: no FDG studies found{why}; {_EXPECTED_FORMS}")
    assign_case_ids(studies)
    n_found = len(studies) + len(skips)

    # Read everything (metadata, DICOM, image headers) before writing anything.
    ready = []
    for st in progress_bar(studies, desc="checking studies", unit=" study", disable=not progress):
        meta_study, meta_how = table.match(st) if table is not None else (None, "")
        if meta_study is not None:
            meta_study.matched = True
            st.study_uid = meta_study.uid
            st.date = st.date or meta_study.date
            for c in meta_study.conflicts:
                warnings.append(f"{st.case_id}: metadata CSV rows disagree on {c}; first value kept")
        dcm, dcm_how = dicom_index.match(st) if dicom_index is not None else (None, "")
        if dcm is not None:
            dcm.matched = True
            st.study_uid = st.study_uid or dcm.uid
        skip = check_study(st, verify=verify)
        if skip is not None:
            skips.append(skip)
            continue
        demo, sources = merge_demographics(st.case_id, meta_study, dcm, warnings)
        ready.append((st, demo, sources, meta_how, dcm_how))

    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    written = unchanged = 0
    stored_counts: Counter = Counter()
    case_rows = []
    demos: dict[str, Demographics] = {}
    patient_of: dict[str, str] = {}
    for st, demo, sources, meta_how, dcm_how in progress_bar(ready, desc="writing cohort", unit=" case", disable=not progress):
        files = {name: _file_record(st.files[key]) for key, name in _IMAGE_KEYS}
        meta = {
            "case_id": st.case_id, "source": "real", "dataset": "AutoPET FDG-PET-CT-Lesions",
            "patient_id": st.patient_id, "subject_id": st.subject_id, "study": st.study,
            "study_date": _iso(st.date), "study_uid": st.study_uid, "prepared_by": _PREPARED_BY,
            "prepare": {"form": form, "files": files},
        }
        case_dir = out / st.case_id
        if _case_is_current(case_dir, files, mode):
            prev = json.loads((case_dir / META_FILE).read_text())
            stored = {n: prev["prepare"]["files"][n]["stored_as"] for n in files}
            for name, how in stored.items():
                meta["prepare"]["files"][name]["stored_as"] = how
            _write_if_changed(case_dir / META_FILE, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
            unchanged += 1
        else:
            stored = _write_case_folder(out, st.case_id, files, meta, mode)
            written += 1
        how = "copy" if "copy" in stored.values() else "symlink"
        stored_counts[how] += 1
        demos[st.case_id] = demo
        patient_of[st.case_id] = st.patient_id
        case_rows.append({
            "case_id": st.case_id, "patient_id": st.patient_id, "subject_id": st.subject_id, "study": st.study,
            "study_date": _iso(st.date), "study_uid": st.study_uid, "form": form, "stored_as": how,
            "nnunet_fold": st.nnunet_fold, "metadata_match": meta_how, "dicom_match": dcm_how,
            "age_source": sources["age"], "sex_source": sources["sex"], "height_source": sources["height_cm"],
            "weight_source": sources["weight_kg"], "diagnosis_source": sources["diagnosis"],
            "ctres_source": files[CT_FILE]["source"], "suv_source": files[PET_FILE]["source"],
            "seg_source": files[SEG_FILE]["source"],
        })

    order = sorted(demos)
    demo_rows = {r["case_id"]: r for r in demographics_rows(demos)}
    for cid in order:
        demo_rows[cid]["patient_id"] = patient_of[cid]
    _write_if_changed(out / DEMOGRAPHICS_FILE, _csv_bytes(PREPARED_DEMOGRAPHICS_COLUMNS, (demo_rows[c] for c in order)))
    _write_if_changed(out / CASES_FILE, _csv_bytes(CASES_COLUMNS, sorted(case_rows, key=lambda r: r["case_id"])))

    known = {k: sum(getattr(d, k) is not None for d in demos.values()) for k in ("age", "sex", "height_cm", "weight_kg", "diagnosis")}
    known["complete"] = sum(d.is_complete for d in demos.values())
    on_disk = {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")}
    report = {
        "synthaug_version": __version__,
        "form": form,
        "source": os.path.abspath(source),
        "out": os.path.abspath(out),
        "metadata": os.path.abspath(metadata) if metadata is not None else None,
        "dicom": os.path.abspath(dicom) if dicom is not None else None,
        "mode": mode,
        "verify": verify,
        "studies_found": n_found,
        "cases": len(demos),
        "patients": len(set(patient_of.values())),
        "diagnoses": dict(sorted(Counter(d.diagnosis or "unknown" for d in demos.values()).items())),
        "known": known,
        "stored_as": dict(sorted(stored_counts.items())),
        "skipped": [s.to_dict() for s in sorted(skips, key=lambda s: (s.patient_id, s.study, s.code))],
        "skipped_by_reason": dict(sorted(Counter(s.code for s in skips).items())),
        "metadata_studies_without_images": (sum(not m.matched for m in table.studies) if table else None),
        "dicom_studies": len(dicom_index.studies) if dicom_index else None,
        "dicom_studies_matched": sum(s.matched for s in dicom_index.studies) if dicom_index else None,
        "stale_case_folders": sorted(on_disk - set(demos)),
        "warnings": warnings,
    }
    _write_if_changed(out / REPORT_FILE, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    return {**report, "run": {"written": written, "unchanged": unchanged}}


def _iso(date: str | None) -> str | None:
    return f"{date[:4]}-{date[4:6]}-{date[6:]}" if date else None


def format_report(report: Mapping) -> str:
    """The human-readable summary printed at the end of ``synthaug prepare``."""
    n = report["cases"]
    lines = [
        f"synthaug prepare: {FORM_NAMES[report['form']]}",
        f"  source    {report['source']}",
        f"  out       {report['out']}",
        f"  studies   {report['studies_found']} found, {n} prepared, {len(report['skipped'])} skipped",
        f"  patients  {report['patients']}",
        "  diagnoses " + (", ".join(f"{k} {v}" for k, v in report["diagnoses"].items()) or "-"),
        "  known     " + ", ".join(f"{k} {v}/{n}" for k, v in report["known"].items()),
    ]
    if report.get("metadata"):
        lines.append(f"  metadata  {report['metadata']} ({report['metadata_studies_without_images']} of its studies have no images here)")
    else:
        lines.append("  metadata  none (diagnosis unknown unless DICOM gives it; pass --metadata fdg_metadata.csv)")
    if report.get("dicom"):
        lines.append(f"  dicom     {report['dicom']} ({report['dicom_studies_matched']} of {report['dicom_studies']} studies matched)")
    stored = ", ".join(f"{k} {v}" for k, v in report["stored_as"].items()) or "-"
    run = report.get("run")
    lines.append(f"  images    {stored}" + (f" ({run['written']} written, {run['unchanged']} unchanged)" if run else ""))
    if report["skipped"]:
        lines.append("  skipped:")
        lines.extend(f"    {s['patient_id']}/{s['study']}: {s['reason']}" for s in report["skipped"])
    if report["stale_case_folders"]:
        lines.append(f"  {len(report['stale_case_folders'])} case folder(s) in out are not in this cohort (left untouched): "
                     + ", ".join(report["stale_case_folders"][:5]))
    if report["warnings"]:
        lines.append(f"  warnings ({len(report['warnings'])}):")
        lines.extend(f"    {w}" for w in report["warnings"][:20])
        if len(report["warnings"]) > 20:
            lines.append(f"    ... {len(report['warnings']) - 20} more in {REPORT_FILE}")
    lines.append(f"  report    {os.path.join(report['out'], REPORT_FILE)}")
    return "\n".join(lines)
