"""synthaug evaluate: per-case measurements, subgroup statistics, fidelity, memorisation, report."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from synthaug.core.case import Case
from synthaug.core.demographics import Demographics, sample_population
from synthaug.core.geometry import body_mask
from synthaug.core.grid import Grid
from synthaug.core.io import CaseError, read_nifti, write_case, write_demographics_csv, write_nifti
from synthaug.core.labels import ORGAN_IDS
from synthaug.evaluation.evaluate import (
    age_band,
    benjamini_hochberg,
    bmi_band,
    evaluate_cohorts,
    memorisation_check,
    subgroup_cells,
)
from synthaug.evaluation.metrics import landmark_distance_mm, measure_case, sphere_kernel

GRID = Grid((32, 32, 64), (16.0, 16.0, 16.0))

# (SUV, HU) per organ of the toy cases
TOY_VALUES = {
    "body_fat": (0.4, -100), "soft_tissue": (0.8, 40), "bone": (1.0, 700), "brain": (7.0, 35), "lungs": (0.5, -850),
    "heart": (3.0, 40), "liver": (2.2, 55), "spleen": (1.9, 45), "kidneys": (3.0, 30), "urinary_bladder": (10.0, 10),
    "aorta": (1.8, 45),
}


def toy_case(demo: Demographics, seed: int, grid: Grid = GRID) -> Case:
    """A hand-built PET/CT: an elliptic body whose length follows height and girth follows weight."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = grid.shape
    x, y, z = np.meshgrid(*[np.arange(n, dtype=float) for n in grid.shape], indexing="ij")
    length = demo.height_cm * 10 * 0.5 / grid.spacing[2]  # voxels
    a = min(math.sqrt(demo.weight_kg * 1e3 / (demo.height_cm * 0.5) / (0.7 * math.pi)) * 10 / grid.spacing[0], nx / 2 - 1)
    b = 0.7 * a
    cx, cy, z0 = nx / 2 + rng.normal(0, 0.3), ny / 2 + rng.normal(0, 0.3), 2.0
    f = (z - z0) / length
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    organs = np.zeros(grid.shape, np.uint8)
    body = (r <= 1.0) & (f >= 0) & (f <= 1)
    organs[body] = ORGAN_IDS["body_fat"]
    organs[body & (r <= 0.8 - 0.1 * (demo.bmi > 28))] = ORGAN_IDS["soft_tissue"]

    def blob(name, fz, fx, fy, radius, zr):
        jx, jz = rng.normal(0, 0.03, 2)
        d = np.sqrt(((x - cx - (fx + jx) * a) / (radius * a)) ** 2 + ((y - cy - fy * b) / (radius * a)) ** 2
                    + ((f - fz - jz * 0.1) / zr) ** 2)
        organs[body & (d <= 1.0)] = ORGAN_IDS[name]

    blob("urinary_bladder", 0.27, 0.0, 0.0, 0.2, 0.04)
    blob("kidneys", 0.47, -0.35, 0.3, 0.15, 0.04)
    blob("kidneys", 0.47, 0.35, 0.3, 0.15, 0.04)
    blob("liver", 0.56, -0.35, 0.0, 0.32, 0.06)
    blob("spleen", 0.56, 0.45, 0.2, 0.16, 0.03)
    blob("lungs", 0.7, -0.4, 0.0, 0.3, 0.08)
    blob("lungs", 0.7, 0.4, 0.0, 0.3, 0.08)
    blob("heart", 0.66, 0.1, -0.1, 0.22, 0.04)
    blob("brain", 0.93, 0.0, 0.0, 0.3, 0.04)
    organs[body & (np.hypot(x - cx, y - cy - 0.55 * b) <= 1.2)] = ORGAN_IDS["bone"]
    organs[body & (np.hypot(x - cx - 1.5, y - cy - 0.25 * b) <= 0.8) & (f > 0.35) & (f < 0.7)] = ORGAN_IDS["aorta"]
    suv = np.zeros(grid.shape, np.float32)
    ct = np.full(grid.shape, -1000.0, np.float32)
    scale = math.exp(rng.normal(0, 0.08))
    for name, (s, h) in TOY_VALUES.items():
        m = organs == ORGAN_IDS[name]
        suv[m] = s * scale * np.exp(rng.normal(0, 0.1, m.sum()))
        ct[m] = h + rng.normal(0, 15, m.sum())
    ct += rng.normal(0, 5, ct.shape).astype(np.float32)
    lesions = np.zeros(grid.shape, np.uint8)
    soft = np.argwhere(organs == ORGAN_IDS["soft_tissue"])
    for i in rng.choice(len(soft), size=int(rng.integers(0, 3)), replace=False):
        p = tuple(soft[i])
        lesions[p] = 1
        suv[p] = 8.0
    return Case(ct=ct, pet=suv, organs=organs, lesions=lesions, affine=grid.affine, demographics=demo,
                meta={"source": "phantom"})


