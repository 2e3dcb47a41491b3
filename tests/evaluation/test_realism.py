"""Realism measures give known values on constructed volumes, and the README's numbers on the real PET."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from synthaug.evaluation.realism import (
    arms_length_mm,
    body_outline,
    edge_width,
    lesion_measures,
    lesion_measures_in_ras,
    markdown_table,
    measure,
    measure_files,
    sphere_mask,
    texture_fwhm,
)

REAL_PET = Path(__file__).resolve().parents[3] / "shared" / "reference" / "real_pet"


def _affine(spacing):
    return np.diag([*spacing, 1.0])


def _torso(shape=(60, 50, 80), spacing=(4.0, 4.0, 4.0), seed=0):
    """A box body (SUV 0.6) with a 'liver' ball (SUV 2, CoV 0.15 white noise) on the patient's right."""
    rng = np.random.default_rng(seed)
    pet = np.zeros(shape, np.float32)
    pet[10:50, 10:40, 5:75] = 0.6
    liver = sphere_mask(shape, spacing, (38, 25, 40), 40.0)
    pet[liver] = 2.0 * (1.0 + 0.15 * rng.standard_normal(int(liver.sum()))).astype(np.float32)
    return pet, liver


def test_a_sphere_of_known_suv_and_noise_gives_its_mean_and_cov_from_labels_and_without():
    spacing = (4.0, 4.0, 4.0)
    pet, liver = _torso()
    organs = np.where(liver, 7, np.where(pet > 0, 2, 0)).astype(np.uint8)
    for kwargs, method in (({"organs": organs}, "labels"), ({}, "heuristic")):
        res = measure(pet, _affine(spacing), **kwargs)["liver"]
        assert res["method"] == method and res["voi_fits"]
        assert res["suv_mean"] == pytest.approx(2.0, rel=0.03)
        assert res["cov"] == pytest.approx(0.15, rel=0.15)
        assert res["voxels"] == int(sphere_mask(pet.shape, spacing, (30, 30, 30), 15.0).sum())


def test_known_body_volume_length_and_quantiles():
    spacing = (4.0, 4.0, 5.0)
    pet = np.zeros((40, 40, 60), np.float32)
    pet[5:35, 10:30, 10:50] = 1.0
    pet[5:35, 10:30, 10:20] = 3.0
    body = measure(pet, _affine(spacing))["body"]
    assert body["volume_l"] == pytest.approx(30 * 20 * 40 * 4 * 4 * 5 / 1e6)
    assert body["length_m"] == pytest.approx(40 * 5 / 1000)
    assert body["suv_median"] == pytest.approx(1.0) and body["suv_p90"] == pytest.approx(3.0)


def test_arms_are_seen_where_a_slice_holds_a_part_on_each_side_of_the_body_and_legs_do_not_count():
    spacing = (4.0, 4.0, 5.0)
    pet = np.zeros((60, 40, 60), np.float32)
    pet[20:40, 10:30, 20:58] = 1.0                            # trunk, slices 20-57
    pet[12:18, 16:24, 5:20] = pet[42:48, 16:24, 5:20] = 1.0   # legs below it: two parts per slice
    assert measure(pet, _affine(spacing))["body"]["arms_mm"] == 0.0
    pet[6:14, 16:24, 25:55] = pet[46:54, 16:24, 25:55] = 1.0  # arms down beside it: 30 slices of 8 x 8 voxels
    assert measure(pet, _affine(spacing))["body"]["arms_mm"] == pytest.approx(30 * 5.0)
    body = body_outline(pet, spacing)
    assert arms_length_mm(body, spacing, min_cm2=8 * 8 * 0.16 + 0.01) == 0.0  # thinner than the minimum: not arms
    pet[14:20, 16:24, 25:55] = 1.0                            # the right arm touches the trunk: joined, not seen
    assert measure(pet, _affine(spacing))["body"]["arms_mm"] == 0.0


