"""The scanner model: noise follows activity, scan time and weight; the PSF has its FWHM; seeded; validated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthaug.phantom.scanner import (
    DEFAULT_SCANNER,
    SCANNER_PRESETS,
    ScannerModel,
    apply_scanner,
    blur,
    correlated_noise,
    get_scanner,
)

SPACING = (4.0, 4.0, 4.0)


def _uniform_sd(model: ScannerModel, suv: float, weight: float = 75.0, seed: int = 0) -> float:
    out = model.apply(np.full((48, 48, 48), suv, np.float32), SPACING, weight, seed=seed)
    core = out[8:-8, 8:-8, 8:-8].astype(np.float64)
    return float(core.std())


def test_uniform_phantom_cov_equals_the_configured_level():
    model = ScannerModel(noise_cov=0.15, reference_suv=2.0)
    cov = _uniform_sd(model, 2.0) / 2.0
    assert cov == pytest.approx(0.15, rel=0.05)


def test_uniform_cov_holds_at_other_spacings_and_textures():
    model = ScannerModel(noise_cov=0.2, noise_fwhm_mm=(3.0, 3.0, 9.0))
    out = model.apply(np.full((40, 40, 60), 2.0, np.float32), (2.0, 2.0, 3.27), seed=3)
    assert out.std() / out.mean() == pytest.approx(0.2, rel=0.05)


def test_noise_sd_follows_activity_four_times_the_activity_doubles_the_sd():
    model = ScannerModel(noise_cov=0.1)
    ratio = _uniform_sd(model, 8.0) / _uniform_sd(model, 2.0)
    assert ratio == pytest.approx(2.0, rel=0.05)


def test_noise_sd_follows_scan_time_four_times_the_time_halves_the_sd():
    model = ScannerModel(noise_cov=0.1)
    ratio = _uniform_sd(model.with_scan_time(720.0), 2.0) / _uniform_sd(model, 2.0)
    assert ratio == pytest.approx(0.5, rel=0.05)


def test_heavier_patients_get_more_noise_as_the_square_root_of_weight():
    model = ScannerModel(noise_cov=0.1)
    ratio = _uniform_sd(model, 2.0, weight=150.0) / _uniform_sd(model, 2.0, weight=75.0)
    assert ratio == pytest.approx(2.0**0.5, rel=0.05)


def _fwhm_from_second_moment(profile: np.ndarray, spacing: float) -> float:
    x = (np.arange(profile.size) - int(np.argmax(profile))) * spacing
    w = profile / profile.sum()
    return float(2.3548 * np.sqrt((w * x**2).sum()))


@pytest.mark.parametrize("fwhm", [(6.0, 6.0, 6.0), (8.0, 8.0, 5.0), (4.0, 4.0, 4.0)])
def test_psf_fwhm_measured_on_a_point_source_matches_the_setting(fwhm):
    point = np.zeros((41, 41, 41), np.float32)
    point[20, 20, 20] = 1000.0
    spacing = (2.0, 2.0, 2.0)
    img = apply_scanner(point, spacing, ScannerModel(psf_fwhm_mm=fwhm, noise_cov=0.0))
    profiles = (img[:, 20, 20], img[20, :, 20], img[20, 20, :])
    for axis, prof in enumerate(profiles):
        assert _fwhm_from_second_moment(prof, spacing[axis]) == pytest.approx(fwhm[axis], rel=0.1)
    assert img.sum() == pytest.approx(1000.0, rel=1e-4)


def test_same_seed_same_image_and_another_seed_another():
    pet = np.random.default_rng(0).uniform(0, 3, (24, 24, 24)).astype(np.float32)
    a = apply_scanner(pet, SPACING, "default", 70.0, seed=5)
    b = apply_scanner(pet, SPACING, "default", 70.0, rng=np.random.default_rng(5))
    c = apply_scanner(pet, SPACING, "default", 70.0, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_output_is_non_negative_and_air_stays_zero():
    pet = np.zeros((32, 32, 32), np.float32)
    pet[8:24, 8:24, 8:24] = 0.3
    out = apply_scanner(pet, SPACING, ScannerModel(noise_cov=0.5, psf_fwhm_mm=(4.0, 4.0, 4.0)), seed=0)
    assert out.min() >= 0.0
    assert np.all(out[0] == 0.0)


def test_off_returns_an_unchanged_copy():
    pet = np.ones((8, 8, 8), np.float32)
    for off in (None, "off"):
        out = apply_scanner(pet, SPACING, off)
        assert np.array_equal(out, pet) and out is not pet
    assert get_scanner("off") is None and get_scanner("default") is DEFAULT_SCANNER


def test_correlated_noise_has_unit_variance_even_below_a_voxel():
    rng = np.random.default_rng(1)
    for fwhm in (0.0, 2.0, 12.0):
        n = correlated_noise((48, 48, 48), SPACING, fwhm, rng)
        assert n.std() == pytest.approx(1.0, rel=0.05 if fwhm < 10 else 0.15)


def test_blur_keeps_the_total_activity():
    pet = np.zeros((20, 20, 20), np.float32)
    pet[5:15, 5:15, 5:15] = 2.0
    assert blur(pet, SPACING, 8.0).sum() == pytest.approx(pet.sum(), rel=1e-4)


def test_config_round_trips_through_json_and_every_preset_is_valid():
    for model in SCANNER_PRESETS.values():
        assert ScannerModel.from_json(model.to_json()) == model
        assert model.source
    assert json.loads(DEFAULT_SCANNER.to_json())["psf_fwhm_mm"] == list(DEFAULT_SCANNER.psf_fwhm_mm)


@pytest.mark.parametrize("kwargs, name", [
    ({"psf_fwhm_mm": (-1.0, 2.0, 2.0)}, "psf_fwhm_mm"),
    ({"psf_fwhm_mm": (1.0, 2.0)}, "psf_fwhm_mm"),
    ({"noise_cov": -0.1}, "noise_cov"),
    ({"noise_cov": float("nan")}, "noise_cov"),
    ({"scan_time_s_per_bed": 0.0}, "scan_time_s_per_bed"),
    ({"reference_suv": 0.0}, "reference_suv"),
    ({"weight_exponent": True}, "weight_exponent"),
    ({"name": ""}, "name"),
])
def test_bad_config_is_refused_naming_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ScannerModel(**kwargs)


def test_bad_calls_are_refused_naming_the_parameter():
    pet = np.ones((8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="spacing"):
        apply_scanner(pet, (4.0, 0.0, 4.0), seed=0)
    with pytest.raises(ValueError, match="weight_kg"):
        apply_scanner(pet, SPACING, weight_kg=1000.0, seed=0)
    with pytest.raises(ValueError, match="rng/seed"):
        apply_scanner(pet, SPACING)
    with pytest.raises(ValueError, match="scanner"):
        apply_scanner(pet, SPACING, "no_such_scanner", seed=0)
    with pytest.raises(ValueError, match="pet"):
        apply_scanner(np.ones((4, 4)), SPACING, seed=0)
    with pytest.raises(ValueError, match="unknown field"):
        ScannerModel.from_dict({"psf": 3})


# --- the MONAI transform pair (synthaug.data.transforms) ----------------------------------------------


def _item(seed: int = 0):
    import torch
    from monai.data import MetaTensor

    rng = np.random.default_rng(seed)
    pet = rng.uniform(0.5, 3.0, (1, 16, 16, 16)).astype(np.float32)
    label = (pet > 2.0).astype(np.float32)
    affine = torch.diag(torch.tensor([4.0, 4.0, 3.0, 1.0], dtype=torch.float64))
    return {"pet": MetaTensor(torch.from_numpy(pet), affine=affine), "label": MetaTensor(torch.from_numpy(label), affine=affine),
            "demographics": {"age": 59, "sex": "M", "height_cm": 163, "weight_kg": 71}}


def test_dict_transform_is_deterministic_with_a_seed_and_leaves_labels_untouched():
    from synthaug.data.transforms import RandScannerd

    item = _item()
    t = RandScannerd(keys=["pet"], psf_fwhm_mm_range=(4.0, 9.0), noise_cov_range=(0.1, 0.3))
    a = t.set_random_state(seed=3)(item)
    b = RandScannerd(keys=["pet"], psf_fwhm_mm_range=(4.0, 9.0), noise_cov_range=(0.1, 0.3)).set_random_state(seed=3)(item)
    c = t(item)
    assert np.array_equal(a["pet"].numpy(), b["pet"].numpy())
    assert not np.array_equal(a["pet"].numpy(), c["pet"].numpy())
    assert a["label"] is item["label"]
    assert not np.array_equal(a["pet"].numpy(), item["pet"].numpy())
    assert np.allclose(a["pet"].affine.numpy(), item["pet"].affine.numpy())


def test_array_transform_matches_the_scanner_function_and_prob_zero_is_a_no_op():
    from synthaug.data.transforms import RandScanner, ScannerDraw

    item = _item()
    t = RandScanner("default", spacing=(4.0, 4.0, 3.0), weight_kg=71.0)
    draw = ScannerDraw(DEFAULT_SCANNER, seed=11)
    out = t.scan(item["pet"], draw)
    ref = apply_scanner(item["pet"].numpy()[0], (4.0, 4.0, 3.0), DEFAULT_SCANNER, 71.0, rng=np.random.default_rng([11, 0]))
    assert np.allclose(out.numpy()[0], ref)
    off = RandScanner(prob=0.0).set_random_state(seed=0)
    assert off(item["pet"]) is item["pet"]


def test_transform_refuses_bad_settings():
    from synthaug.data.transforms import RandScanner

    with pytest.raises(ValueError, match="prob"):
        RandScanner(prob=2.0)
    with pytest.raises(ValueError, match="psf_fwhm_mm_range"):
        RandScanner(psf_fwhm_mm_range=(5.0, 2.0))
    with pytest.raises(ValueError, match="scanner"):
        RandScanner(scanner="off")
    with pytest.raises(ValueError, match="spacing"):
        RandScanner()(np.ones((1, 4, 4, 4), np.float32))