class ToyGenerator:
    """A tiny CaseGenerator over :func:`toy_case`."""

    output_grid = GRID
    sha256 = "toy"
    settings = {"generator": "toy"}

    def sample(self, demographics, *, seed, progress=False):
        demos = [demographics] if isinstance(demographics, Demographics) else list(demographics)
        seeds = [seed + i for i in range(len(demos))] if isinstance(seed, int) else list(seed)
        return [toy_case(d, 1000 + s) for d, s in zip(demos, seeds)]


def make_cohort(root: Path, n: int = 8, seed: int = 0, demos=None) -> Path:
    demos = demos or sample_population(n, seed=seed)
    ids = {}
    for i, d in enumerate(demos):
        cid = f"toy{seed:02d}_{i:03d}"
        write_case(root, cid, toy_case(d, seed * 100 + i))
        ids[cid] = d
    write_demographics_csv(root / "demographics.csv", ids)
    return root


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("ref") / "ref", n=10, seed=0)


def rows_of(result, cell="all", key="comparison"):
    cmp = result[key] if key == "comparison" else result[key]["comparison"]
    return {(r["organ"], r["metric"]): r for r in cmp["rows"] if r["cell"] == cell}


# --- measurements -----------------------------------------------------------------------------------


def _largest_parts(mask: np.ndarray, parts: int) -> int:
    """Voxels in the ``parts`` largest 26-connected pieces, counted with a flood fill (not ndimage)."""
    seen = np.zeros(mask.shape, dtype=bool)
    sizes = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start], stack, size = True, [start], 0
        while stack:
            p = stack.pop()
            size += 1
            for off in np.ndindex(3, 3, 3):
                q = tuple(int(a) + o - 1 for a, o in zip(p, off))
                if all(0 <= c < n for c, n in zip(q, mask.shape)) and mask[q] and not seen[q]:
                    seen[q] = True
                    stack.append(q)
        sizes.append(size)
    return sum(sorted(sizes, reverse=True)[:parts])


def test_main_part_pct_counts_the_organs_parts():
    from synthaug.evaluation.metrics import main_part_pct

    m = np.zeros((12, 12, 12), dtype=bool)
    m[1:5, 1:5, 1:5] = True  # 64 voxels
    assert main_part_pct(m, 1) == 100.0
    m[8:10, 8:10, 8:10] = True  # a second piece of 8 voxels
    m[5, 5, 5] = True  # touches the first corner to corner: 26-connected, same piece
    assert main_part_pct(m, 1) == pytest.approx(100.0 * 65 / 73)
    assert main_part_pct(m, 2) == 100.0  # left and right, like the kidneys
    m[11, 0, 11] = True
    assert main_part_pct(m, 2) == pytest.approx(100.0 * 73 / 74)
    assert np.isnan(main_part_pct(np.zeros((3, 3, 3), dtype=bool)))
    rng = np.random.default_rng(0)
    specks = rng.random((10, 10, 10)) > 0.8
    assert main_part_pct(specks, 1) == pytest.approx(100.0 * _largest_parts(specks, 1) / specks.sum())


