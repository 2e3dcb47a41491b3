"""Lesion insertion into real PET/CT: add_lesions with a LesionAppearance and RandLesionInsertd."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from synthaug.core.case import Case
from synthaug.core.demographics import Demographics
from synthaug.core.geometry import body_mask
from synthaug.core.grid import Grid
from synthaug.core.io import read_nifti
from synthaug.core.labels import ORGAN_IDS
from synthaug.data.totalseg import totalseg_to_synthaug
from synthaug.data.transforms import RandLesionInsertD, RandLesionInsertd, RandLesionInsertDict
from synthaug.phantom.body import make_phantom
from synthaug.phantom.lesion_paint import LesionAppearance, psf_reach_voxels
from synthaug.phantom.lesions import _ALLOWED, add_lesions
from synthaug.phantom.scanner import DEFAULT_SCANNER

GRID = Grid((64, 64, 128), (8.0, 8.0, 8.0))
DEMO = Demographics(age=55, sex="M", height_cm=178, weight_kg=80, diagnosis="LYMPHOMA")
REAL = LesionAppearance()
NOISELESS = LesionAppearance(scanner=replace(DEFAULT_SCANNER, noise_cov=0.0))
#: (site, diameter mm, SUVmax) of lesions every real-CT test inserts: sites the abdominal CT holds.
ABDOMEN_PLAN = [("liver", 25.0, 8.0), ("liver", 15.0, 6.0), ("bone", 20.0, 7.0), ("muscle", 30.0, 10.0),
                ("subcutaneous", 15.0, 5.0), ("spleen", 15.0, 6.0), ("lung", 12.0, 5.0)]


@pytest.fixture(scope="module")
def clean_case() -> Case:
    case = make_phantom(replace(DEMO, diagnosis="NEGATIVE"), grid=GRID, seed=5)
    return replace(case, demographics=DEMO)


@pytest.fixture
def real_ct_case(reference_dir) -> Case:
    """The real abdominal CT with its TotalSegmentator labels mapped to the synthaug organ map, paired
    with a flat PET (1 SUV in the body, 2 in the liver): no PET came with it."""
    ref = reference_dir
    ct, affine = read_nifti(ref / "example_ct_sm.nii.gz", np.float32)
    seg, _ = read_nifti(ref / "example_seg.nii.gz")
    organs = totalseg_to_synthaug(seg, ct)
    pet = np.where(organs > 0, 1.0, 0.0).astype(np.float32)
    pet[organs == ORGAN_IDS["liver"]] = 2.0
    return Case(ct=ct, pet=pet, organs=organs, lesions=None, affine=affine,
                demographics=Demographics(age=58, sex="M", height_cm=171, weight_kg=74, diagnosis="MELANOMA"))


def _reach_mask(mask: np.ndarray, reach: int) -> np.ndarray:
    """Voxels within ``reach`` voxels of ``mask`` along every axis (the PSF's box)."""
    return ndimage.maximum_filter(mask.astype(np.uint8), size=2 * reach + 1, mode="constant") > 0


def _check_placement(before: Case, out: Case, appearance: LesionAppearance) -> np.ndarray:
    """Shared checks: new lesions lie inside the body, on labels their sites allow, out of air, clear of the
    border (with the PSF's reach); images change only within that reach. Returns the new lesions' mask."""
    new = (out.lesions > 0) & (before.lesions == 0 if before.lesions is not None else True)
    allowed = {label for labels in _ALLOWED.values() for label in labels}
    assert set(np.unique(before.organs[new]).tolist()) <= allowed
    assert (before.organs[new] > 0).all() and body_mask(before.ct, before.organs)[new].all()
    lung = before.organs[new] == ORGAN_IDS["lungs"]
    assert (before.ct[new][~lung] >= appearance.air_hu).all() and (before.ct[new][lung] >= appearance.lung_air_hu).all()
    reach = psf_reach_voxels(appearance, before.spacing)
    idx = np.argwhere(new)
    assert idx.min() >= reach and (np.array(new.shape) - 1 - idx.max(0) >= reach).all(), "lesion across the border"
    near = _reach_mask(new, reach)
    assert not (out.pet != before.pet)[~near].any(), "PET changed beyond the PSF's reach"
    assert not (out.ct != before.ct)[~near].any(), "CT changed beyond the lesions"
    return new


@pytest.mark.parametrize("diagnosis", ["LYMPHOMA", "MELANOMA", "LUNG_CANCER"])
def test_inserted_lesions_lie_in_the_body_at_allowed_sites_and_change_images_only_near_them(clean_case, diagnosis):
    out = add_lesions(clean_case, seed=2, diagnosis=diagnosis, appearance=REAL)
    info = out.meta["lesion_prior"]
    assert info["lesions"] and info["scanner"] == DEFAULT_SCANNER.name
    new = _check_placement(clean_case, out, REAL)
    assert new.sum() == sum(les["voxels"] for les in info["lesions"])  # the lesions do not overlap
    rise = (out.pet - clean_case.pet)[new]
    assert (rise > 0).mean() >= 0.99  # the measured agreement is in docs/lesions.md


def test_mask_and_uptake_agree_exactly_without_noise(clean_case):
    """Every inserted mask voxel gets uptake, and no uptake lies outside the mask beyond the PSF's reach."""
    out = add_lesions(clean_case, seed=4, diagnosis="MELANOMA", appearance=NOISELESS)
    new = _check_placement(clean_case, out, NOISELESS)
    rise = out.pet - clean_case.pet
    assert (rise[new] > 0).all()
    assert (rise >= 0).all()
    reach = psf_reach_voxels(NOISELESS, clean_case.spacing)
    assert rise[~_reach_mask(new, reach)].sum() == 0.0
    # Most of the inserted activity is in the mask (the PSF spreads the rest within its reach).
    assert rise[new].sum() / rise.sum() > 0.3


def test_same_seed_same_case_and_the_input_is_not_changed(clean_case):
    before = {k: getattr(clean_case, k).copy() for k in ("ct", "pet", "organs", "lesions")}
    a = add_lesions(clean_case, seed=9, appearance=REAL)
    b = add_lesions(clean_case, seed=9, appearance=REAL)
    c = add_lesions(clean_case, seed=10, appearance=REAL)
    for name in ("ct", "pet", "organs", "lesions"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert np.array_equal(getattr(clean_case, name), before[name]), name
    assert not np.array_equal(a.pet, c.pet)


def test_existing_lesions_are_kept_and_left_untouched(clean_case):
    first = add_lesions(clean_case, seed=1, diagnosis="LYMPHOMA", appearance=REAL)
    old = first.lesions > 0
    second = add_lesions(first, seed=2, diagnosis="MELANOMA", appearance=REAL)
    assert (second.lesions[old] == 1).all() and (second.lesions > 0).sum() > old.sum()
    assert np.array_equal(second.pet[old], first.pet[old]) and np.array_equal(second.ct[old], first.ct[old])


def test_an_explicit_plan_sets_sites_sizes_and_uptake(clean_case):
    out = add_lesions(clean_case, seed=3, plan=[("liver", 30.0, 12.0), ("bone", 20.0, 6.0)], appearance=REAL)
    sites = [les["site"] for les in out.meta["lesion_prior"]["lesions"]]
    assert sites == ["liver", "bone"]
    liver = out.meta["lesion_prior"]["lesions"][0]
    assert liver["ct_hu"] < float(np.median(clean_case.ct[clean_case.organs == ORGAN_IDS["liver"]]))  # hypodense


@pytest.mark.parametrize("plan, words", [([("brain", 10.0, 5.0)], "site 'brain'"), ([("liver", -1.0, 5.0)], "diameter_mm"),
                                         ([("liver", 10.0)], "expected (site, diameter_mm, suvmax)")])
def test_a_bad_plan_is_refused_with_one_line(clean_case, plan, words):
    with pytest.raises(ValueError, match=r"plan\[0\]") as err:
        add_lesions(clean_case, seed=0, plan=plan, appearance=REAL)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_case_without_organ_labels_or_pet_is_refused_with_one_line(clean_case):
    for missing in ("organs", "pet"):
        with pytest.raises(ValueError, match=f"{missing} missing") as err:
            add_lesions(replace(clean_case, **{missing: None}), seed=0, appearance=REAL)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="necrotic_level"):
        LesionAppearance(necrotic_level=(0.5, 0.2))


def test_real_ct_with_totalsegmentator_labels_takes_lesions_at_its_sites(real_ct_case):
    out = add_lesions(real_ct_case, seed=0, plan=ABDOMEN_PLAN, appearance=REAL)
    info = out.meta["lesion_prior"]
    assert len(info["lesions"]) >= 4, info
    new = _check_placement(real_ct_case, out, REAL)
    for les in info["lesions"]:
        if les["site"] == "bone":
            assert les["tissue"] in ("lesion", "cortical_bone")
    assert (out.pet - real_ct_case.pet)[new].min() > 0
    again = add_lesions(real_ct_case, seed=0, plan=ABDOMEN_PLAN, appearance=REAL)
    assert np.array_equal(out.pet, again.pet) and np.array_equal(out.lesions, again.lesions)


# --- the MONAI transform ----------------------------------------------------------------------------


def _item(case: Case) -> dict:
    affine = torch.as_tensor(case.affine)
    image = MetaTensor(torch.from_numpy(np.stack([case.ct, case.pet])), affine=affine)
    return {"image": image, "organs": MetaTensor(torch.from_numpy(case.organs[None].astype(np.float32)), affine=affine),
            "lesions": MetaTensor(torch.from_numpy(case.lesions[None].astype(np.float32)), affine=affine),
            "demographics": case.demographics.to_dict()}


def test_transform_is_reproducible_with_a_seed_and_changes_labels_only_as_labels(clean_case):
    item = _item(clean_case)
    t = RandLesionInsertd(keys="image", prob=1.0)
    a = t.set_random_state(seed=3)(item)
    draw = t.draw
    b = RandLesionInsertd(keys="image").set_random_state(seed=3)(item)
    assert draw.seed is not None and t.last_lesions
    for key in ("image", "organs", "lesions"):
        assert torch.equal(a[key], b[key]), key
        assert isinstance(a[key], MetaTensor) and a[key].dtype == item[key].dtype
    assert torch.equal(torch.as_tensor(a["image"].affine), torch.as_tensor(item["image"].affine))
    assert set(torch.unique(a["lesions"]).tolist()) == {0.0, 1.0}
    changed = (a["organs"] != item["organs"])[0].numpy()
    assert (item["organs"][0].numpy()[changed] == ORGAN_IDS["body_fat"]).all()  # fat nodes -> soft tissue only
    assert (a["organs"][0].numpy()[changed] == ORGAN_IDS["soft_tissue"]).all()
    # the deterministic core alone gives the same case from the recorded draw
    c = t.insert(item, draw)
    assert torch.equal(c["image"], a["image"])


def test_transform_with_prob_zero_or_two_image_keys(clean_case):
    item = _item(clean_case)
    same = RandLesionInsertd(keys="image", prob=0.0).set_random_state(seed=0)(item)
    assert torch.equal(same["image"], item["image"]) and torch.equal(same["lesions"], item["lesions"])
    split = {"ct": item["image"][:1], "pet": item["image"][1:], "organs": item["organs"]}
    out = RandLesionInsertD(keys=("ct", "pet"), diagnosis="LUNG_CANCER").set_random_state(seed=1)(split)
    assert out["lesions"].sum() > 0 and (out["pet"] - split["pet"]).abs().sum() > 0
    assert RandLesionInsertDict is RandLesionInsertd


def test_transform_refuses_bad_items_with_one_line(clean_case):
    item = _item(clean_case)
    cases = [({**item, "image": item["image"][:1]}, "2 channels"),
             ({k: v for k, v in item.items() if k != "organs"}, "needs organ labels"),
             ({**item, "organs": item["organs"][:, :10]}, "does not match the image grid")]
    for bad, words in cases:
        with pytest.raises(ValueError, match=words) as err:
            RandLesionInsertd(keys="image").set_random_state(seed=0)(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="prob"):
        RandLesionInsertd(keys="image", prob=2.0)
    with pytest.raises(ValueError, match="diagnosis"):
        RandLesionInsertd(keys="image", diagnosis="FLU")


def test_the_downstream_arm_inserts_lesions_into_normalised_patches(clean_case):
    from synthaug.evaluation.downstream.train import CT_WINDOW, PET_SCALE, lesion_insertion_transform

    patch = {"image": np.stack([np.clip(clean_case.ct, *CT_WINDOW) / CT_WINDOW[1],
                                np.log1p(clean_case.pet) / PET_SCALE]).astype(np.float32),
             "organs": clean_case.organs.copy(), "lesions": clean_case.lesions.copy()}
    item = {"voxel_ml": 0.512, "demographics": replace(DEMO, diagnosis="MELANOMA")}
    outs = []
    for _ in range(2):
        hook, why_not = lesion_insertion_transform(seed=1, spacing_mm=GRID.spacing[0])
        assert hook is not None and why_not == ""
        outs.append([hook(patch, item, np.random.default_rng(0)) for _ in range(4)])
    for a, b in zip(*outs):  # seeded: the same patches twice
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["lesions"], b["lesions"])
    changed = [o for o in outs[0] if o["lesions"].any()]
    assert changed and all(o["image"].dtype == np.float32 and o["image"].shape == patch["image"].shape for o in changed)
    assert all(o["image"][1][o["lesions"] > 0].mean() > patch["image"][1][o["lesions"] > 0].mean() for o in changed)


def test_the_downstream_arm_leaves_a_patch_outside_the_body_as_it_is():
    from synthaug.evaluation.downstream.train import lesion_insertion_transform

    air = {"image": np.zeros((2, 8, 8, 8), np.float32), "organs": np.zeros((8, 8, 8), np.uint8),
           "lesions": np.zeros((8, 8, 8), np.uint8)}
    hook, _ = lesion_insertion_transform(seed=0, spacing_mm=GRID.spacing[0], prob=1.0)
    assert hook(air, {"demographics": replace(DEMO, diagnosis="MELANOMA")}, np.random.default_rng(0)) is air
