"""``synthaug prepare``: AutoPET in its TCIA NIfTI and nnU-Net forms -> a synthaug cohort."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from synthaug.cli import main
from synthaug.core.demographics import read_demographics_csv, sample_population
from synthaug.core.io import Cohort, nifti_bytes
from synthaug.data.prepare import (
    FORM_NNUNET,
    FORM_SYNTHAUG,
    FORM_TCIA,
    detect_form,
    make_case_id,
    prepare_autopet,
    study_date,
)

# --- a tiny fake AutoPET -------------------------------------------------------------------

S1 = "03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445"
S2 = "11-05-2004-NA-PET-CT Ganzkoerper  primaer mit KM-20111"
S3 = "06-14-2005-NA-PET-CT Ganzkoerper nativ u. mit KM-30222"
#: (patient, study, what is wrong with it, diagnosis, CSV age, CSV sex, Study UID)
STUDIES = [
    ("0011f3deaf", S1, None, "MELANOMA", "057Y", "M", "1.2.826.0.1.3680043.8.498.101"),
    ("0011f3deaf", S2, None, "NEGATIVE", "58", "M", "1.2.826.0.1.3680043.8.498.102"),
    ("1a2b3c4d5e", S3, None, "LYMPHOMA", "34", "F", "1.2.826.0.1.3680043.8.498.103"),
    ("99aa88bb77", "01-02-2006-NA-PET-CT Ganzkoerper  primaer mit KM-40333", "no_suv", "LUNG_CANCER", "70", "M",
     "1.2.826.0.1.3680043.8.498.104"),
    ("77cc66dd55", "02-03-2007-NA-PET-CT Ganzkoerper  primaer mit KM-50444", "bad_grid", "NEGATIVE", "61", "F",
     "1.2.826.0.1.3680043.8.498.105"),
    ("55ee44ff33", "04-05-2008-NA-PET-CT Ganzkoerper  primaer mit KM-60555", "bad_seg", "NEGATIVE", "49", "F",
     "1.2.826.0.1.3680043.8.498.106"),
]
#: A study listed in the metadata CSV that has no images in the source.
EXTRA_META = ("abcdef0123", "09-09-2009-NA-PET-CT Ganzkoerper  primaer mit KM-70666", "MELANOMA", "66", "M",
              "1.2.826.0.1.3680043.8.498.107")
AFFINE = np.array([[2.0, 0, 0, -8.0], [0, 2.0, 0, -8.0], [0, 0, 3.0, -12.0], [0, 0, 0, 1]])
META_COLUMNS = [
    "Series UID", "Collection", "3rd Party Analysis", "Data Description URI", "Subject ID", "Study UID",
    "Study Description", "Study Date", "Series Description", "Manufacturer", "Modality", "SOP Class Name",
    "SOP Class UID", "Number of Images", "File Size", "File Location", "Download Timestamp", "diagnosis", "age", "sex",
]


def _images(index: int, problem: str | None) -> dict[str, bytes | None]:
    rng = np.random.default_rng(index)
    ct = rng.normal(0, 100, (8, 8, 8)).astype(np.float32)
    suv = rng.gamma(2.0, 1.0, (8, 8, 8)).astype(np.float32)
    seg = (rng.random((8, 8, 8)) > 0.9).astype(np.uint8)
    out = {"CTres": nifti_bytes(ct, AFFINE), "SUV": nifti_bytes(suv, AFFINE), "SEG": nifti_bytes(seg, AFFINE)}
    if problem == "no_suv":
        out["SUV"] = None
    elif problem == "bad_grid":
        out["SUV"] = nifti_bytes(rng.random((8, 8, 9)).astype(np.float32), AFFINE)
    elif problem == "bad_seg":
        out["SEG"] = b"this is not a NIfTI file"
    return out


def make_tcia(root: Path) -> Path:
    """``root/PETCT_<id>/<study>/{CT,CTres,PET,SUV,SEG}.nii.gz``, as the TCIA NIfTI conversion."""
    for i, (patient, study, problem, *_rest) in enumerate(STUDIES):
        d = root / f"PETCT_{patient}" / study
        d.mkdir(parents=True)
        for key, data in _images(i, problem).items():
            if data is not None:
                (d / f"{key}.nii.gz").write_bytes(data)
        (d / "CT.nii.gz").write_bytes(_images(i, None)["CTres"])  # original CT: ignored
        if problem == "no_suv":
            (d / "PET.nii.gz").write_bytes(_images(i, None)["CTres"])
    return root


def make_nnunet(root: Path, metadata: Path) -> Path:
    """The challenge release: imagesTr/fdg_<id>_<study>_000X.nii.gz, labelsTr/, json files, fdg_metadata.csv."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    names = []
    for i, (patient, study, problem, *_rest) in enumerate(STUDIES):
        name = f"fdg_{patient}_{study}"
        names.append(name)
        imgs = _images(i, problem)
        (root / "imagesTr" / f"{name}_0000.nii.gz").write_bytes(imgs["CTres"])
        if imgs["SUV"] is not None:
            (root / "imagesTr" / f"{name}_0001.nii.gz").write_bytes(imgs["SUV"])
        (root / "labelsTr" / f"{name}.nii.gz").write_bytes(imgs["SEG"])
    psma = "psma_0123456789abcdef_2019-04-01"
    (root / "imagesTr" / f"{psma}_0000.nii.gz").write_bytes(_images(9, None)["CTres"])
    (root / "imagesTr" / f"{psma}_0001.nii.gz").write_bytes(_images(9, None)["SUV"])
    (root / "labelsTr" / f"{psma}.nii.gz").write_bytes(_images(9, None)["SEG"])
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "PET"}, "labels": {"background": 0, "tumor": 1},
        "numTraining": len(names) + 1, "file_ending": ".nii.gz"}))
    (root / "splits_final.json").write_text(json.dumps([
        {"train": names[2:], "val": names[:2]}, {"train": names[:2], "val": names[2:]}]))
    (root / "fdg_metadata.csv").write_bytes(metadata.read_bytes())
    return root