def test_measure_case_matches_hand_computed_values():
    d = Demographics(60, "M", 175, 80)
    case = toy_case(d, 3)
    vals = measure_case(case)
    liver = case.organs == ORGAN_IDS["liver"]
    assert vals["liver"]["volume_ml"] == pytest.approx(liver.sum() * 16**3 / 1000)
    assert vals["liver"]["suv_mean"] == pytest.approx(case.pet[liver].mean(), rel=1e-5)
    assert vals["liver"]["suv_max"] == pytest.approx(case.pet[liver].max())
    assert vals["liver"]["suv_peak"] == pytest.approx(case.pet[liver].max())  # 16 mm voxels: the sphere is one voxel
    assert vals["liver"]["ct_median_hu"] == pytest.approx(np.median(case.ct[liver]))
    zs = np.nonzero((case.organs > 0).any(axis=(0, 1)))[0]
    assert vals["body"]["body_extent_mm"] == pytest.approx((zs[-1] - zs[0] + 1) * 16)
    assert vals["body"]["lesion_count"] == case.lesions.sum()  # single-voxel lesions, apart
    lesion = case.lesions > 0
    assert lesion.any()
    assert vals["body"]["lesion_suv_max"] == pytest.approx(case.pet[lesion].max())
    assert vals["body"]["lesion_suv_mean"] == pytest.approx(case.pet[lesion].mean(), rel=1e-5)
    assert vals["liver"]["main_part_pct"] == pytest.approx(100.0 * _largest_parts(liver, 1) / liver.sum())
    assert np.isnan(vals["body_fat"]["main_part_pct"])  # tissue classes have no part count
    no_lesions = measure_case(Case(case.ct, case.pet, case.organs, np.zeros_like(case.lesions), case.affine, d))
    assert np.isnan(no_lesions["body"]["lesion_suv_max"]) and no_lesions["body"]["lesion_count"] == 0


def test_the_landmark_distance_is_the_centroid_distance_and_the_field_of_view_does_not_cut_it():
    """Brain and bladder centroids 60 slices apart at 3 mm: 180 mm, whichever array axis is the body's and
    however much of the body lies outside the field of view; NaN without either organ or without labels."""
    organs = np.zeros((8, 8, 100), np.uint8)
    organs[2:6, 2:6, 0:100] = ORGAN_IDS["soft_tissue"]
    organs[3:5, 3:5, 80:90] = ORGAN_IDS["brain"]  # centroid 84.5
    organs[2:6, 2:6, 22:28] = ORGAN_IDS["urinary_bladder"]  # centroid 24.5
    assert landmark_distance_mm(organs, 2, 3.0) == pytest.approx(180.0)
    assert landmark_distance_mm(np.moveaxis(organs, 2, 0), 0, 3.0) == pytest.approx(180.0)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    whole = Case(np.zeros(organs.shape, np.float32), np.zeros(organs.shape, np.float32), organs, None, affine)
    cut = Case(whole.ct[..., 15:], whole.pet[..., 15:], organs[..., 15:], None, affine)  # the legs out of the field
    full, part = measure_case(whole)["body"], measure_case(cut)["body"]
    assert part["body_extent_mm"] < full["body_extent_mm"]
    assert part["brain_to_bladder_mm"] == full["brain_to_bladder_mm"] == pytest.approx(180.0)
    no_bladder = np.where(organs == ORGAN_IDS["urinary_bladder"], ORGAN_IDS["soft_tissue"], organs)
    assert math.isnan(landmark_distance_mm(no_bladder, 2, 3.0))
    assert math.isnan(landmark_distance_mm(None, 2, 3.0))


