"""The lesion prior: the phantom's lesion model placed on a case's own labels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from synthaug.core.case import Case
from synthaug.core.demographics import Demographics
from synthaug.core.grid import Grid
from synthaug.core.io import read_nifti
from synthaug.core.labels import ORGAN_IDS
from synthaug.data.totalseg import totalseg_to_synthaug
from synthaug.phantom.body import lesion_plan, lesion_rng, make_phantom
from synthaug.phantom.lesions import _ALLOWED, CaseAnatomy, _centre, add_lesions

GRID = Grid((64, 64, 128), (8.0, 8.0, 8.0))
DEMO = Demographics(age=55, sex="M", height_cm=178, weight_kg=80, diagnosis="LYMPHOMA")


@pytest.fixture(scope="module")
def clean_case():
    """A phantom case with its lesions taken out (uptake and label), as a lesion-free generator would give."""
    case = make_phantom(replace(DEMO, diagnosis="NEGATIVE"), grid=GRID, seed=3)
    assert not case.lesions.any()
    return replace(case, demographics=DEMO)


def _allowed_labels() -> set[int]:
    return {label for labels in _ALLOWED.values() for label in labels}


@pytest.mark.parametrize("diagnosis", ["LYMPHOMA", "MELANOMA", "LUNG_CANCER"])
def test_lesions_have_uptake_lesion_tissue_and_allowed_labels(clean_case, diagnosis):
    before = {name: getattr(clean_case, name).copy() for name in ("ct", "pet", "organs", "lesions")}
    found = 0
    for seed in range(4):
        out = add_lesions(clean_case, seed=seed, diagnosis=diagnosis)
        for name, arr in before.items():  # the input case is left as it was
            assert np.array_equal(getattr(clean_case, name), arr), name
        info = out.meta["lesion_prior"]
        assert info["diagnosis"] == diagnosis and not info["diagnosis_drawn"]
        mask = out.lesions > 0
        assert mask.any() == bool(info["lesions"]) and mask.sum() <= sum(les["voxels"] for les in info["lesions"])
        if not mask.any():
            continue
        found += 1
        # Uptake: every lesion raises the PET inside it, by about its planned SUVmax at its peak.
        assert (out.pet[mask] > before["pet"][mask]).mean() > 0.9
        assert out.pet[mask].max() > 2.0
        # Tissue: lesion CT is soft tissue (30-45 HU) or sclerotic bone, not the fat or lung it grew in.
        components, n = ndimage.label(mask)
        for k in range(1, n + 1):
            if (components == k).sum() < 4:  # a voxel or three: their HU is mostly the CT's noise (sd ~17 HU)
                continue
            median = float(np.median(out.ct[components == k]))
            assert 0 < median < 80 or median > 600, median
        # Labels: lesions lie on the tissues their sites allow; nodes in fat are relabelled soft tissue.
        assert set(np.unique(before["organs"][mask]).tolist()) <= _allowed_labels()
        changed = out.organs != before["organs"]
        assert np.all(mask[changed]) and np.all(out.organs[changed] == ORGAN_IDS["soft_tissue"])
        # Nothing changes far from the lesions (the PSF reaches a few voxels).
        far = ~ndimage.binary_dilation(mask, iterations=4)
        assert np.array_equal(out.pet[far], before["pet"][far]) and np.array_equal(out.ct[~mask], before["ct"][~mask])
    assert found >= 3


def test_same_seed_same_lesions_other_seed_other_lesions(clean_case):
    a, b = add_lesions(clean_case, seed=11), add_lesions(clean_case, seed=11)
    c = add_lesions(clean_case, seed=12)
    for name in ("ct", "pet", "organs", "lesions"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.lesions, c.lesions)


def test_negative_adds_nothing_and_unknown_diagnosis_is_drawn(clean_case):
    out = add_lesions(clean_case, seed=0, diagnosis="NEGATIVE")
    assert not out.lesions.any() and np.array_equal(out.pet, clean_case.pet) and np.array_equal(out.ct, clean_case.ct)
    drawn = {add_lesions(replace(clean_case, demographics=replace(DEMO, diagnosis=None)), seed=s).meta["lesion_prior"]["diagnosis"]
             for s in range(12)}
    assert len(drawn) >= 2 and drawn <= {"NEGATIVE", "LYMPHOMA", "MELANOMA", "LUNG_CANCER"}


def test_existing_lesions_are_kept(clean_case):
    case = replace(clean_case, lesions=np.zeros(clean_case.shape, np.uint8))
    case.lesions[30, 30, 60] = 1
    out = add_lesions(case, seed=0, diagnosis="NEGATIVE")
    assert out.lesions[30, 30, 60] == 1 and out.lesions.sum() == 1


def test_node_chains_meet_the_phantoms_node_lesions():
    """The phantom's own node lesions (placed on its internal chains) lie close to the chains the
    prior finds on the phantom's labels: within 30 mm, where the phantom scatters them by 6 mm."""
    case = make_phantom(DEMO, grid=Grid((128, 128, 256), (4.0, 4.0, 4.0)), seed=5)
    nodes = [les for les in case.meta["lesions"] if les["site"].startswith("node:")]
    assert nodes, "the phantom case should have node lesions"
    body = CaseAnatomy(case, DEMO.height_cm)
    for les in nodes:
        nearest = body.nearest_on_chain(les["site"], les["centre_mm"])
        assert np.linalg.norm(np.array(les["centre_mm"]) - nearest) < 30.0, (les, nearest)


