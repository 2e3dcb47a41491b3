"""Tests of the demography-driven phantom: physiology, conventions, determinism and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from synthaug.cli import main
from synthaug.core.demographics import DIAGNOSES, Demographics, sample_population
from synthaug.core.grid import Grid
from synthaug.core.io import Cohort
from synthaug.core.labels import ORGAN_IDS, ORGAN_LABELS
from synthaug.evaluation.preview import preview_png
from synthaug.phantom.body import impute_demographics, make_phantom
from synthaug.phantom.tables import ORGAN_HU_RANGE, ORGAN_SUV_RANGE

SMALL = Grid((64, 64, 128), (8.0, 8.0, 8.0))  # 512 x 512 x 1024 mm, like the demo preset
TALL = Grid((48, 48, 96), (10.0, 10.0, 14.0))  # 1344 mm in z: room for a tall body
TINY = Grid((32, 32, 64), (16.0, 16.0, 16.0))


def _world(case, mask: np.ndarray) -> np.ndarray:
    """World (RAS+ mm) centroid of a mask."""
    ijk = np.argwhere(mask).mean(axis=0)
    return (case.affine @ np.r_[ijk, 1.0])[:3]


def _z_extent_mm(case) -> float:
    zs = np.nonzero((case.organs > 0).any(axis=(0, 1)))[0]
    return float((zs[-1] - zs[0] + 1) * case.spacing[2])


def test_outputs_dtypes_meta_and_any_grid():
    d = Demographics(52, "F", 166, 70, "MELANOMA")
    for grid in (TINY, Grid((40, 36, 70), (9.0, 11.0, 13.0))):
        case = make_phantom(d, grid=grid, seed=5)
        assert case.shape == grid.shape
        assert case.ct.dtype == np.float32 and case.pet.dtype == np.float32
        assert case.organs.dtype == np.uint8 and case.lesions.dtype == np.uint8
        np.testing.assert_allclose(case.affine, grid.affine)
        assert set(np.unique(case.organs)) <= set(ORGAN_LABELS)
        assert set(np.unique(case.lesions)) <= {0, 1}
        assert case.meta["source"] == "phantom" and case.meta["seed"] == 5
        assert np.all(case.ct[case.organs == 0] < -900)  # air outside the body
        assert case.pet.min() >= 0


def test_demo_preset_default():
    case = make_phantom(Demographics(60, "M", 175, 80, "NEGATIVE"), seed=0)
    assert case.shape == (128, 128, 256)
    assert case.spacing == (4.0, 4.0, 4.0)


def test_same_seed_identical_different_seed_differs():
    d = Demographics(61, "M", 181, 92, "LYMPHOMA")
    a = make_phantom(d, grid=SMALL, seed=11)
    b = make_phantom(d, grid=SMALL, seed=11)
    c = make_phantom(d, grid=SMALL, seed=12)
    for key in ("ct", "pet", "organs", "lesions"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.meta == b.meta
    assert not np.array_equal(a.pet, c.pet)


def test_liver_on_patients_right_spleen_and_heart_left():
    """RAS+: +x points to the patient's right, so the liver centroid has larger world x."""
    for seed in (0, 1):
        case = make_phantom(Demographics(58, "M", 171, 74, "NEGATIVE"), grid=SMALL, seed=seed)
        liver = _world(case, case.organs == ORGAN_IDS["liver"])
        spleen = _world(case, case.organs == ORGAN_IDS["spleen"])
        heart = _world(case, case.organs == ORGAN_IDS["heart"])
        brain = _world(case, case.organs == ORGAN_IDS["brain"])
        bladder = _world(case, case.organs == ORGAN_IDS["urinary_bladder"])
        assert liver[0] > 20 and spleen[0] < -20 and heart[0] < 0
        assert brain[2] > heart[2] > liver[2] > bladder[2]  # head at high z
        assert heart[1] > _world(case, case.organs == ORGAN_IDS["bone"])[1]  # heart anterior to the spine


def test_taller_gives_longer_body():
    short = make_phantom(Demographics(50, "M", 155, 55, "NEGATIVE"), grid=TALL, seed=3)
    tall = make_phantom(Demographics(50, "M", 195, 87, "NEGATIVE"), grid=TALL, seed=3)
    # vertex to upper thigh is ~0.545 x height: 40 cm taller -> ~22 cm longer
    assert _z_extent_mm(tall) - _z_extent_mm(short) > 150
    zb = [_world(c, c.organs == ORGAN_IDS["urinary_bladder"])[2] for c in (short, tall)]
    assert zb[1] < zb[0] - 100  # pelvis lies further below the vertex