def test_body_from_ct_when_given_and_specks_are_not_body():
    spacing = (4.0, 4.0, 4.0)
    ct = np.full((30, 30, 30), -1000.0, np.float32)
    ct[5:25, 5:25, 5:25] = 40.0
    pet = np.zeros_like(ct)
    pet[0, 0, 0] = 5.0  # a hot speck outside the body
    assert body_outline(pet, spacing, ct).sum() == 20**3
    assert body_outline(pet, spacing).sum() <= 1  # nothing but the speck itself (the largest part)


@pytest.mark.parametrize("fwhm", [6.0, 8.0, 10.0])
def test_a_blurred_step_gives_the_known_edge_width(fwhm):
    spacing = (2.0, 2.0, 2.0)
    mask = np.zeros((40, 40, 40), bool)
    mask[:20] = True
    pet = ndimage.gaussian_filter(np.where(mask, 6.0, 1.0), [fwhm / 2.3548 / s for s in spacing], mode="nearest")
    assert edge_width(pet, mask, spacing) == pytest.approx(1.0880 * fwhm, rel=0.06)


def test_lesion_measures_of_a_uniform_ball():
    spacing = (4.0, 4.0, 4.0)
    pet = np.full((40, 40, 40), 1.0, np.float32)
    ball = sphere_mask(pet.shape, spacing, (20, 20, 20), 20.0)
    pet[ball] = 8.0
    res = measure(pet, _affine(spacing), lesions=ball.astype(np.uint8))["lesions"]
    one = res["per_lesion"][0]
    assert res["summary"]["n"] == 1
    assert one["suv_max"] == pytest.approx(8.0) and one["mean_over_max"] == pytest.approx(1.0)
    assert one["volume_ml"] == pytest.approx(ball.sum() * 0.064)
    assert one["surround_suv"] == pytest.approx(1.0)


def test_lesion_measures_in_any_orientation_are_those_of_the_ras_arrays():
    """A blurred ball off-centre on an anisotropic RAS grid, stored flipped and with its axes permuted: the
    rows are those of the RAS arrays. The edge width (mm) tells a spacing taken in the stored axis order
    while the arrays are reoriented."""
    spacing = (2.0, 3.0, 5.0)
    pet = np.full((30, 24, 16), 1.0, np.float32)
    ball = sphere_mask(pet.shape, spacing, (12, 10, 8), 18.0)
    pet[ball] = 6.0
    pet = ndimage.gaussian_filter(pet, 1.0)
    expected = lesion_measures(pet, ball, spacing)
    # array axes (z, x reversed, y): world x runs along axis 1 towards -x, y along axis 2, z along axis 0
    stored_pet, stored_ball = (np.transpose(a, (2, 0, 1))[:, ::-1, :] for a in (pet, ball))
    affine = np.zeros((4, 4))
    affine[0, 1], affine[1, 2], affine[2, 0], affine[3, 3] = -2.0, 3.0, 5.0, 1.0
    got = lesion_measures_in_ras(stored_pet, stored_ball.astype(np.uint8), affine)
    assert len(got) == len(expected) == 1
    assert got[0] == pytest.approx(expected[0])
    assert got[0]["volume_ml"] == pytest.approx(ball.sum() * 0.03)


def test_texture_of_white_and_of_gaussian_coloured_noise():
    rng = np.random.default_rng(0)
    spacing = (4.0, 4.0, 4.0)
    white = rng.standard_normal((40, 40, 40))
    mask = np.ones(white.shape, bool)
    assert all(v < 2.5 for v in texture_fwhm(white, mask, spacing))
    sd_vox = 10.0 / 2.3548 / 4.0
    coloured = ndimage.gaussian_filter(white, sd_vox, mode="wrap")
    for v in texture_fwhm(coloured, mask, spacing):
        assert v == pytest.approx(10.0, rel=0.12)


