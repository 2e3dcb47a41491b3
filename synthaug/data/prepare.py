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

:func:`prepare_autopet` runs three steps: :func:`validate_prepare` (the arguments),
:func:`plan_prepare` (every case, its files and demographics, as a :class:`PreparePlan`, read
with :mod:`~synthaug.data.prepare_studies` and :mod:`~synthaug.data.prepare_demographics`)
and :func:`write_prepare` (the cohort, atomically per case; re-runs only rewrite what changed).
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

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
    temporary_dir,
)
from .prepare_demographics import DicomIndex, DicomStudy, MetadataTable, MetaStudy, merge_demographics, scan_dicom
from .prepare_studies import (
    FORM_NAMES,
    FORM_NNUNET,
    FORM_SYNTHAUG,
    FORM_TCIA,
    IMAGE_KEYS,
    AlreadyPreparedError,
    Skip,
    Study,
    assign_case_ids,
    bare_patient_id,
    check_study,
    detect_form,
    find_nnunet_studies,
    find_studies,
    find_tcia_studies,
    make_case_id,
    source_form,
    study_date,
)

__all__ = [
    "CASES_COLUMNS", "CASES_FILE", "FORM_NAMES", "FORM_NNUNET", "FORM_SYNTHAUG", "FORM_TCIA", "METADATA_NAMES", "MODES",
    "PREPARED_DEMOGRAPHICS_COLUMNS", "REPORT_FILE", "AlreadyPreparedError", "DicomIndex", "DicomStudy",
    "MetaStudy", "MetadataTable", "PreparePlan", "PrepareRequest", "PreparedCase", "Skip", "Study",
    "assign_case_ids", "bare_patient_id", "check_study", "detect_form", "find_nnunet_studies", "find_tcia_studies",
    "format_report", "make_case_id", "merge_demographics", "plan_prepare", "prepare_autopet", "scan_dicom",
    "source_form", "study_date", "validate_prepare", "write_prepare",
]

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
_PREPARED_BY = "synthaug prepare"


@dataclass(frozen=True)
class PrepareRequest:
    """The checked arguments of a prepare (:func:`validate_prepare`); the studies not read yet."""

    source: Path
    out: Path
    form: str                          # FORM_TCIA or FORM_NNUNET
    metadata: str | Path | None        # given, or found in ``source``
    dicom: str | Path | None
    mode: str
    verify: bool


@dataclass(frozen=True, eq=False)
class PreparedCase:
    """One study that becomes a cohort case: its ids, its images (source path, size, mtime) and demographics."""

    study: Study
    demographics: Demographics
    sources: dict[str, str]            # demographic field -> "dicom", "metadata" or ""
    metadata_match: str                # how the metadata CSV was matched ("folder", "date", "")
    dicom_match: str                   # how the DICOM study was matched ("uid", "folder", "date", "")
    files: dict[str, dict]             # cohort file name -> {"source", "size", "mtime_ns"}

    @property
    def case_id(self) -> str:
        return self.study.case_id


@dataclass(frozen=True, eq=False)
class PreparePlan:
    """What a prepare will write (:func:`plan_prepare`): one case folder per ready study, the
    ``demographics.csv``, ``cases.csv`` and report; and the studies skipped, with why."""

    request: PrepareRequest
    cases: tuple[PreparedCase, ...]
    skips: tuple[Skip, ...]
    warnings: tuple[str, ...]
    studies_found: int
    metadata_studies_without_images: int | None
    dicom_studies: int | None
    dicom_studies_matched: int | None

    @property
    def files(self) -> list[Path]:
        """Every file the prepare writes (case files first; unchanged ones are left as they are)."""
        out = self.request.out
        per_case = [out / c.case_id / name for c in self.cases for name in (*c.files, META_FILE)]
        return per_case + [out / DEMOGRAPHICS_FILE, out / CASES_FILE, out / REPORT_FILE]


# --- the whole job: validate, plan, write ---------------------------------------------------


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

    Three steps: :func:`validate_prepare` checks the arguments, :func:`plan_prepare` reads the
    source (listings, headers, metadata CSV, DICOM) into a :class:`PreparePlan`, and
    :func:`write_prepare` writes it; nothing is written before the plan is complete.

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
    request = validate_prepare(source, out, dicom=dicom, metadata=metadata, mode=mode, verify=verify)
    return write_prepare(plan_prepare(request, progress=progress), progress=progress)


