"""``synthaug insert-lesions``: an augmented copy of a cohort, atomic, resumable, the input untouched."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from synthaug.cli import main
from synthaug.core.demographics import Demographics
from synthaug.core.grid import Grid
from synthaug.core.io import Cohort, read_nifti, write_case, write_demographics_csv, write_nifti
from synthaug.phantom.body import make_phantom

GRID = Grid((64, 64, 128), (8.0, 8.0, 8.0))
PEOPLE = {"p0": Demographics(age=50, sex="F", height_cm=165, weight_kg=60, diagnosis="MELANOMA"),
          "p1": Demographics(age=64, sex="M", height_cm=180, weight_kg=85, diagnosis="LUNG_CANCER")}


def FLAG(name: str) -> re.Pattern:  # noqa: N802
    """The flag as the command line names it (``--organs-dir``), or the library parameter it maps from."""
    return re.compile(f"--{name}|`{name.replace('-', '_')}`")


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    for i, (cid, demo) in enumerate(PEOPLE.items()):
        write_case(root, cid, make_phantom(demo, grid=GRID, seed=20 + i))
    write_demographics_csv(root / "demographics.csv", PEOPLE)
    return root


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["insert-lesions", *args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_an_augmented_copy_resumes_and_never_touches_the_input(cohort, tmp_path, capsys):
    before = _digests(cohort)
    out = tmp_path / "aug"
    code, text, err = _run(capsys, "--cohort", str(cohort), "--out", str(out), "--seed", "3")
    assert code == 0, err
    assert _digests(cohort) == before
    aug = Cohort(out)
    assert aug.case_ids == list(PEOPLE) and aug.demographics == Cohort(cohort).demographics
    for cid in PEOPLE:
        src, new = Cohort(cohort).load(cid), aug.load(cid)
        assert new.organs is not None and np.array_equal(new.affine, src.affine)
        assert (new.lesions[src.lesions > 0] == 1).all()  # existing lesions kept
        assert (new.lesions > 0).sum() > (src.lesions > 0).sum()  # new ones added
        added = (new.lesions > 0) & (src.lesions == 0)
        assert (new.pet[added] > src.pet[added]).mean() > 0.98
        assert new.meta["lesion_insertion"]["diagnosis"] == PEOPLE[cid].diagnosis
    first = _digests(out)
    # resumable: a re-run skips finished cases; a lost case is written again, byte for byte the same
    shutil.rmtree(out / "p1")
    code, text, _ = _run(capsys, "--cohort", str(cohort), "--out", str(out), "--seed", "3")
    assert code == 0 and "wrote 1 case(s)" in text and "skipped 1" in text
    assert {k: v for k, v in _digests(out).items() if "summary" not in k} == \
        {k: v for k, v in first.items() if "summary" not in k}
    # other settings into the same folder are refused
    code, _, err = _run(capsys, "--cohort", str(cohort), "--out", str(out), "--seed", "4")
    assert code == 2 and err.count("\n") == 1 and "other settings" in err


def _copy(cohort: Path, tmp: Path) -> Path:
    dst = tmp / "in"
    shutil.copytree(cohort, dst)
    return dst


@pytest.mark.parametrize("damage, words", [
    (lambda c: (c / "p1" / "ORGANS.nii.gz").unlink(), "p1: no organ labels"),
    (lambda c: (c / "p0" / "SUV.nii.gz").unlink(), "p0: missing SUV.nii.gz: a CT-only case"),
    (lambda c: write_nifti(c / "p1" / "ORGANS.nii.gz", np.zeros((64, 64, 100), np.uint8), np.diag([8.0, 8, 8, 1])),
     "p1: ORGANS.nii.gz grid (64, 64, 100) does not match"),
])
def test_bad_input_gets_one_line_before_any_work(cohort, tmp_path, capsys, damage, words):
    src = _copy(cohort, tmp_path)
    damage(src)
    out = tmp_path / "aug"
    code, _, err = _run(capsys, "--cohort", str(src), "--out", str(out), "--seed", "0")
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_an_output_inside_the_input_is_refused(cohort, capsys):
    code, _, err = _run(capsys, "--cohort", str(cohort), "--out", str(cohort / "aug"), "--seed", "0")
    assert code == 2 and err.count("\n") == 1 and FLAG("out").search(err) and "outside the input cohort" in err
    assert not (cohort / "aug").exists()


def test_totalsegmentator_labels_give_the_sites_of_a_real_ct(reference_dir, tmp_path, capsys):
    """The real CT (no PET came with it: a flat one is paired) with TotalSegmentator output in --organs-dir."""
    ct, affine = read_nifti(reference_dir / "example_ct_sm.nii.gz", np.float32)
    case_dir = tmp_path / "real" / "ts01"
    case_dir.mkdir(parents=True)
    write_nifti(case_dir / "CTres.nii.gz", ct, affine)
    write_nifti(case_dir / "SUV.nii.gz", np.where(ct > -500, 1.0, 0.0).astype(np.float32), affine)
    organs_dir = tmp_path / "ts"
    organs_dir.mkdir()
    shutil.copy(reference_dir / "example_seg.nii.gz", organs_dir / "ts01.nii.gz")
    out = tmp_path / "aug"
    code, _, err = _run(capsys, "--cohort", str(tmp_path / "real"), "--out", str(out), "--seed", "1",
                        "--diagnosis", "MELANOMA", "--organs-dir", str(organs_dir))
    assert code == 0, err
    new = read_nifti(out / "ts01" / "SEG.nii.gz")[0]
    assert not (out / "ts01" / "ORGANS.nii.gz").exists()  # the input had none
    assert new.sum() > 0 and (ct[new > 0] > -950).all()
    # without the labels: one line, nothing written
    code, _, err = _run(capsys, "--cohort", str(tmp_path / "real"), "--out", str(tmp_path / "aug2"), "--seed", "1")
    assert code == 2 and "no organ labels" in err and FLAG("organs-dir").search(err) and not (tmp_path / "aug2").exists()
    # labels on another grid: one line
    write_nifti(organs_dir / "ts01.nii.gz", np.zeros((10, 10, 10), np.uint8), affine)
    code, _, err = _run(capsys, "--cohort", str(tmp_path / "real"), "--out", str(tmp_path / "aug3"), "--seed", "1",
                        "--organs-dir", str(organs_dir))
    assert code == 2 and "do not match the image grid" in err


def test_the_seed_is_per_case(cohort):
    from synthaug.data.insertion import case_seed

    assert case_seed(3, "p0") != case_seed(3, "p1") and case_seed(3, "p0") == case_seed(3, "p0")