def make_metadata(path: Path, columns: list[str] = META_COLUMNS) -> Path:
    """fdg_metadata.csv as TCIA lists it: one row per series (CT, PT, SEG), demographics per row."""
    rows = []
    for patient, study, _problem, diagnosis, age, sex, uid in [(*s[:2], None, *s[3:]) for s in STUDIES] + [
            (EXTRA_META[0], EXTRA_META[1], None, *EXTRA_META[2:])]:
        for j, (modality, series) in enumerate((("CT", "2.000000-CT IMAGES-1"), ("PT", "3.000000-PET corr.-2"),
                                                 ("SEG", "300.000000-Segmentation-3"))):
            rows.append({
                "Series UID": f"{uid}.{j}", "Collection": "FDG-PET-CT-Lesions", "3rd Party Analysis": "NO",
                "Data Description URI": "https://doi.org/10.7937/gkr0-xv29", "Subject ID": f"PETCT_{patient}",
                "Study UID": uid, "Study Description": study.split("-NA-")[1].rsplit("-", 1)[0],
                "Study Date": study[:10], "Series Description": series, "Manufacturer": "SIEMENS",
                "Modality": modality, "SOP Class Name": "x", "SOP Class UID": "1.2.3", "Number of Images": "300",
                "File Size": "12 MB", "File Location": f"./FDG-PET-CT-Lesions/PETCT_{patient}/{study}/{series}",
                "Download Timestamp": "2022-01-01T00:00:00.000", "diagnosis": diagnosis, "age": age, "sex": sex,
            })
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_dicom(path: Path, **fields) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.128" if fields.get("Modality") == "PT" else "1.2.840.10008.5.1.4.1.1.2"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(path.parent)])
    for key, value in fields.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def make_dicom(root: Path) -> Path:
    """Headers for the first two studies: one in a TCIA-like tree (matched by folder), one in a flat folder
    (matched by the Study UID from the metadata CSV); a non-DICOM file is skipped."""
    p, uid1, uid2 = STUDIES[0][0], STUDIES[0][6], STUDIES[1][6]
    base = dict(PatientID=f"PETCT_{p}", PatientSex="M")
    tree = root / "FDG-PET-CT-Lesions" / f"PETCT_{p}" / S1
    _write_dicom(tree / "2.000000-CT IMAGES-1" / "1-001.dcm", **base, Modality="CT", StudyInstanceUID="9.9.9.1",
                 StudyDate="20030323", PatientAge="057Y", PatientSize="1.78", PatientWeight="")
    _write_dicom(tree / "3.000000-PET corr.-2" / "1-001.dcm", **base, Modality="PT", StudyInstanceUID="9.9.9.1",
                 StudyDate="20030323", PatientAge="057Y", PatientSize="1.78", PatientWeight="80")
    (tree / "3.000000-PET corr.-2" / "README.txt").write_text("not DICOM")
    _write_dicom(root / "export" / "series_a" / "img.dcm", **base, Modality="PT", StudyInstanceUID=uid2,
                 StudyDate="19990101", PatientAge="058Y", PatientSize="0", PatientWeight="77.5")
    assert uid1 != "9.9.9.1"  # study 1 must be matched by its folder, not by UID
    return root