def test_the_phantoms_lesion_stream_gives_the_phantoms_plan(clean_case):
    """With the phantom's lesion stream the prior plans what the phantom planned for that seed:
    its lesions (and the phantom's) are that plan, in order, less any it could not place."""
    seed = 21
    phantom = make_phantom(DEMO, grid=GRID, seed=seed)
    plan = [(site, round(d, 1), round(s, 2)) for site, d, s in lesion_plan("LYMPHOMA", lesion_rng(seed))]
    prior = add_lesions(clean_case, seed=0, rng=lesion_rng(seed)).meta["lesion_prior"]
    assert len(plan) >= 2 and prior["not_placed"] == len(plan) - len(prior["lesions"])

    def subsequence(lesions):
        it = iter(plan)
        return all((les["site"], les["diameter_mm"], les["suvmax"]) in it for les in lesions)

    assert subsequence(prior["lesions"]) and subsequence(phantom.meta["lesions"])
    assert len(prior["lesions"]) >= len(plan) - 1


def test_sites_missing_from_the_case_are_counted_not_placed(clean_case):
    organs = clean_case.organs.copy()
    organs[organs == ORGAN_IDS["liver"]] = ORGAN_IDS["soft_tissue"]
    case = replace(clean_case, organs=organs)
    assert _centre(CaseAnatomy(case, 178), "liver", "liver", np.random.default_rng(0)) is None
    for seed in range(20):
        out = add_lesions(case, seed=seed, diagnosis="MELANOMA")
        info = out.meta["lesion_prior"]
        assert all(les["site"] != "liver" for les in info["lesions"])
        if info["not_placed"]:
            return
    pytest.fail("no melanoma plan in 20 seeds had a liver lesion")


def test_bad_input_is_refused(clean_case):
    with pytest.raises(ValueError, match="organ labels"):
        add_lesions(replace(clean_case, organs=None), seed=0)
    with pytest.raises(ValueError, match="seed"):
        add_lesions(clean_case, seed=-1)
    with pytest.raises(ValueError, match="diagnosis"):
        add_lesions(clean_case, seed=0, diagnosis="FLU")
    oblique = clean_case.affine.copy()
    oblique[:3, :3] = oblique[:3, :3] @ np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    with pytest.raises(ValueError, match="oblique"):
        add_lesions(replace(clean_case, affine=oblique), seed=0)
    with pytest.raises(ValueError, match="no body"):
        add_lesions(replace(clean_case, organs=np.zeros_like(clean_case.organs)), seed=0)