def test_heavier_gives_larger_trunk_and_more_fat():
    light = make_phantom(Demographics(50, "F", 168, 58, "NEGATIVE"), grid=SMALL, seed=4)
    heavy = make_phantom(Demographics(50, "F", 168, 105, "NEGATIVE"), grid=SMALL, seed=4)

    def waist_area_cm2(case) -> float:
        k = int(np.argmin(np.abs(np.arange(case.shape[2]) * case.spacing[2] + case.affine[2, 3]
                                 - _world(case, case.organs == ORGAN_IDS["kidneys"])[2])))
        return float((case.organs[:, :, k] > 0).sum() * case.spacing[0] * case.spacing[1] / 100.0)

    assert waist_area_cm2(heavy) > 1.3 * waist_area_cm2(light)
    fat = [(c.organs == ORGAN_IDS["body_fat"]).sum() * c.voxel_volume_ml for c in (light, heavy)]
    assert fat[1] > 1.8 * fat[0]
    body = [(c.organs > 0).sum() * c.voxel_volume_ml for c in (light, heavy)]
    assert 1.4 < body[1] / body[0] < 2.1  # modelled volume follows weight (105/58 = 1.8)


def test_older_gives_lower_brain_suv():
    young = make_phantom(Demographics(25, "F", 165, 62, "NEGATIVE"), grid=SMALL, seed=6)
    old = make_phantom(Demographics(82, "F", 165, 62, "NEGATIVE"), grid=SMALL, seed=6)
    suv = [c.pet[c.organs == ORGAN_IDS["brain"]].mean() for c in (young, old)]
    assert suv[1] < 0.9 * suv[0]


def test_organ_hu_and_suv_within_documented_ranges():
    demos = sample_population(3, seed=21)
    for i, d in enumerate(demos):
        case = make_phantom(d, seed=100 + i)  # demo grid (4 mm)
        for name, (lo, hi) in ORGAN_HU_RANGE.items():
            m = case.organs == ORGAN_IDS[name]
            core = ndimage.binary_erosion(m)
            core = core if core.sum() >= 5 else m
            assert m.sum() > 0, f"{name} missing"
            hu = float(np.median(case.ct[core]))
            suv = float(case.pet[core].mean())
            assert lo <= hu <= hi, f"{d}: {name} median HU {hu:.0f} outside [{lo}, {hi}]"
            slo, shi = ORGAN_SUV_RANGE[name]
            assert slo <= suv <= shi, f"{d}: {name} mean SUV {suv:.2f} outside [{slo}, {shi}]"


def test_lesion_mask_only_where_lesion_uptake_is():
    base = dict(age=45, sex="M", height_cm=176, weight_kg=77)
    for dx in ("LYMPHOMA", "MELANOMA", "LUNG_CANCER"):
        sick = make_phantom(Demographics(**base, diagnosis=dx), grid=SMALL, seed=8)
        healthy = make_phantom(Demographics(**base, diagnosis="NEGATIVE"), grid=SMALL, seed=8)
        mask = sick.lesions.astype(bool)
        assert mask.any() and len(sick.meta["lesions"]) > 0
        np.testing.assert_array_equal(healthy.lesions, 0)
        # same seed: identical anatomy, texture and noise; only the lesions differ
        diff = sick.pet - healthy.pet
        near = ndimage.binary_dilation(mask, iterations=3)
        assert np.all(diff[~near] == 0), "PET changed away from the lesion mask"
        assert np.all(sick.ct[~ndimage.binary_dilation(mask, iterations=2)]
                      == healthy.ct[~ndimage.binary_dilation(mask, iterations=2)])
        assert float(diff[mask].mean()) > 0.5
        assert np.all(sick.organs[mask] > 0)  # lesions lie inside the body
        # every lesion component carries uptake above its surroundings
        lab, n = ndimage.label(mask)
        means = ndimage.mean(diff, lab, index=np.arange(1, n + 1))
        assert np.all(np.asarray(means) > 0)


def test_negative_has_empty_mask_and_unknown_diagnosis_is_drawn():
    case = make_phantom(Demographics(70, "F", 160, 66, "NEGATIVE"), grid=TINY, seed=2)
    assert case.lesions.sum() == 0 and case.meta["lesions"] == []
    case = make_phantom(Demographics(70, "F", 160, 66, None), grid=TINY, seed=2)
    assert case.meta["diagnosis"] in DIAGNOSES and case.meta["diagnosis_drawn"] is True


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(demographics=Demographics(50, "M", 180, None)), "weight_kg"),
        (dict(demographics=Demographics(None, None, 180, 80)), "age, sex"),
        (dict(demographics=Demographics(9, "F", 130, 30)), "adults"),
        (dict(demographics=Demographics(50, "M", 180, 20)), "BMI"),
        (dict(demographics={"age": 50}), "Demographics"),
        (dict(demographics=Demographics(50, "M", 180, 80), seed=-1), "seed"),
        (dict(demographics=Demographics(50, "M", 180, 80), preset="huge"), "preset"),
    ],
)
def test_bad_input_gives_clear_value_error(kwargs, match):
    kwargs.setdefault("seed", 0)
    with pytest.raises(ValueError, match=match):
        make_phantom(kwargs.pop("demographics"), **kwargs)