def tree_digest(root: Path) -> str:
    """sha256 over every path, file content, mode and mtime under ``root`` (links not followed)."""
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files) + ["/"]:
            p = Path(dirpath) / name if name != "/" else Path(dirpath)
            st = p.lstat()
            h.update(f"{p.relative_to(root)}|{st.st_mode}|{st.st_mtime_ns}".encode())
            if name != "/" and p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def tcia(tmp_path: Path) -> Path:
    return make_tcia(tmp_path / "FDG-PET-CT-Lesions")


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    return make_metadata(tmp_path / "fdg_metadata.csv")


@pytest.fixture
def dicom(tmp_path: Path) -> Path:
    return make_dicom(tmp_path / "dicom")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


C1, C2, C3 = "0011f3deaf_20030323_10445", "0011f3deaf_20041105_20111", "1a2b3c4d5e_20050614_30222"


# --- ids and detection ------------------------------------------------------------------------


def test_case_ids_are_stable_and_derived_from_patient_and_study():
    assert make_case_id("PETCT_0011f3deaf", S1) == C1
    assert make_case_id("0011f3deaf", S1) == C1  # nnU-Net names carry the bare id
    assert study_date(S2) == "20041105"
    odd = make_case_id("P7", "baseline scan")
    assert odd.startswith("P7_baseline-scan_") and odd == make_case_id("P7", "baseline scan")
    assert make_case_id("P7", "baseline scan") != make_case_id("P7", "baseline_scan")


def test_detects_each_form(tcia, metadata, tmp_path):
    assert detect_form(tcia) == FORM_TCIA
    assert detect_form(make_nnunet(tmp_path / "nnunet", metadata)) == FORM_NNUNET
    out = tmp_path / "cohort"
    prepare_autopet(tcia, out)
    assert detect_form(out) == FORM_SYNTHAUG
    with pytest.raises(ValueError, match="one patient folder.*PETCT_<id>"):
        detect_form(tcia / "PETCT_0011f3deaf")


# --- the TCIA form, everything given ----------------------------------------------------------


