"""``prepare`` in steps: the checked request and the plan say which cases and files will be written, and
write nothing; a bad argument is refused before any work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from synthaug.core.io import nifti_bytes
from synthaug.data.prepare import (
    FORM_TCIA,
    AlreadyPreparedError,
    PreparePlan,
    plan_prepare,
    prepare_autopet,
    validate_prepare,
    write_prepare,
)

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])
#: (patient folder, study folder, images present)
STUDIES = [
    ("PETCT_0011f3deaf", "03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445", ("CTres", "SUV", "SEG")),
    ("PETCT_0011f3deaf", "11-05-2004-NA-PET-CT Ganzkoerper  primaer mit KM-20111", ("CTres", "SUV", "SEG")),
    ("PETCT_99aa88bb77", "01-02-2006-NA-PET-CT Ganzkoerper  primaer mit KM-40333", ("CTres", "SEG")),
]
CASES = ["0011f3deaf_20030323_10445", "0011f3deaf_20041105_20111"]


@pytest.fixture
def tcia(tmp_path) -> Path:
    """A tiny TCIA NIfTI conversion: two good studies of one patient, one study without SUV."""
    root = tmp_path / "FDG-PET-CT-Lesions"
    rng = np.random.default_rng(0)
    for patient, study, images in STUDIES:
        d = root / patient / study
        d.mkdir(parents=True)
        for name in images:
            arr = (rng.random((6, 6, 4)) > 0.8).astype(np.uint8) if name == "SEG" else rng.random((6, 6, 4))
            (d / f"{name}.nii.gz").write_bytes(nifti_bytes(arr, AFFINE))
    return root


def _listing(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_plan_names_cases_and_files_and_writes_nothing(tcia, tmp_path):
    out = tmp_path / "cohort"
    request = validate_prepare(tcia, out)
    plan = plan_prepare(request)

    assert not out.exists()  # checked and planned, nothing written
    assert isinstance(plan, PreparePlan) and request.form == FORM_TCIA and plan.studies_found == 3
    assert [c.case_id for c in plan.cases] == CASES
    assert [s.code for s in plan.skips] == ["missing_suv"]
    assert plan.cases[0].files["SUV.nii.gz"]["source"] == str(tcia / STUDIES[0][0] / STUDIES[0][1] / "SUV.nii.gz")
    assert {c.study.patient_id for c in plan.cases} == {"0011f3deaf"}
    assert out / CASES[1] / "SEG.nii.gz" in plan.files and out / "demographics.csv" in plan.files
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.cases = ()  # type: ignore[misc]

    report = write_prepare(plan)
    assert _listing(out) == set(plan.files)  # the plan listed exactly what was written
    assert report["cases"] == 2 and report["run"] == {"written": 2, "unchanged": 0}
    assert prepare_autopet(tcia, out)["run"] == {"written": 0, "unchanged": 2}  # resumable: nothing to redo


@pytest.mark.parametrize(("kwargs", "error", "parameter"), [
    ({"mode": "hardlink"}, ValueError, "`mode`"),
    ({"metadata": "no.csv"}, FileNotFoundError, "`metadata`"),
    ({"dicom": "no_dicom"}, FileNotFoundError, "`dicom`"),
])
def test_a_bad_argument_is_refused_in_one_line_naming_it_before_anything_is_written(tcia, tmp_path, kwargs, error,
                                                                                      parameter):
    kwargs = {k: (tmp_path / v if k != "mode" else v) for k, v in kwargs.items()}
    out = tmp_path / "cohort"
    with pytest.raises(error) as err:
        prepare_autopet(tcia, out, **kwargs)
    message = str(err.value)
    assert parameter in message and "\n" not in message and "--" not in message
    assert not out.exists()


def test_out_inside_source_and_an_already_prepared_source_are_refused_by_validation(tcia, tmp_path):
    with pytest.raises(ValueError, match="`out` .* is inside `source`"):
        validate_prepare(tcia, tcia / "cohort")
    assert not (tcia / "cohort").exists()
    prepare_autopet(tcia, tmp_path / "cohort")
    with pytest.raises(AlreadyPreparedError, match="2 case folders, with demographics.csv"):
        validate_prepare(tmp_path / "cohort", tmp_path / "again")