def validate_prepare(source: str | Path, out: str | Path, *, dicom: str | Path | None = None,
                     metadata: str | Path | None = None, mode: str = "auto", verify: bool = False) -> PrepareRequest:
    """Check every argument of :func:`prepare_autopet` (same meanings) before any work; raise with
    one line naming the parameter. Reads only folder listings (the source's form, what `out` holds)."""
    if mode not in MODES:
        raise ValueError(f"`mode`: expected one of {MODES}, got {mode!r}")
    source, out = Path(source), Path(out)
    form = source_form(source)
    _check_out(source, out)
    if metadata is None:
        metadata = next((source / name for name in METADATA_NAMES if (source / name).is_file()), None)
    elif not Path(metadata).is_file():
        raise FileNotFoundError(f"`metadata` CSV not found: {metadata}")
    if dicom is not None and not Path(dicom).is_dir():
        raise FileNotFoundError(f"`dicom` folder not found: {dicom}")
    return PrepareRequest(source=source, out=out, form=form, metadata=metadata, dicom=dicom, mode=mode, verify=verify)


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


def plan_prepare(request: PrepareRequest, *, progress: bool = False) -> PreparePlan:
    """Find the studies of the source, match each to the metadata CSV and DICOM headers, check its
    images (headers; all of each image with ``verify``) and merge its demographics; write nothing."""
    from ..core.progress import progress_bar

    table = MetadataTable(request.metadata) if request.metadata is not None else None
    dicom_index = DicomIndex(scan_dicom(request.dicom, progress=progress)) if request.dicom is not None else None
    studies, skips, warnings = find_studies(request.source, request.form)
    n_found = len(studies) + len(skips)
    cases = []
    for st in progress_bar(studies, desc="checking studies", unit=" study", disable=not progress):
        case = _plan_case(st, table, dicom_index, request.verify, warnings)
        (skips if isinstance(case, Skip) else cases).append(case)
    return PreparePlan(
        request=request, cases=tuple(cases), skips=tuple(skips), warnings=tuple(warnings), studies_found=n_found,
        metadata_studies_without_images=sum(not m.matched for m in table.studies) if table else None,
        dicom_studies=len(dicom_index.studies) if dicom_index else None,
        dicom_studies_matched=sum(s.matched for s in dicom_index.studies) if dicom_index else None,
    )


def _plan_case(st: Study, table: MetadataTable | None, dicom_index: DicomIndex | None, verify: bool,
               warnings: list[str]) -> PreparedCase | Skip:
    """One study matched to its metadata and DICOM study, and checked: the case it becomes, or why not."""
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
        return skip
    demo, sources = merge_demographics(st.case_id, meta_study, dcm, warnings)
    files = {name: _file_record(st.files[key]) for key, name in IMAGE_KEYS}
    return PreparedCase(study=st, demographics=demo, sources=sources, metadata_match=meta_how, dicom_match=dcm_how,
                        files=files)