def test_suv_peak_is_max_of_1ml_sphere_mean():
    k = sphere_kernel((1.0, 1.0, 1.0))
    assert (k > 0).sum() == pytest.approx(1000, rel=0.03)  # 1 ml at 1 mm voxels
    assert sphere_kernel((16, 16, 16)).size == 1
    # a uniform 3x3x3 hot cube at 2 mm: its local 1 ml mean never reaches the cube value
    pet = np.zeros((20, 20, 20), np.float32)
    pet[8:11, 8:11, 8:11] = 10.0
    organs = np.zeros(pet.shape, np.uint8)
    organs[4:16, 4:16, 4:16] = ORGAN_IDS["liver"]
    case = Case(ct=np.zeros_like(pet), pet=pet, organs=organs, lesions=None, affine=np.diag([2.0, 2, 2, 1]))
    liver = measure_case(case)["liver"]
    assert liver["suv_max"] == 10.0
    kernel = sphere_kernel((2.0, 2.0, 2.0))
    assert liver["suv_peak"] == pytest.approx(10.0 * min(27, (kernel > 0).sum()) / (kernel > 0).sum(), rel=1e-5)
    assert math.isnan(measure_case(case)["spleen"]["suv_mean"])
    assert measure_case(case)["spleen"]["volume_ml"] == 0.0
    # a hot neighbour does not leak into an organ's SUVpeak: the sphere mean is taken over the organ only
    organs[8:11, 8:11, 8:11] = ORGAN_IDS["spleen"]
    pet[organs == ORGAN_IDS["liver"]] = 2.0
    vals = measure_case(case)
    assert vals["liver"]["suv_peak"] == pytest.approx(2.0) and vals["liver"]["suv_max"] == 2.0
    assert vals["spleen"]["suv_peak"] == pytest.approx(10.0)  # too small for a half-inside sphere: all voxels


def test_body_mask_fills_lungs_without_labels():
    ct = np.full((20, 20, 10), -1000.0, np.float32)
    ct[4:16, 4:16, 2:8] = 40.0
    ct[7:13, 7:13, 3:7] = -850.0  # lungs, enclosed in each axial slice
    ct[0, 0, 0] = 100.0  # a speck
    mask = body_mask(ct, affine=np.eye(4))
    assert mask.sum() == 12 * 12 * 6


def test_bands_and_cells():
    assert [age_band(a) for a in (49.9, 50, 65, 65.1)] == ["<50", "50-65", "50-65", ">65"]
    assert [bmi_band(b) for b in (24.9, 25, 29.9, 30)] == ["<25", "25-30", "25-30", ">=30"]
    demos = [Demographics(40, "M", 180, 70)] * 5 + [Demographics(70, "F", 160, 90)] * 2
    cells = {c["name"]: c for c in subgroup_cells(demos, demos, min_cell=2)}
    assert "M / age <50 / BMI <25" in cells and "F / age >65 / BMI >=30" in cells
    assert len(cells["all"]["ref_index"]) == 7
    assert "F" not in {c["name"] for c in subgroup_cells(demos, demos, min_cell=3)}


