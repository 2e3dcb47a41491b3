"""Phantom version 3: version 2's anatomy sized to what its field of view holds (head, trunk, the thighs
down to the scan end, the air in the lungs), the scan ending between upper and mid-thigh; versions 1
and 2 unchanged (their golden digests are in tests/test_golden_outputs.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthaug.core.demographics import Demographics
from synthaug.core.grid import Grid
from synthaug.evaluation.realism import body_outline
from synthaug.phantom.body import DEFAULT_PHANTOM_VERSION, PHANTOM_VERSIONS, make_phantom
from synthaug.phantom.bodyplan import (
    SCAN_END_JITTER_V3,
    SCAN_END_S,
    SCAN_END_S_V3,
    fov_mass_fraction,
    lung_air_l,
)

WIDE = Grid((64, 40, 84), (10.0, 10.0, 14.0))  # 640 x 400 x 1176 mm: a tall body to mid-thigh, arms at the sides
PERSON = Demographics(59, "M", 163, 71, "NEGATIVE")  # the real PET's patient (../shared/reference/real_pet)
REAL_PET = Path(__file__).resolve().parents[3] / "shared" / "reference" / "real_pet" / "sts001_wholebody" / "PET_SUV.nii.gz"


def _litres(case) -> float:
    return float((case.organs > 0).sum()) * case.voxel_volume_ml / 1000.0


def test_the_mass_in_the_field_is_version_2s_constant_at_its_scan_end_and_grows_down_the_thigh():
    assert fov_mass_fraction(SCAN_END_S, True) == pytest.approx(0.62, abs=0.005)  # what versions 1-2 use
    shares = [fov_mass_fraction(s, True) for s in (0.40, 0.47, 0.545, 0.575, 0.715, 0.80)]
    assert shares[0] == shares[1] == pytest.approx(0.504)  # above the hip: head, neck and trunk only
    assert all(b > a for a, b in zip(shares[1:4], shares[2:5]))
    assert shares[4] == shares[5] == pytest.approx(0.504 + 2 * 0.1416)  # both whole thighs at and past the knee


def test_lung_air_follows_height_age_and_sex():
    # Crapo (1982) upright FRC for a 175 cm, 50-year-old man: 0.0472 * 175 + 0.009 * 50 - 5.29 = 3.42 l
    assert lung_air_l(175, 50, True) == pytest.approx(3.42 * 0.8 + 0.25, abs=0.01)
    assert lung_air_l(185, 50, True) > lung_air_l(175, 50, True) > lung_air_l(175, 50, False)
    assert lung_air_l(120, 18, False) >= 1.0 * 0.8 + 0.25  # never below a floor for very small people


def test_version_3_is_the_default_and_keeps_version_2s_person_but_holds_more_volume():
    assert DEFAULT_PHANTOM_VERSION == 3 and PHANTOM_VERSIONS[3] == "3.0"
    v2 = make_phantom(PERSON, grid=WIDE, seed=5, version=2, scanner="off")
    v3 = make_phantom(PERSON, grid=WIDE, seed=5, scanner="off")
    assert v3.meta["phantom_version"] == "3.0"
    assert v3.meta["body"]["arms"]["pose"] == v2.meta["body"]["arms"]["pose"]  # the same draws
    assert v3.meta["tissues"] == v2.meta["tissues"] and v3.meta["diagnosis"] == v2.meta["diagnosis"]
    assert v3.meta["body"]["lean_scale"] > v2.meta["body"]["lean_scale"]
    assert 1.06 < _litres(v3) / _litres(v2) < 1.25


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_version_3_ends_the_scan_between_upper_and_mid_thigh(seed):
    body = make_phantom(PERSON, grid=WIDE, seed=seed, scanner="off").meta["body"]
    s_end = (body["vertex_z_mm"] - body["scan_end_z_mm"]) / 1630.0
    assert SCAN_END_S_V3 - SCAN_END_JITTER_V3 - 1e-3 <= s_end <= SCAN_END_S_V3 + SCAN_END_JITTER_V3 + 1e-3


@pytest.mark.parametrize("weight", [55, 80, 110])
def test_version_3s_volume_is_the_fields_mass_over_density_plus_lung_air_plus_the_arms(weight):
    d = Demographics(50, "F", 165, weight, "NEGATIVE")
    case = make_phantom(d, grid=WIDE, seed=2, scanner="off")
    body = case.meta["body"]
    s_end = (body["vertex_z_mm"] - body["scan_end_z_mm"]) / 1650.0
    bf = body["body_fat_fraction"]
    density = 1.0 / (bf / 0.9 + (1 - bf) / 1.1)
    expected = fov_mass_fraction(s_end, False) * weight / density + lung_air_l(165, 50, False)
    arms = sum(body["arms"]["volume_ml"].values()) * 2 / 1000.0  # per arm; the field may cut raised forearms
    assert expected * 0.93 < _litres(case) < (expected + arms) * 1.07


@pytest.mark.skipif(not REAL_PET.is_file(), reason="real PET reference (../shared/reference/real_pet) not present")
def test_version_3_holds_the_real_scans_body_volume_for_its_patient():
    nib = pytest.importorskip("nibabel")
    img = nib.load(str(REAL_PET))
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    real = float(body_outline(np.asarray(img.dataobj, dtype=np.float32), spacing).sum()) * np.prod(spacing) / 1e6
    grid = Grid((128, 128, 256), (4.0, 4.0, 4.0))
    for seed in (1, 2):
        for version, lo in ((3, 0.85), (2, None)):
            case = make_phantom(PERSON, grid=grid, seed=seed, version=version)  # imaged as the real scan is
            litres = float(body_outline(case.pet, case.spacing).sum()) * case.voxel_volume_ml / 1000.0
            if lo is not None:
                assert lo * real < litres < 1.15 * real, (seed, litres, real)
            else:
                assert litres < 0.9 * real  # version 2 is a tenth or more short: what version 3 fixes
