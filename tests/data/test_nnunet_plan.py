"""nnU-Net export in steps: the checked request and the plan say what will be written, and write nothing."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from synthaug.core.case import Case
from synthaug.core.demographics import Demographics
from synthaug.core.io import CaseError, write_case
from synthaug.data.nnunet import (
    SIDECAR_FILE,
    SPLITS_FILE,
    ExportPlan,
    export_nnunet,
    plan_export,
    validate_export,
)

REAL_AFFINE = np.diag([4.0, 4.0, 5.0, 1.0])
SYNTH_AFFINE = np.diag([6.0, 4.0, 5.0, 1.0])  # another spacing: resampled on export
REAL = {"a_1": ("PA", Demographics(61, "M", 178, 84, "LYMPHOMA")),
        "a_2": ("PA", Demographics(62, "M", 178, 80, "LYMPHOMA")),
        "b_1": ("PB", Demographics(55, "F", 164, 61, "MELANOMA"))}


def _case(shape, affine, seed: int, demo: Demographics | None = None) -> Case:
    rng = np.random.default_rng(seed)
    lesions = np.zeros(shape, np.uint8)
    lesions[1:3, 1:3, 1:3] = 1
    return Case(ct=rng.normal(0, 50, shape).astype(np.float32), pet=rng.gamma(2.0, 1.0, shape).astype(np.float32),
                organs=None, lesions=lesions, affine=affine, demographics=demo, meta={"source": "test", "seed": seed})


@pytest.fixture
def real(tmp_path) -> Path:
    root = tmp_path / "real"
    for i, (cid, (_pid, demo)) in enumerate(REAL.items()):
        write_case(root, cid, _case((6, 6, 6), REAL_AFFINE, i, demo))
    with (root / "demographics.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "age", "sex", "height_cm", "weight_kg", "diagnosis", "patient_id"])
        for cid, (pid, d) in REAL.items():
            w.writerow([cid, d.age, d.sex, d.height_cm, d.weight_kg, d.diagnosis, pid])
    return root


@pytest.fixture
def synthetic(tmp_path) -> Path:
    root = tmp_path / "cache"
    for i in range(2):
        write_case(root, f"gen_{i}", _case((4, 6, 6), SYNTH_AFFINE, 10 + i, Demographics(50, "F", 165, 60, "NEGATIVE")))
    return root


def _listing(*roots: Path) -> set[Path]:
    return {p for root in roots if root.exists() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_plan_names_cases_folders_and_files_and_writes_nothing(tmp_path, real, synthetic):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    request = validate_export(raw, 12, "Plan", real=real, synthetic=synthetic, preprocessed=pre)
    warnings: list[str] = []
    plan = plan_export(request, warn=warnings.append)

    assert not raw.exists() and not pre.exists()  # checked and planned, nothing written
    assert isinstance(plan, ExportPlan) and plan.target == raw.resolve() / "Dataset012_Plan"
    assert [c.case_id for c in plan.cases] == ["a_1", "a_2", "b_1", "synth_00001", "synth_00002"]
    assert [c.original_id for c in plan.synthetic_cases] == ["gen_0", "gen_1"]
    assert [c.src_dir for c in plan.real_cases] == [real.resolve() / c for c in REAL]
    assert (plan.num_real, plan.num_synthetic) == (3, 2)
    assert [c.group for c in plan.real_cases] == ["PA", "PA", "PB"]
    assert plan.target_spacing == (4.0, 4.0, 5.0)
    assert plan.cases[3].files == ("imagesTr/synth_00001_0000.nii.gz", "imagesTr/synth_00001_0001.nii.gz",
                                   "labelsTr/synth_00001.nii.gz")
    assert plan.splits_paths == [plan.target / SPLITS_FILE, pre.resolve() / "Dataset012_Plan" / SPLITS_FILE]
    assert all(set(fold["val"]) <= {"a_1", "a_2", "b_1"} for fold in plan.splits)
    assert all({"a_1", "a_2"} <= set(fold["val"]) or not {"a_1", "a_2"} & set(fold["val"]) for fold in plan.splits)
    assert warnings == list(plan.warnings) and "only 2 real patient(s)" in warnings[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.cases = ()  # type: ignore[misc]

    result = export_nnunet(raw, 12, "Plan", real=real, synthetic=synthetic, preprocessed=pre, progress=False, log=None)
    assert _listing(raw, pre) == set(plan.files)  # the plan listed exactly what was written
    assert (result.num_real, result.num_synthetic, result.splits) == (3, 2, plan.splits)
    assert (plan.target / SIDECAR_FILE).is_file()


def test_plan_of_generated_cases_does_not_load_the_generator(tmp_path, real):
    loaded = []

    def load():
        loaded.append(1)
        raise AssertionError("the plan needs no generator")

    request = validate_export(tmp_path / "raw", 13, "Gen", real=real, generator=load, ratio=1.0, seed=4)
    plan = plan_export(request)
    assert not loaded and not (tmp_path / "raw").exists()
    assert [c.case_id for c in plan.synthetic_cases] == ["synth_00001", "synth_00002", "synth_00003"]
    assert all(c.src_dir is None and isinstance(c.seed, int) and c.demographics is not None
               for c in plan.synthetic_cases)
    assert plan_export(request).synthetic_cases[0].seed == plan.synthetic_cases[0].seed  # the seed decides them


@pytest.mark.parametrize(("kwargs", "parameter"), [
    ({"ratio": -1.0}, "`ratio`"),
    ({"resample": "sometimes"}, "`resample`"),
    ({"spacing": (1.0, 2.0)}, "`spacing`"),
    ({"labels": "bones"}, "`labels`"),
    ({"pet_norm": "minmax"}, "`pet_norm`"),
    ({"n_synthetic": -2}, "`n_synthetic`"),
    ({"dataset_id": 1000}, "`dataset_id`"),
    ({"name": "no spaces"}, "`name`"),
])
def test_a_bad_argument_is_refused_in_one_line_naming_it_before_anything_is_written(tmp_path, real, kwargs, parameter):
    loaded = []
    args = {"dataset_id": 14, "name": "Bad", "real": real, **kwargs}
    if "n_synthetic" in kwargs:
        args["generator"] = lambda: loaded.append(1)
    raw = tmp_path / "raw"
    with pytest.raises(ValueError) as err:
        export_nnunet(raw, progress=False, log=None, **args)
    message = str(err.value)
    assert parameter in message and "\n" not in message and "--" not in message
    assert not raw.exists() and not loaded


def test_a_bad_input_found_while_planning_is_refused_before_anything_is_written(tmp_path, real):
    (real / "b_1" / "SUV.nii.gz").unlink()
    raw = tmp_path / "raw"
    with pytest.raises(CaseError, match=r"b_1: missing SUV\.nii\.gz"):
        export_nnunet(raw, 15, "Broken", real=real, progress=False, log=None)
    assert not raw.exists()