def test_arrays_are_read_in_ras_whatever_the_axis_order():
    pet, liver = _torso()
    flipped = pet[::-1]  # the liver now at small array x: an LAS affine puts it back on the right
    affine = np.diag([-4.0, 4.0, 4.0, 1.0])
    assert measure(flipped, affine)["liver"]["suv_mean"] == pytest.approx(2.0, rel=0.03)


def test_bad_input_is_refused_naming_the_parameter():
    with pytest.raises(ValueError, match="pet"):
        measure(np.zeros((4, 4)), np.eye(4))
    with pytest.raises(ValueError, match="organs"):
        measure(np.zeros((4, 4, 4)), np.eye(4), organs=np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="affine"):
        measure(np.zeros((4, 4, 4)), np.eye(3))


def test_markdown_table_has_a_column_per_input():
    pet, _ = _torso()
    md = markdown_table({"a": measure(pet, _affine((4, 4, 4))), "b": measure(pet, _affine((4, 4, 4)))})
    assert md.splitlines()[0] == "| | a | b |" and "liver VOI CoV" in md


def test_real_whole_body_pet_comes_out_near_the_readme_numbers():
    path = REAL_PET / "sts001_wholebody" / "PET_SUV.nii.gz"
    if not path.is_file():
        pytest.skip(f"real PET not available at {path}")
    res = measure_files(path)
    body, liver = res["body"], res["liver"]
    assert body["suv_median"] == pytest.approx(0.59, abs=0.02)
    assert body["suv_p90"] == pytest.approx(1.49, abs=0.04)
    assert body["suv_p99"] == pytest.approx(3.5, abs=0.15)
    assert body["volume_l"] == pytest.approx(58.0, rel=0.05)
    assert body["length_m"] == pytest.approx(0.87, abs=0.02)
    assert body["arms_mm"] >= 50.0  # the arms lie in the field, apart from the trunk in part of it
    # Without labels the heuristic VOI sits elsewhere in the liver than the README's: within 10 % of 2.05.
    assert liver["method"] == "heuristic" and liver["voi_fits"]
    assert liver["suv_mean"] == pytest.approx(2.05, rel=0.10)
    assert 0.14 <= liver["cov"] <= 0.22


def test_cli_measures_a_nifti_and_a_cohort_and_writes_json_and_markdown(tmp_path):
    import json

    from synthaug.cli import main
    from synthaug.core.io import write_nifti

    pet, liver = _torso()
    affine = _affine((4.0, 4.0, 4.0))
    write_nifti(tmp_path / "pet.nii.gz", pet, affine)
    organs = np.where(liver, 7, 0).astype(np.uint8)
    write_nifti(tmp_path / "organs.nii.gz", organs, affine)
    case = tmp_path / "cohort" / "c1"
    case.mkdir(parents=True)
    write_nifti(case / "SUV.nii.gz", pet, affine)
    write_nifti(case / "CTres.nii.gz", np.where(pet > 0, 40.0, -1000.0).astype(np.float32), affine)
    assert main(["realism", str(tmp_path / "pet.nii.gz"), "--organs", str(tmp_path / "organs.nii.gz"),
                 "--out", str(tmp_path / "r1")]) == 0
    res = json.loads((tmp_path / "r1" / "realism.json").read_text())
    assert res["pet.nii.gz"]["liver"]["method"] == "labels"
    assert main(["realism", str(tmp_path / "cohort"), "--out", str(tmp_path / "r2")]) == 0
    res = json.loads((tmp_path / "r2" / "realism.json").read_text())
    assert res["cohort/c1"]["body"]["source"] == "ct"
    assert "| | cohort/c1 |" in (tmp_path / "r2" / "realism.md").read_text()
    assert main(["realism", str(tmp_path / "cohort"), "--organs", str(tmp_path / "organs.nii.gz"),
                 "--out", str(tmp_path / "r3")]) == 2