def test_without_demographics_the_body_extent_stands_in_for_height(clean_case):
    """No demographics: the diagnosis must be given, the height comes from the body's extent,
    and the node chains still land in the body (most planned lesions are placed)."""
    anonymous = replace(clean_case, demographics=None)
    height_mm = CaseAnatomy(anonymous, None).height_mm
    assert abs(height_mm - 1780) < 150, height_mm
    placed = planned = 0
    for seed in range(5):
        info = add_lesions(anonymous, seed=seed, diagnosis="LYMPHOMA").meta["lesion_prior"]
        placed += len(info["lesions"])
        planned += len(info["lesions"]) + info["not_placed"]
    assert planned > 0 and placed >= 0.9 * planned


def test_any_axis_order_and_direction_gives_the_same_lesions(clean_case):
    """Stored L-P-S with X and Z swapped (as scanners' files can be): the lesions are those of the
    RAS case, in the case's own array order, and the affine is left as it was."""
    ref = add_lesions(clean_case, seed=4, diagnosis="MELANOMA")
    assert ref.lesions.any()

    def to_file_order(a):
        return np.ascontiguousarray(a[::-1, ::-1, :].transpose(2, 1, 0))

    swap = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [s - 1 for s in clean_case.shape[:2]]
    affine = clean_case.affine @ flip @ swap  # file voxel -> RAS voxel -> world
    stored = replace(clean_case, ct=to_file_order(clean_case.ct), pet=to_file_order(clean_case.pet),
                     organs=to_file_order(clean_case.organs), lesions=to_file_order(clean_case.lesions), affine=affine)
    out = add_lesions(stored, seed=4, diagnosis="MELANOMA")
    assert np.array_equal(out.affine, affine)
    for name in ("ct", "pet", "organs", "lesions"):
        assert np.array_equal(getattr(out, name), to_file_order(getattr(ref, name))), name


def test_a_field_of_view_without_the_vertex_gets_no_node_lesions(clean_case):
    """Node chains hang from the vertex: cut off the head and only organ sites remain."""
    top = int(np.flatnonzero((clean_case.organs > 0).any(axis=(0, 1)))[-1])
    cut = top - 30  # through the neck at 8 mm
    headless = replace(clean_case, ct=clean_case.ct[..., :cut], pet=clean_case.pet[..., :cut],
                       organs=clean_case.organs[..., :cut], lesions=clean_case.lesions[..., :cut])
    assert (headless.organs[..., -1] > 0).any()
    sites = [les["site"] for seed in range(6)
             for les in add_lesions(headless, seed=seed, diagnosis="LYMPHOMA").meta["lesion_prior"]["lesions"]]
    assert not any(site.startswith("node:") for site in sites)
    with_head = [les["site"] for seed in range(6)
                 for les in add_lesions(clean_case, seed=seed, diagnosis="LYMPHOMA").meta["lesion_prior"]["lesions"]]
    assert any(site.startswith("node:") for site in with_head)


def test_lesions_on_the_real_ct_with_its_mapped_organs(reference_dir):
    """The real abdominal CT (its scanner affine, 3 mm, a 30-slice crop with no head) with its
    TotalSegmentator labels mapped to the organ map and a stand-in PET: lesions go to organ
    sites only (the crop has no vertex for node chains), have lesion-tissue HU, and leave the
    affine and everything far from them alone."""
    ct, affine = read_nifti(reference_dir / "example_ct_sm.nii.gz", np.float32)
    seg, _ = read_nifti(reference_dir / "example_seg.nii.gz")
    organs = totalseg_to_synthaug(seg, ct)
    pet = np.where(organs > 0, 1.0, 0.0).astype(np.float32)
    case = Case(ct, pet, organs, None, affine, Demographics(58, "M", 171, 74))
    placed = []
    for seed in range(8):
        out = add_lesions(case, seed=seed, diagnosis="MELANOMA")
        assert np.array_equal(out.affine, case.affine) and out.shape == case.shape
        info = out.meta["lesion_prior"]
        placed += [les["site"] for les in info["lesions"]]
        mask = out.lesions > 0
        if mask.any():
            assert set(np.unique(organs[mask]).tolist()) <= _allowed_labels()
            assert (out.pet[mask] > pet[mask]).mean() > 0.9
    assert placed and not any(site.startswith("node:") for site in placed)
    assert {"liver", "lung", "bone"} & set(placed)


