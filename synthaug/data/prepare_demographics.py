"""Demographics of AutoPET studies from the sources that hold them: the metadata CSV
(``fdg_metadata.csv``: diagnosis, age, sex) and DICOM headers (age, sex, height, weight),
matched to the studies found in the source and merged field by field; nothing is invented.

Read-only: used by :mod:`synthaug.data.prepare` to plan a cohort before writing it.
"""

from __future__ import annotations

import csv
import io as _io
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..core.demographics import Demographics
from .prepare_studies import Study, bare_patient_id, study_date


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