def test_prepare_tcia_with_metadata_and_dicom(tcia, metadata, dicom, tmp_path, capsys):
    out = tmp_path / "cohort"
    rc = main(["prepare", "--source", str(tcia), "--out", str(out), "--metadata", str(metadata),
               "--dicom", str(dicom), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "6 found, 3 prepared, 3 skipped" in printed
    assert "missing SUV.nii.gz (PET.nii.gz (Bq/ml) is present" in printed

    report = json.loads((out / "prepare_report.json").read_text())
    assert report["form"] == FORM_TCIA
    assert (report["studies_found"], report["cases"], report["patients"]) == (6, 3, 2)
    assert report["diagnoses"] == {"LYMPHOMA": 1, "MELANOMA": 1, "NEGATIVE": 1}
    assert report["known"] == {"age": 3, "sex": 3, "height_cm": 1, "weight_kg": 2, "diagnosis": 3, "complete": 1}
    assert {s["patient_id"]: s["code"] for s in report["skipped"]} == {
        "99aa88bb77": "missing_suv", "77cc66dd55": "grid_mismatch", "55ee44ff33": "unreadable"}
    assert report["metadata_studies_without_images"] == 1
    assert (report["dicom_studies"], report["dicom_studies_matched"]) == (2, 2)
    assert report["warnings"] == []

    demos = read_demographics_csv(out / "demographics.csv")  # extra patient_id column is tolerated
    assert sorted(demos) == [C1, C2, C3]
    d1, d2, d3 = demos[C1], demos[C2], demos[C3]
    assert (d1.age, d1.sex, d1.height_cm, d1.weight_kg, d1.diagnosis) == (57, "M", 178, 80, "MELANOMA")
    assert (d2.age, d2.height_cm, d2.weight_kg, d2.diagnosis) == (58, None, 77.5, "NEGATIVE")  # PatientSize 0 = unknown
    assert (d3.age, d3.sex, d3.height_cm, d3.weight_kg, d3.diagnosis) == (34, "F", None, None, "LYMPHOMA")
    rows = {r["case_id"]: r for r in _read_csv(out / "demographics.csv")}
    assert list(rows[C1])[-1] == "patient_id"
    assert (rows[C1]["patient_id"], rows[C2]["patient_id"], rows[C3]["patient_id"]) == (
        "0011f3deaf", "0011f3deaf", "1a2b3c4d5e")
    assert rows[C3]["height_cm"] == "" and rows[C3]["weight_kg"] == ""

    cases = {r["case_id"]: r for r in _read_csv(out / "cases.csv")}
    assert cases[C1]["dicom_match"] == "folder" and cases[C2]["dicom_match"] == "uid" and cases[C3]["dicom_match"] == ""
    assert cases[C1]["metadata_match"] == "folder" and cases[C1]["study_uid"] == STUDIES[0][6]
    assert (cases[C2]["weight_source"], cases[C2]["height_source"], cases[C3]["age_source"]) == ("dicom", "", "metadata")
    assert cases[C1]["study"] == S1 and cases[C1]["study_date"] == "2003-03-23"
    assert cases[C1]["suv_source"] == str(tcia / "PETCT_0011f3deaf" / S1 / "SUV.nii.gz")

    link = out / C1 / "SUV.nii.gz"
    assert link.is_symlink() and os.readlink(link) == cases[C1]["suv_source"]
    cohort = Cohort(out)
    assert list(cohort) == [C1, C2, C3]
    case = cohort.load(C1)
    assert case.pet.shape == (8, 8, 8) and case.meta["patient_id"] == "0011f3deaf" and case.meta["source"] == "real"
    np.testing.assert_allclose(case.affine, AFFINE)
    assert case.demographics == d1


def test_without_metadata_or_dicom_nothing_is_invented(tcia, tmp_path):
    report = prepare_autopet(tcia, tmp_path / "cohort")
    assert report["known"] == {"age": 0, "sex": 0, "height_cm": 0, "weight_kg": 0, "diagnosis": 0, "complete": 0}
    rows = _read_csv(tmp_path / "cohort" / "demographics.csv")
    assert len(rows) == 3 and all(r[k] == "" for r in rows for k in ("age", "sex", "height_cm", "weight_kg", "diagnosis"))
    assert {r["patient_id"] for r in rows} == {"0011f3deaf", "1a2b3c4d5e"}


def test_dicom_and_metadata_disagreeing_is_reported(tcia, metadata, dicom, tmp_path):
    rows = _read_csv(metadata)
    for r in rows:
        if r["Study UID"] == STUDIES[0][6]:
            r["sex"] = "F"
    with metadata.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=META_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    report = prepare_autopet(tcia, tmp_path / "cohort", metadata=metadata, dicom=dicom)
    assert any(C1 in w and "sex differs" in w for w in report["warnings"])
    assert read_demographics_csv(tmp_path / "cohort" / "demographics.csv")[C1].sex == "M"  # DICOM kept


# --- the nnU-Net form and agreement between forms ----------------------------------------------


def test_both_forms_give_the_same_cohort(tcia, metadata, dicom, tmp_path):
    nn = make_nnunet(tmp_path / "nnunet", metadata)
    r_tcia = prepare_autopet(tcia, tmp_path / "a", metadata=metadata, dicom=dicom)
    r_nn = prepare_autopet(nn, tmp_path / "b", dicom=dicom)  # fdg_metadata.csv found in the release
    assert r_nn["form"] == FORM_NNUNET and r_nn["metadata"] == str(nn / "fdg_metadata.csv")
    assert (tmp_path / "a" / "demographics.csv").read_bytes() == (tmp_path / "b" / "demographics.csv").read_bytes()
    for cid in (C1, C2, C3):
        for name in ("CTres.nii.gz", "SUV.nii.gz", "SEG.nii.gz"):
            assert (tmp_path / "a" / cid / name).read_bytes() == (tmp_path / "b" / cid / name).read_bytes()
    for key in ("cases", "patients", "diagnoses", "known"):
        assert r_tcia[key] == r_nn[key]
    codes_nn = {(s["patient_id"], s["code"]) for s in r_nn["skipped"]}
    assert {(s["patient_id"], s["code"]) for s in r_tcia["skipped"]} | {("0123456789abcdef", "not_fdg")} == codes_nn
    assert r_nn["studies_found"] == 7
    cases = {r["case_id"]: r for r in _read_csv(tmp_path / "b" / "cases.csv")}
    assert (cases[C1]["nnunet_fold"], cases[C3]["nnunet_fold"]) == ("0", "1")
    assert cases[C1]["suv_source"].endswith(f"imagesTr/fdg_0011f3deaf_{S1}_0001.nii.gz")


# --- re-runs, the source, copies ----------------------------------------------------------------


def test_rerun_is_idempotent_and_source_untouched(tcia, metadata, dicom, tmp_path):
    before = {p: tree_digest(p) for p in (tcia, dicom)}
    meta_before = hashlib.sha256(metadata.read_bytes()).hexdigest()
    out = tmp_path / "cohort"
    first = prepare_autopet(tcia, out, metadata=metadata, dicom=dicom)
    snapshot = tree_digest(out)
    second = prepare_autopet(tcia, out, metadata=metadata, dicom=dicom)
    assert (first["run"], second["run"]) == ({"written": 3, "unchanged": 0}, {"written": 0, "unchanged": 3})
    assert tree_digest(out) == snapshot  # same bytes, same mtimes: nothing rewritten
    assert {p: tree_digest(p) for p in before} == before
    assert hashlib.sha256(metadata.read_bytes()).hexdigest() == meta_before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    # A changed source image is picked up; the others stay as they are.
    suv = tcia / "PETCT_1a2b3c4d5e" / S3 / "SUV.nii.gz"
    suv.write_bytes(_images(42, None)["SUV"])
    third = prepare_autopet(tcia, out, metadata=metadata, dicom=dicom)
    assert third["run"] == {"written": 1, "unchanged": 2}


def test_copy_mode_writes_files_and_auto_keeps_them(tcia, tmp_path):
    out = tmp_path / "cohort"
    assert main(["prepare", "--source", str(tcia), "--out", str(out), "--copy", "--no-progress"]) == 0
    f = out / C1 / "CTres.nii.gz"
    assert f.is_file() and not f.is_symlink()
    assert f.read_bytes() == (tcia / "PETCT_0011f3deaf" / S1 / "CTres.nii.gz").read_bytes()
    assert json.loads((out / "prepare_report.json").read_text())["stored_as"] == {"copy": 3}
    again = prepare_autopet(tcia, out)  # default mode accepts existing copies
    assert again["run"] == {"written": 0, "unchanged": 3}
    linked = prepare_autopet(tcia, out, mode="symlink")
    assert linked["run"] == {"written": 3, "unchanged": 0} and f.is_symlink()


def test_verify_catches_truncated_images(tcia, tmp_path):
    suv = tcia / "PETCT_1a2b3c4d5e" / S3 / "SUV.nii.gz"
    packed = suv.read_bytes()
    assert gzip.decompress(packed)  # a valid gzip stream before truncation
    suv.write_bytes(packed[: len(packed) // 2])
    assert prepare_autopet(tcia, tmp_path / "quick")["cases"] == 3  # header only: not noticed
    report = prepare_autopet(tcia, tmp_path / "full", verify=True)
    assert report["cases"] == 2
    assert {s["patient_id"]: s["code"] for s in report["skipped"]}["1a2b3c4d5e"] == "unreadable"


# --- demographics downstream -----------------------------------------------------------------


def test_sample_population_like_a_prepared_cohort_keeps_unknowns_unknown(tcia, metadata, dicom, tmp_path):
    prepare_autopet(tcia, tmp_path / "cohort", metadata=metadata, dicom=dicom)
    pool = read_demographics_csv(tmp_path / "cohort" / "demographics.csv")
    drawn = sample_population(40, seed=3, like=tmp_path / "cohort" / "demographics.csv")
    assert len(drawn) == 40
    assert any(d.height_cm is None for d in drawn) and any(d.height_cm is not None for d in drawn)
    with_height = {d.sex for d in pool.values() if d.height_cm is not None}
    assert all(d.sex in with_height for d in drawn if d.height_cm is not None)
    for d in drawn:
        mask = d.to_vector()[-5:]
        assert list(mask) == [d.age is not None, d.sex is not None, d.height_cm is not None,
                              d.weight_kg is not None, d.diagnosis is not None]
    assert drawn == sample_population(40, seed=3, like=pool)


# --- refusals: one clear line, exit code 2 --------------------------------------------------------


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("synthaug: error: ")
    return err[0]


def test_reference_ct_is_refused_as_having_no_pet(reference_dir, tmp_path, capsys):
    before = tree_digest(reference_dir)
    assert main(["prepare", "--source", str(reference_dir), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "no PET/SUV image" in line and "example_ct.nii.gz" in line
    assert not (tmp_path / "o").exists() and tree_digest(reference_dir) == before


def test_bad_sources_get_one_clear_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["prepare", "--source", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "is empty; expected AutoPET" in _error_line(capsys)

    other = tmp_path / "other"
    (other / "notes").mkdir(parents=True)
    (other / "notes" / "a.txt").write_text("hello")
    (other / "table.csv").write_text("a,b\n1,2\n")
    assert main(["prepare", "--source", str(other), "--out", str(tmp_path / "o")]) == 2
    line = _error_line(capsys)
    assert "does not look like AutoPET" in line and "imagesTr" in line and "PETCT_<id>" in line

    dcm = tmp_path / "dcm"
    _write_dicom(dcm / "s" / "1.dcm", PatientID="x", Modality="CT")
    assert main(["prepare", "--source", str(dcm), "--out", str(tmp_path / "o")]) == 2
    assert "pass it as --dicom" in _error_line(capsys)

    assert main(["prepare", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "--source folder not found" in _error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_metadata_without_expected_columns_is_refused(tcia, tmp_path, capsys):
    bad = tmp_path / "clinical.csv"
    bad.write_text("PatientName,Weight\nx,70\n")
    assert main(["prepare", "--source", str(tcia), "--out", str(tmp_path / "o"), "--metadata", str(bad)]) == 2
    line = _error_line(capsys)
    assert "missing column(s) 'Subject ID'" in line and "'File Location'" in line and "'diagnosis'" in line
    assert "found: PatientName, Weight" in line
    assert not (tmp_path / "o").exists()

    assert main(["prepare", "--source", str(tcia), "--out", str(tmp_path / "o"), "--metadata", str(tmp_path / "no.csv")]) == 2
    assert "metadata CSV not found" in _error_line(capsys)
    assert main(["prepare", "--source", str(tcia), "--out", str(tmp_path / "o"), "--dicom", str(tmp_path / "nodcm")]) == 2
    assert "--dicom folder not found" in _error_line(capsys)


def test_out_folder_guards(tcia, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep me")
    assert main(["prepare", "--source", str(tcia), "--out", str(foreign)]) == 2
    assert "not written by synthaug prepare" in _error_line(capsys)
    assert (foreign / "important.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1

    assert main(["prepare", "--source", str(tcia), "--out", str(tcia / "cohort")]) == 2
    assert "inside --source" in _error_line(capsys)
    assert not (tcia / "cohort").exists()


def test_already_prepared_source_is_reported_not_redone(tcia, tmp_path, capsys):
    out = tmp_path / "cohort"
    prepare_autopet(tcia, out)
    capsys.readouterr()
    assert main(["prepare", "--source", str(out), "--out", str(tmp_path / "again")]) == 0
    msg = capsys.readouterr().out
    assert "already in synthaug's AutoPET layout (3 case folders, with demographics.csv)" in msg
    assert not (tmp_path / "again").exists()