def _ball_r2(radius_mm: float, spacing: float = 2.0) -> np.ndarray:
    """Normalised radius² of a ball of ``radius_mm`` on an isotropic grid (``< 1`` inside)."""
    n = int(np.ceil(radius_mm / spacing)) + 2
    ax = np.arange(-n, n + 1) * spacing
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    return ((x**2 + y**2 + z**2) / radius_mm**2).astype(np.float32)


def test_the_infiltrative_margin_tapers_uptake_to_the_rim_over_its_width():
    from synthaug.phantom.lesion_paint import LesionAppearance

    plain = LesionAppearance(heterogeneity_cov=0.0, necrosis_max=0.0, margin_mm=(0.0, 0.0))
    tapered = LesionAppearance(heterogeneity_cov=0.0, necrosis_max=0.0, margin_mm=(10.0, 10.0))
    r2 = _ball_r2(40.0)
    base, _ = plain.uptake_profile(r2, 80.0, (2.0,) * 3, np.random.default_rng(0))
    got, necrotic = tapered.uptake_profile(r2, 80.0, (2.0,) * 3, np.random.default_rng(0))
    assert not necrotic
    depth = (1.0 - np.sqrt(np.clip(r2, 0, 1))) * 40.0  # mm inside the rim
    inner, rim = (depth >= 10.0) & (r2 < 1), (depth < 10.0) & (r2 < 1)
    assert np.allclose(got[inner], base[inner])  # the body of the lesion is untouched
    t = depth[rim] / 10.0
    assert np.allclose(got[rim], base[rim] * t * t * (3 - 2 * t), atol=1e-6)  # smoothstep to 0 at the rim
    assert got[rim].min() < 0.05 * base[rim].max()
    # Smaller lesions than margin_from_mm keep their profile and draw nothing; the width is at most a quarter
    # of the radius.
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert tapered.margin_taper(r2, 20.0, rng_a) == 1.0 and rng_a.random() == rng_b.random()
    wide = LesionAppearance(heterogeneity_cov=0.0, necrosis_max=0.0, margin_mm=(50.0, 50.0))
    got_wide, _ = wide.uptake_profile(r2, 80.0, (2.0,) * 3, np.random.default_rng(0))
    assert np.allclose(got_wide[depth >= 10.0], base[depth >= 10.0]) and (got_wide[(depth < 9.0) & (r2 < 1)] <
                                                                            base[(depth < 9.0) & (r2 < 1)]).all()


def test_the_uptake_field_has_the_set_heterogeneity():
    from synthaug.phantom.lesion_paint import LesionAppearance

    r2 = _ball_r2(60.0)
    app = LesionAppearance(heterogeneity_cov=0.3, heterogeneity_fwhm_mm=6.0, necrosis_max=0.0, margin_mm=(0.0, 0.0))
    got, _ = app.uptake_profile(r2, 120.0, (2.0,) * 3, np.random.default_rng(1))
    ratio = (got / (1.0 - 0.4 * np.clip(r2, 0, 1)))[r2 < 1]
    assert abs(ratio.std() / ratio.mean() - 0.3) < 0.05 and ratio.min() > 0.0  # clipped at 0.1 before the scaling
    assert ratio.mean() == pytest.approx(1.0)  # the field moves uptake within the lesion, not its level
    # A lesion smaller than the field's grain keeps its planned level (the field is not a random gain).
    small = _ball_r2(3.0)
    for seed in range(5):
        tiny, _ = LesionAppearance(heterogeneity_cov=0.6, heterogeneity_fwhm_mm=12.0).uptake_profile(
            small, 6.0, (2.0,) * 3, np.random.default_rng(seed))
        assert tiny[small < 1].mean() == pytest.approx((1.0 - 0.4 * small)[small < 1].mean(), rel=0.05)
    again, _ = app.uptake_profile(r2, 120.0, (2.0,) * 3, np.random.default_rng(1))
    assert np.array_equal(got, again)