def test_impute_demographics_fills_missing_fields():
    d = impute_demographics(Demographics(None, "F", None, 70, "MELANOMA"), seed=3)
    assert d.is_complete and d.sex == "F" and d.weight_kg == 70 and d.diagnosis == "MELANOMA"
    assert d == impute_demographics(Demographics(None, "F", None, 70, "MELANOMA"), seed=3)


def test_cli_writes_readable_cohort_and_resumes(tmp_path: Path):
    out = tmp_path / "cohort"
    args = ["phantom", "--n", "3", "--out", str(out), "--seed", "7", "--shape", "32", "32", "64",
            "--spacing", "16", "16", "16"]
    assert main(args + ["--preview", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    cohort = Cohort(out)
    assert cohort.case_ids == ["phantom_00000", "phantom_00001", "phantom_00002"]
    case = cohort.load("phantom_00001")
    assert case.shape == (32, 32, 64) and case.organs is not None and case.pet is not None
    assert case.meta["source"] == "phantom" and case.demographics == cohort.demographics["phantom_00001"]
    first = case.ct.copy()

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    (out / ".phantom_00002.abc.tmp").mkdir()  # a stale temporary of an interrupted run
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == mtimes  # nothing rewritten
    assert not list(out.glob(".*.tmp"))

    # a missing case is regenerated identically; the cohort can grow, not change seed
    for p in (out / "phantom_00001").iterdir():
        p.unlink()
    (out / "phantom_00001").rmdir()
    assert main(args[:2] + ["4"] + args[3:]) == 0
    again = Cohort(out)
    assert len(again) == 4
    np.testing.assert_array_equal(again.load("phantom_00001").ct, first)
    assert main(args[:6] + ["8"] + args[7:]) == 2  # different seed into the same folder


def test_cli_no_progress_writes_no_bar(tmp_path: Path, capsys):
    args = ["phantom", "--n", "1", "--out", str(tmp_path / "c"), "--shape", "16", "16", "32", "--spacing", "32", "32", "32"]
    assert main(args + ["--no-progress"]) == 0
    assert "phantom:" not in capsys.readouterr().err
    assert main(args[:4] + [str(tmp_path / "d")] + args[5:]) == 0
    assert "phantom:" in capsys.readouterr().err


def test_cli_bad_options(tmp_path: Path):
    assert main(["phantom", "--out", str(tmp_path / "x")]) == 2  # no --n
    assert main(["phantom", "--n", "2", "--out", str(tmp_path / "x"), "--shape", "8", "8", "8"]) == 2
    assert main(["phantom", "--n", "0", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_cli_workers_and_demographics_csv(tmp_path: Path):
    src = tmp_path / "src.csv"
    src.write_text("case_id,age,sex,height_cm,weight_kg,diagnosis\n"
                   "a,60,M,180,,LYMPHOMA\nb,45,F,162,58,NEGATIVE\n")
    out = tmp_path / "c"
    assert main(["phantom", "--out", str(out), "--demographics", str(src), "--seed", "1", "--workers", "2",
                 "--shape", "24", "24", "48", "--spacing", "20", "20", "20"]) == 0
    cohort = Cohort(out)
    assert len(cohort) == 2
    assert all(d.is_complete for d in cohort.demographics.values())  # missing weight imputed


def test_preview_png(tmp_path: Path):
    cases = [make_phantom(d, grid=TINY, seed=i) for i, d in enumerate(sample_population(2, 1))]
    path = preview_png(cases, tmp_path / "prev.png")
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(os.environ.get("SYNTHAUG_TIMING") != "1", reason="timing check: set SYNTHAUG_TIMING=1")
def test_demo_case_speed():
    import time

    d = Demographics(55, "M", 178, 78, "LYMPHOMA")
    make_phantom(d, seed=0)
    t = time.process_time()
    for i in range(3):
        make_phantom(d, seed=i)
    assert (time.process_time() - t) / 3 < 2.0


def test_small_field_of_view_grid_is_cropped_from_the_whole_body():
    """A grid smaller than the body (e.g. an abdominal CT's) used to crash; it now shows the mid-trunk."""
    from synthaug.core.grid import Grid

    grid = Grid((40, 34, 12), (9.0, 9.0, 9.0))
    case = make_phantom(Demographics(60, "M", 178, 82, "NEGATIVE"), grid=grid, seed=3)
    assert case.shape == grid.shape
    np.testing.assert_allclose(case.affine, grid.affine)
    assert (case.organs == ORGAN_IDS["brain"]).sum() == 0  # the head is outside this field of view
    assert (case.organs > 0).mean() > 0.3  # but the trunk fills it


def test_phantom_generator_imputes_unknown_height_and_weight():
    from synthaug.core.grid import Grid
    from synthaug.sampling.generator import PhantomGenerator

    gen = PhantomGenerator(grid=Grid((32, 32, 64), (16.0, 16.0, 16.0)))
    case = gen.sample([Demographics(50, "F", None, None)], seed=1)[0]
    assert case.demographics.height_cm is not None and case.demographics.weight_kg is not None
    assert case.demographics.age == 50 and case.demographics.sex == "F"