def test_benjamini_hochberg_matches_hand_computation():
    p = [0.01, 0.04, 0.03, 0.2, float("nan")]
    q = benjamini_hochberg(p)
    # sorted 0.01, 0.03, 0.04, 0.2 (m = 4): 0.04, 0.0533, 0.0533, 0.2
    assert np.allclose(q[:4], [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    assert math.isnan(q[4])


# --- the evaluation -----------------------------------------------------------------------------------


def test_cohort_against_itself_has_zero_deviation(cohort, tmp_path):
    result = evaluate_cohorts(cohort, cohort, tmp_path / "rep", baseline=None, min_cell=3, progress=False)
    rows = result["comparison"]["rows"]
    assert len({r["cell"] for r in rows}) > 3  # subgroups reached the minimum
    for r in rows:
        if r["deviation_pct"] is not None:
            assert r["deviation_pct"] == pytest.approx(0.0, abs=1e-9), r
        if r["ks"] is not None:
            assert r["ks"] == 0.0 and r["wasserstein"] == pytest.approx(0.0, abs=1e-9) and not r["significant"]
    assert result["comparison"]["summary"]["significant"] == 0
    out = tmp_path / "rep"
    assert json.loads((out / "metrics.json").read_text())["reference"]["n_cases"] == 10
    report = (out / "report.md").read_text()
    assert "## Conditioning fidelity" in report and "No baseline was computed" in report
    for name in result["plots"]:
        assert 1000 < (out / name).stat().st_size < 300_000
    assert {"montage.png", "deviation_heatmap.png", "conditioning.png"} <= set(result["plots"])
    assert not list(out.glob(".*.tmp"))


def test_liver_suv_scaled_by_ten_percent_shows_in_liver_only(cohort, tmp_path):
    syn = tmp_path / "syn"
    shutil.copytree(cohort, syn)
    for case_dir in sorted(p for p in syn.iterdir() if p.is_dir()):
        pet, aff = read_nifti(case_dir / "SUV.nii.gz")
        organs, _ = read_nifti(case_dir / "ORGANS.nii.gz")
        pet = np.where(organs == ORGAN_IDS["liver"], pet * 1.1, pet).astype(np.float32)
        write_nifti(case_dir / "SUV.nii.gz", pet, aff)
    result = evaluate_cohorts(cohort, syn, tmp_path / "rep", baseline=None, min_cell=3, progress=False, plots=False)
    rows = rows_of(result)
    for metric in ("suv_mean", "suv_max", "suv_peak"):
        assert rows[("liver", metric)]["deviation_pct"] == pytest.approx(10.0, abs=1e-3)
    for organ in ("spleen", "kidneys", "heart", "lungs", "soft_tissue", "brain"):
        assert rows[(organ, "suv_mean")]["deviation_pct"] == pytest.approx(0.0, abs=1e-6)
        assert rows[(organ, "volume_ml")]["deviation_pct"] == pytest.approx(0.0, abs=1e-9)
    assert rows[("liver", "volume_ml")]["deviation_pct"] == pytest.approx(0.0, abs=1e-9)
    report = (tmp_path / "rep" / "report.md").read_text()
    liver_line = next(line for line in report.splitlines() if line.startswith("| liver |"))
    assert "+10.0" in liver_line
    # the liver comes first in the organ table: largest SUVmean deviation first
    first = next(line for line in report.splitlines() if line.startswith("| ") and "n ref / syn" not in line
                 and not line.startswith("|---"))
    assert first.startswith("| liver |")


def test_memorisation_flags_copies_and_passes_independent_cases(tmp_path):
    train = make_cohort(tmp_path / "train", n=10, seed=1)
    from synthaug.core.io import Cohort

    tc = Cohort(train)
    copies = [tc.load(cid) for cid in tc.case_ids[:2]]
    for c in copies:
        c.meta["case_id"] = "copy_of_" + c.meta["case_id"]
    jittered = tc.load(tc.case_ids[2])  # a copy with a little noise is still a copy
    jittered.pet = jittered.pet * np.float32(1.01)
    jittered.meta["case_id"] = "near_copy"
    independent = [toy_case(d, 5000 + i) for i, d in enumerate(sample_population(4, seed=7))]
    for i, c in enumerate(independent):
        c.meta["case_id"] = f"new{i}"
    result = evaluate_cohorts(train, copies + [jittered] + independent, tmp_path / "rep", training=train,
                              baseline=None, min_cell=100, progress=False, plots=False)
    memo = result["memorisation"]
    assert sorted(memo["flagged"]) == sorted(["copy_of_" + c for c in tc.case_ids[:2]] + ["near_copy"])
    assert memo["fraction_flagged"] == pytest.approx(3 / 7)
    by_id = {c["case_id"]: c for c in memo["cases"]}
    assert by_id["copy_of_" + tc.case_ids[0]]["distance"] < 1e-6
    assert by_id["copy_of_" + tc.case_ids[0]]["nearest_training_case"] == tc.case_ids[0]
    assert "Flagged: 3 of 7" in (tmp_path / "rep" / "report.md").read_text()


def test_memorisation_check_needs_two_training_cases():
    f = np.zeros((1, 8))
    with pytest.raises(ValueError, match="at least 2"):
        memorisation_check(f, ["a"], f, ["s"])


def test_generator_matches_reference_demographics_and_reports_fidelity(cohort, tmp_path):
    result = evaluate_cohorts(cohort, ToyGenerator(), tmp_path / "rep", baseline=ToyGenerator(), n_per_case=2,
                              min_cell=3, seed=5, progress=False, plots=False)
    syn = result["cases"]["synthetic"]
    assert len(syn) == 20 and syn[0]["case_id"].endswith("_s0") and syn[1]["case_id"].endswith("_s1")
    assert syn[0]["reference_case"] == syn[1]["reference_case"] == result["cases"]["reference"][0]["case_id"]
    assert syn[0]["demographics"] == result["cases"]["reference"][0]["demographics"]
    height = result["fidelity"]["height"]
    assert height["synthetic"]["pearson_r"] > 0.9 and height["calibration"]["a"] > 0
    assert height["synthetic"]["mae_calibrated_requested_units"] < 10  # cm
    assert result["fidelity"]["weight"]["synthetic"]["pearson_r"] > 0.8
    landmarks = result["fidelity"]["height_landmarks"]  # the toy places the organs along a body that follows height
    assert landmarks["measured"] == "brain_to_bladder_mm" and landmarks["synthetic"]["n"] == 20
    assert landmarks["synthetic"]["pearson_r"] > 0.9 and landmarks["synthetic"]["mae_raw"] is None  # NaN: not a height
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "| height_landmarks | synthetic | 20 |" in report and "Conditioning, height_landmarks" in report
    assert result["baseline"]["comparison"]["cells"][0]["n_syn"] == 10
    assert "## Baseline: parametric phantom vs reference" in (tmp_path / "rep" / "report.md").read_text()
    again = evaluate_cohorts(cohort, ToyGenerator(), tmp_path / "rep2", baseline=None, n_per_case=2, min_cell=3,
                             seed=5, progress=False, plots=False, batch_size=3)
    assert not list((tmp_path / "rep2").glob("*.png"))
    assert again["comparison"]["rows"] == result["comparison"]["rows"]  # deterministic, whatever the batch size


# --- bad input -----------------------------------------------------------------------------------------


def test_reference_without_demographics_is_refused(cohort, tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(cohort, ref)
    (ref / "demographics.csv").unlink()
    with pytest.raises(FileNotFoundError, match="demographics.csv"):
        evaluate_cohorts(ref, cohort, tmp_path / "rep", baseline=None, progress=False)
    assert not (tmp_path / "rep").exists()


def test_organ_id_outside_the_map_names_the_case(cohort, tmp_path):
    syn = tmp_path / "syn"
    shutil.copytree(cohort, syn)
    bad = sorted(p for p in syn.iterdir() if p.is_dir())[3]
    organs, aff = read_nifti(bad / "ORGANS.nii.gz")
    organs[0, 0, 0] = 15
    write_nifti(bad / "ORGANS.nii.gz", organs.astype(np.uint8), aff)
    with pytest.raises(ValueError, match=rf"{bad.name}.*\[15\].*outside the synthaug organ map"):
        evaluate_cohorts(cohort, syn, tmp_path / "rep", baseline=None, progress=False)


def test_mismatched_grids_name_the_case(cohort, tmp_path):
    syn = tmp_path / "syn"
    shutil.copytree(cohort, syn)
    bad = sorted(p for p in syn.iterdir() if p.is_dir())[1]
    pet, aff = read_nifti(bad / "SUV.nii.gz")
    write_nifti(bad / "SUV.nii.gz", pet[:, :, :60], aff)
    with pytest.raises(CaseError, match=rf"{bad.name}: SUV.nii.gz grid"):
        evaluate_cohorts(cohort, syn, tmp_path / "rep", baseline=None, progress=False)


def test_reference_without_organ_maps_asks_for_organs_dir(cohort, tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(cohort, ref)
    first = sorted(p for p in ref.iterdir() if p.is_dir())[0]
    (first / "ORGANS.nii.gz").unlink()
    with pytest.raises(CaseError, match=rf"{first.name}: no ORGANS.nii.gz; pass `organs_dir`"):
        evaluate_cohorts(ref, cohort, tmp_path / "rep", baseline=None, progress=False)


# --- TotalSegmentator organs -----------------------------------------------------------------------------


def test_totalseg_mapping_on_the_real_example(reference_dir):
    from synthaug.data.totalseg import TOTALSEG_V2_CLASSES, TOTALSEG_V2_TO_SYNTHAUG, totalseg_to_synthaug
    from synthaug.evaluation.metrics import organ_measurements

    assert len(TOTALSEG_V2_CLASSES) == 117
    assert TOTALSEG_V2_CLASSES[5] == "liver" and TOTALSEG_V2_CLASSES[90] == "brain"
    assert TOTALSEG_V2_CLASSES[52] == "aorta" and TOTALSEG_V2_CLASSES[117] == "costal_cartilages"
    assert TOTALSEG_V2_TO_SYNTHAUG[86] == ORGAN_IDS["soft_tissue"]  # autochthon
    assert TOTALSEG_V2_TO_SYNTHAUG[31] == ORGAN_IDS["bone"]  # vertebrae_L1
    ct, aff = read_nifti(reference_dir / "example_ct_sm.nii.gz", np.float32)
    seg, seg_aff = read_nifti(reference_dir / "example_seg.nii.gz")
    organs = totalseg_to_synthaug(seg, ct)
    vals = organ_measurements(Case(ct=ct, pet=None, organs=organs, lesions=None, affine=aff))
    assert vals["liver"]["ct_median_hu"] == pytest.approx(46, abs=2)
    assert vals["spleen"]["ct_median_hu"] == pytest.approx(35, abs=2)
    assert vals["lungs"]["ct_median_hu"] < -700
    assert -190 <= vals["body_fat"]["ct_median_hu"] <= -30
    assert vals["bone"]["ct_median_hu"] > 100  # 137 HU: cancellous bone and costal cartilage pull it down
    assert (organs[seg == 5] == ORGAN_IDS["liver"]).all()
    # real organs are whole: liver and spleen are one piece each (near enough: partial-volume specks)
    assert vals["liver"]["main_part_pct"] > 99.0 and vals["spleen"]["main_part_pct"] > 99.0
    assert np.isnan(vals["bone"]["main_part_pct"])
    with pytest.raises(ValueError, match="case x.*outside the TotalSegmentator"):
        totalseg_to_synthaug(np.full((2, 2, 2), 130), where="case x")


def test_reference_with_totalseg_organs_dir(cohort, tmp_path):
    from synthaug.data.totalseg import TOTALSEG_V2_IDS

    ref = tmp_path / "ref"
    shutil.copytree(cohort, ref)
    segs = tmp_path / "segs"
    segs.mkdir()
    back = {ORGAN_IDS["liver"]: "liver", ORGAN_IDS["spleen"]: "spleen", ORGAN_IDS["brain"]: "brain",
            ORGAN_IDS["heart"]: "heart", ORGAN_IDS["bone"]: "vertebrae_L1", ORGAN_IDS["lungs"]: "lung_upper_lobe_left"}
    for k, case_dir in enumerate(sorted(p for p in ref.iterdir() if p.is_dir())):
        organs, aff = read_nifti(case_dir / "ORGANS.nii.gz")
        (case_dir / "ORGANS.nii.gz").unlink()
        seg = np.zeros(organs.shape, np.uint8)
        for ours, name in back.items():
            seg[organs == ours] = TOTALSEG_V2_IDS[name]
        if k % 2:  # the per-class mask layout of TotalSegmentator without --ml
            (segs / case_dir.name).mkdir()
            for name in ("liver", "spleen", "brain"):
                write_nifti(segs / case_dir.name / f"{name}.nii.gz", (seg == TOTALSEG_V2_IDS[name]).astype(np.uint8), aff)
            seg[np.isin(seg, [TOTALSEG_V2_IDS[n] for n in ("liver", "spleen", "brain")], invert=True)] = 0
            write_nifti(segs / case_dir.name / "heart.nii.gz", np.zeros_like(seg), aff)
        else:
            write_nifti(segs / f"{case_dir.name}.nii.gz", seg, aff)
    result = evaluate_cohorts(ref, cohort, tmp_path / "rep", organs_dir=segs, baseline=None, min_cell=100,
                              progress=False, plots=False)
    rows = rows_of(result)
    for organ in ("liver", "spleen", "brain"):
        assert rows[(organ, "volume_ml")]["deviation_pct"] == pytest.approx(0.0, abs=1e-9)
        assert rows[(organ, "suv_mean")]["deviation_pct"] == pytest.approx(0.0, abs=1e-6)
    # a segmentation on another grid is refused, naming the case
    first = sorted(p for p in ref.iterdir() if p.is_dir())[0]
    seg, aff = read_nifti(segs / f"{first.name}.nii.gz")
    write_nifti(segs / f"{first.name}.nii.gz", seg[:, :, :50], aff)
    with pytest.raises(CaseError, match=rf"reference case {first.name}"):
        evaluate_cohorts(ref, cohort, tmp_path / "rep2", organs_dir=segs, baseline=None, progress=False)


# --- the command line ----------------------------------------------------------------------------------------


def test_cli_evaluate_writes_report_and_refuses_bad_input(cohort, tmp_path, capsys):
    from synthaug.cli import main

    out = tmp_path / "rep"
    rc = main(["evaluate", "--reference", str(cohort), "--synthetic", str(cohort), "--training", str(cohort),
               "--out", str(out), "--min-cell", "3", "--no-baseline"])
    assert rc == 0
    assert {"metrics.json", "report.md", "montage.png"} <= {p.name for p in out.iterdir()}
    memo = json.loads((out / "metrics.json").read_text())["memorisation"]
    assert memo["fraction_flagged"] == 1.0  # the training set itself is all copies
    ref = tmp_path / "nodemo"
    shutil.copytree(cohort, ref)
    (ref / "demographics.csv").unlink()
    capsys.readouterr()
    rc = main(["evaluate", "--reference", str(ref), "--synthetic", str(cohort), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "demographics.csv" in err and err.count("\n") == 1
    rc = main(["evaluate", "--reference", str(cohort), "--phantom", "--n-per-case", "0", "--out", str(tmp_path / "y")])
    assert rc == 2 and "n-per-case" in capsys.readouterr().err


def _phantom_available() -> bool:
    try:
        import synthaug.phantom.body  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _phantom_available(), reason="synthaug.phantom.body not available yet")
def test_cli_phantom_against_a_phantom_reference(tmp_path):
    from synthaug.cli import main
    from synthaug.sampling.generator import PhantomGenerator

    gen = PhantomGenerator(grid=GRID)
    demos = sample_population(6, seed=3)
    ref = tmp_path / "ref"
    for i, c in enumerate(gen.sample(demos, seed=100)):
        write_case(ref, f"p{i}", c)
    write_demographics_csv(ref / "demographics.csv", {f"p{i}": d for i, d in enumerate(demos)})
    out = tmp_path / "rep"
    assert main(["evaluate", "--reference", str(ref), "--phantom", "--out", str(out), "--min-cell", "2"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["baseline"]["same_as_synthetic"] is True
    assert result["reference"]["source"] == "phantom"
    assert "trivially close" in (out / "report.md").read_text()
    assert result["fidelity"]["height"]["synthetic"]["n"] == 6