@pytest.mark.parametrize("field, value, words", [("margin_mm", (10.0, 5.0), "margin_mm"),
                                                 ("margin_mm", "wide", "margin_mm"),
                                                 ("margin_from_mm", -1.0, "margin_from_mm")])
def test_a_bad_margin_is_refused_with_one_line(field, value, words):
    from synthaug.phantom.lesion_paint import LesionAppearance

    with pytest.raises(ValueError, match=words) as err:
        LesionAppearance(**{field: value})
    assert "\n" not in str(err.value)


def test_fitted_and_phantom_uptake_share_the_plan_and_the_first_lesions_place(clean_case):
    """docs/lesions.md: both draw the same plan; the first lesion sits in the same place in both, later
    ones are placed from the random stream that the earlier lesions' uptake drew from differently."""
    plan = [("liver", 30.0, 8.0), ("lung", 20.0, 6.0), ("node:mediastinal", 15.0, 5.0)]
    drawn = [add_lesions(clean_case, seed=4, plan=plan, prior_uptake=u).meta["lesion_prior"]["lesions"]
             for u in ("fitted", "phantom")]
    assert drawn[0][0] == drawn[1][0]  # site, centre, size, planned peak and voxels
    key = [[(les["site"], les["diameter_mm"], les["suvmax"]) for les in d] for d in drawn]
    assert key[0] == key[1] and len(key[0]) == 3
    assert [les["centre_mm"] for les in drawn[0][1:]] != [les["centre_mm"] for les in drawn[1][1:]]


def test_the_fitted_prior_uptake_is_less_uniform_than_the_phantoms_rule(clean_case):
    """The same plan and seed painted with the fitted uptake and with the phantom's rule: same places and
    masks, the fitted lesion's SUVmean / SUVmax lower; an unknown rule is refused."""
    from synthaug.evaluation.realism import lesion_measures

    plan = [("liver", 70.0, 10.0)]
    fitted = add_lesions(clean_case, seed=2, plan=plan)
    phantom = add_lesions(clean_case, seed=2, plan=plan, prior_uptake="phantom")
    assert fitted.meta["lesion_prior"]["uptake"] == "fitted" and phantom.meta["lesion_prior"]["uptake"] == "phantom"
    assert fitted.lesions.sum() == phantom.lesions.sum() > 0
    ratio = [lesion_measures(c.pet, c.lesions, clean_case.spacing)[0]["mean_over_max"] for c in (fitted, phantom)]
    assert ratio[0] < ratio[1] - 0.05, ratio
    with pytest.raises(ValueError, match="prior_uptake") as err:
        add_lesions(clean_case, seed=2, plan=plan, prior_uptake="smooth")
    assert "\n" not in str(err.value)


def test_activity_for_a_scanner_is_painted_bare_inside_the_mask_only(clean_case):
    """``activity=True`` (a scanner images the case next): the lesions' activity goes into the mask as it is,
    without the PSF's spread or noise; the default blurs it into the neighbourhood."""
    bare = add_lesions(clean_case, seed=4, diagnosis="LYMPHOMA", activity=True)
    blurred = add_lesions(clean_case, seed=4, diagnosis="LYMPHOMA")
    assert bare.meta["lesion_prior"]["imaged"] is False and blurred.meta["lesion_prior"]["imaged"] is True
    mask = bare.lesions > 0
    rise = bare.pet.astype(np.float64) - clean_case.pet
    assert mask.any() and (rise[mask] > 0).all() and not rise[~mask].any()
    outside = (blurred.pet != clean_case.pet) & ~(blurred.lesions > 0)
    assert outside.any()