def _file_record(path: Path) -> dict:
    st = path.stat()
    return {"source": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_prepare(plan: PreparePlan, *, progress: bool = False) -> dict:
    """Write ``plan``: each case folder atomically (one whose source files are unchanged is left as it
    is), then ``demographics.csv``, ``cases.csv`` and the report, each only when its bytes change.
    Returns the report plus the ``"run"`` entry (see :func:`prepare_autopet`)."""
    from ..core.progress import progress_bar

    out, form = plan.request.out, plan.request.form
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    written = 0
    rows = []
    for case in progress_bar(plan.cases, desc="writing cohort", unit=" case", disable=not progress):
        how, wrote = _write_case(out, case, form, plan.request.mode)
        written += wrote
        rows.append(_case_row(case, form, how))
    demos = {c.case_id: c.demographics for c in plan.cases}
    patient_of = {c.case_id: c.study.patient_id for c in plan.cases}
    order = sorted(demos)
    demo_rows = {r["case_id"]: r for r in demographics_rows(demos)}
    for cid in order:
        demo_rows[cid]["patient_id"] = patient_of[cid]
    _write_if_changed(out / DEMOGRAPHICS_FILE, _csv_bytes(PREPARED_DEMOGRAPHICS_COLUMNS, (demo_rows[c] for c in order)))
    _write_if_changed(out / CASES_FILE, _csv_bytes(CASES_COLUMNS, sorted(rows, key=lambda r: r["case_id"])))
    report = _report(plan, demos, patient_of, Counter(r["stored_as"] for r in rows))
    _write_if_changed(out / REPORT_FILE, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    return {**report, "run": {"written": written, "unchanged": len(rows) - written}}


def _report(plan: PreparePlan, demos: dict[str, Demographics], patient_of: dict[str, str],
            stored_counts: Counter) -> dict:
    from .. import __version__

    req = plan.request
    known = {k: sum(getattr(d, k) is not None for d in demos.values()) for k in ("age", "sex", "height_cm", "weight_kg", "diagnosis")}
    known["complete"] = sum(d.is_complete for d in demos.values())
    on_disk = {p.name for p in req.out.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return {
        "synthaug_version": __version__,
        "form": req.form,
        "source": os.path.abspath(req.source),
        "out": os.path.abspath(req.out),
        "metadata": os.path.abspath(req.metadata) if req.metadata is not None else None,
        "dicom": os.path.abspath(req.dicom) if req.dicom is not None else None,
        "mode": req.mode,
        "verify": req.verify,
        "studies_found": plan.studies_found,
        "cases": len(demos),
        "patients": len(set(patient_of.values())),
        "diagnoses": dict(sorted(Counter(d.diagnosis or "unknown" for d in demos.values()).items())),
        "known": known,
        "stored_as": dict(sorted(stored_counts.items())),
        "skipped": [s.to_dict() for s in sorted(plan.skips, key=lambda s: (s.patient_id, s.study, s.code))],
        "skipped_by_reason": dict(sorted(Counter(s.code for s in plan.skips).items())),
        "metadata_studies_without_images": plan.metadata_studies_without_images,
        "dicom_studies": plan.dicom_studies,
        "dicom_studies_matched": plan.dicom_studies_matched,
        "stale_case_folders": sorted(on_disk - set(demos)),
        "warnings": list(plan.warnings),
    }


# --- writing --------------------------------------------------------------------------------


def _write_case(out: Path, case: PreparedCase, form: str, mode: str) -> tuple[str, bool]:
    """Write (or keep) ``<out>/<case_id>``; return how its images are stored and whether it was written."""
    st = case.study
    meta = {
        "case_id": st.case_id, "source": "real", "dataset": "AutoPET FDG-PET-CT-Lesions",
        "patient_id": st.patient_id, "subject_id": st.subject_id, "study": st.study,
        "study_date": _iso(st.date), "study_uid": st.study_uid, "prepared_by": _PREPARED_BY,
        "prepare": {"form": form, "files": {name: dict(rec) for name, rec in case.files.items()}},
    }
    case_dir = out / st.case_id
    if _case_is_current(case_dir, case.files, mode):
        prev = json.loads((case_dir / META_FILE).read_text())
        stored = {n: prev["prepare"]["files"][n]["stored_as"] for n in case.files}
        for name, how in stored.items():
            meta["prepare"]["files"][name]["stored_as"] = how
        _write_if_changed(case_dir / META_FILE, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        wrote = False
    else:
        stored = _write_case_folder(out, st.case_id, case.files, meta, mode)
        wrote = True
    return ("copy" if "copy" in stored.values() else "symlink"), wrote


def _case_row(case: PreparedCase, form: str, how: str) -> dict:
    """The case's row of ``cases.csv``."""
    st, sources, files = case.study, case.sources, case.files
    return {
        "case_id": st.case_id, "patient_id": st.patient_id, "subject_id": st.subject_id, "study": st.study,
        "study_date": _iso(st.date), "study_uid": st.study_uid, "form": form, "stored_as": how,
        "nnunet_fold": st.nnunet_fold, "metadata_match": case.metadata_match, "dicom_match": case.dicom_match,
        "age_source": sources["age"], "sex_source": sources["sex"], "height_source": sources["height_cm"],
        "weight_source": sources["weight_kg"], "diagnosis_source": sources["diagnosis"],
        "ctres_source": files[CT_FILE]["source"], "suv_source": files[PET_FILE]["source"],
        "seg_source": files[SEG_FILE]["source"],
    }


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
