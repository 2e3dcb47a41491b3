"""Phantom version 2: arms (both poses), body volume following weight, the new FDG-visible structures,
the scanner model as the PET imaging, and version 1 kept as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthaug.cli import main
from synthaug.core.demographics import Demographics
from synthaug.core.grid import Grid
from synthaug.core.io import Cohort
from synthaug.core.labels import ORGAN_IDS
from synthaug.evaluation.realism import measure
from synthaug.phantom.body import PHANTOM_VERSIONS, make_phantom
from synthaug.phantom.scanner import DEFAULT_SCANNER
from synthaug.phantom.shapes import Vol
from synthaug.phantom.structures import HeadLandmarks, UrinaryLandmarks, paint_head_structures, paint_ureters
from synthaug.phantom.tables import PET_SUV_V2, TISSUE_IDS
from synthaug.sampling.generator import PhantomGenerator, cohort_phantom_version

TINY = Grid((32, 32, 64), (16.0, 16.0, 16.0))
WIDE = Grid((64, 40, 80), (10.0, 10.0, 14.0))  # 640 x 400 x 1120 mm: room for arms at the sides of a tall body
PERSON = Demographics(59, "M", 163, 71, "NEGATIVE")  # the real PET's patient (../shared/reference/real_pet)


def _pose(seed: int) -> str:
    return make_phantom(PERSON, grid=TINY, seed=seed, scanner="off").meta["body"]["arms"]["pose"]


def _lateral(case, z_mm: float, beyond_mm: float) -> dict[int, set[str]]:
    """Per side (+1 right, -1 left), the organ names found farther than ``beyond_mm`` from the midline
    in the slice at world ``z_mm``."""
    k = int(np.argmin(np.abs(case.affine[2, 3] + case.spacing[2] * np.arange(case.shape[2]) - z_mm)))
    x = case.affine[0, 3] + case.spacing[0] * np.arange(case.shape[0])
    names = {v: n for n, v in ORGAN_IDS.items()}
    return {side: {names[int(o)] for o in np.unique(case.organs[side * x > beyond_mm, :, k]) if o}
            for side in (1, -1)}


def test_both_arm_poses_occur_over_seeds():
    poses = [_pose(seed) for seed in range(10)]
    assert {"up", "down"} <= set(poses)
    assert 0.4 <= poses.count("up") / len(poses) <= 0.95  # ARMS_UP_PROBABILITY = 0.7


@pytest.mark.parametrize("pose", ["up", "down"])
def test_arms_are_bone_and_soft_tissue_beside_the_trunk_or_the_head(pose):
    seed = next(s for s in range(10) if _pose(s) == pose)
    case = make_phantom(PERSON, grid=WIDE, seed=seed, scanner="off")
    vertex = case.meta["body"]["vertex_z_mm"]
    z = vertex - (0.06 if pose == "up" else 0.30) * 1630.0  # beside the head, or beside the chest
    beyond = 100.0 if pose == "up" else 175.0  # past the skull (half-width ~90 mm) or the ribs and chest wall
    for side, organs in _lateral(case, z, beyond).items():
        assert {"bone", "soft_tissue", "body_fat"} <= organs, (side, organs)  # humerus, muscle and skin, fat
    assert case.meta["body"]["arms"]["pose"] == pose


def test_body_volume_follows_weight():
    light = make_phantom(Demographics(50, "M", 175, 60, "NEGATIVE"), grid=WIDE, seed=4, version=2, scanner="off")
    heavy = make_phantom(Demographics(50, "M", 175, 95, "NEGATIVE"), grid=WIDE, seed=4, version=2, scanner="off")
    assert light.meta["body"]["arms"]["pose"] == heavy.meta["body"]["arms"]["pose"]  # same seed, same pose
    litres = [(c.organs > 0).sum() * c.voxel_volume_ml / 1000.0 for c in (light, heavy)]
    assert 1.35 < litres[1] / litres[0] < 1.75  # 95 / 60 = 1.58
    for case, weight in zip((light, heavy), (60, 95)):
        # head to upper thigh (62 % of the mass) and what of the arms lies in the field: 67-80 %
        litres = (case.organs > 0).sum() * case.voxel_volume_ml / 1000.0
        assert 0.64 < litres / (weight / 1.03) < 0.82


def test_version_2_adds_arms_to_version_1_and_keeps_it_apart():
    v1 = make_phantom(PERSON, grid=TINY, seed=3, version=1)
    v2 = make_phantom(PERSON, grid=TINY, seed=3, version=2)
    assert v1.meta["phantom_version"] == PHANTOM_VERSIONS[1] and v2.meta["phantom_version"] == PHANTOM_VERSIONS[2]
    assert "arms" not in v1.meta["body"] and v1.meta["scanner"]["name"] == "phantom_v1"
    assert v2.meta["scanner"] == DEFAULT_SCANNER.to_dict()
    body1, body2 = v1.organs > 0, v2.organs > 0
    assert body2.sum() > 1.05 * body1.sum()
    assert (v1.organs[body1] != v2.organs[body1]).mean() < 0.01  # inside version 1's body few labels change


def test_same_seed_same_case_and_bad_version_refused():
    a = make_phantom(PERSON, grid=TINY, seed=7)
    b = make_phantom(PERSON, grid=TINY, seed=7)
    c = make_phantom(PERSON, grid=TINY, seed=8)
    for key in ("ct", "pet", "organs", "lesions"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.meta == b.meta and not np.array_equal(a.pet, c.pet)
    for bad in (0, 4, "2", True):
        with pytest.raises(ValueError, match="version"):
            make_phantom(PERSON, grid=TINY, seed=0, version=bad)


def test_the_scanner_gives_the_real_liver_noise_at_4_mm_and_can_be_turned_off():
    grid = Grid((128, 128, 256), (4.0, 4.0, 4.0))
    case = make_phantom(PERSON, grid=grid, seed=0)
    liver = measure(case.pet, case.affine, organs=case.organs)["liver"]
    assert 0.12 <= liver["cov"] <= 0.30  # real STS_001: 0.14 at 4 mm
    assert 2.05 * 0.8 <= liver["suv_mean"] <= 2.05 * 1.2  # real VOI 2.05; the table's between-subject sd is 0.35
    off = make_phantom(PERSON, grid=TINY, seed=0, scanner="off")
    assert off.meta["scanner"] is None
    on = make_phantom(PERSON, grid=TINY, seed=0)
    liver_cov = [c.pet[c.organs == ORGAN_IDS["liver"]].std() / c.pet[c.organs == ORGAN_IDS["liver"]].mean()
                 for c in (off, on)]
    assert liver_cov[0] < 0.1 < liver_cov[1]  # off: the activity's own heterogeneity only
    assert make_phantom(PERSON, grid=TINY, seed=0, scanner="biograph_vision").meta["scanner"]["name"] == "biograph_vision"


def test_new_tissue_values_stay_in_their_documented_ranges():
    for seed in range(5):
        suv = make_phantom(PERSON, grid=TINY, seed=seed, scanner="off").meta["tissues"]["suv"]
        assert 1.5 <= suv["tonsil"] <= 8.0
        assert 0.2 * suv["renal_pelvis"] - 1e-3 <= suv["ureter"] <= suv["renal_pelvis"] + 1e-3
    assert PET_SUV_V2["liver"][0] == pytest.approx(2.05)


def _vol(shape=(40, 40, 40), spacing=4.0) -> Vol:
    return Vol(Grid(shape, (spacing,) * 3))


def test_tonsils_replace_the_gland_beside_the_oropharynx_and_submandibular_glands_are_painted():
    vol = _vol()
    vol.org[:] = ORGAN_IDS["soft_tissue"]
    vol.tis[:] = TISSUE_IDS["muscle"]
    lm = HeadLandmarks(face_centre=(0.0, 20.0, 40.0), face_semi=(60.0, 58.0, 68.0), head_scale=1.0)
    tonsil = (13.0, 20.0 - 18.0, 40.0 - 0.35 * 68.0)
    ijk = tuple(int(np.argmin(np.abs(c - q))) for c, q in zip((vol.x, vol.y, vol.z), tonsil))
    vol.tis[ijk[0] - 1: ijk[0] + 2, ijk[1] - 1: ijk[1] + 2, ijk[2] - 1: ijk[2] + 2] = TISSUE_IDS["gland"]
    paint_head_structures(vol, lm, np.random.default_rng(0))
    assert vol.tis[ijk] == TISSUE_IDS["tonsil"]
    assert (vol.tis == TISSUE_IDS["gland"]).sum() * 0.064 > 5.0  # two submandibular glands, ~5 ml each


def test_ureters_run_through_fat_and_bowel_only():
    vol = _vol()
    vol.org[:, :, :] = ORGAN_IDS["soft_tissue"]
    vol.tis[:, :, :] = TISSUE_IDS["bowel"]
    vol.org[:, :, :5] = ORGAN_IDS["urinary_bladder"]
    vol.tis[:, :, :5] = TISSUE_IDS["bladder_urine"]
    lm = UrinaryLandmarks(paths=(((20.0, 0.0, 70.0), (20.0, 0.0, 0.0), (20.0, 0.0, -70.0)),))
    shares = paint_ureters(vol, lm, np.random.default_rng(1))
    ure = vol.tis == TISSUE_IDS["ureter"]
    assert ure.any() and 0.3 <= shares[0] <= 1.0
    assert not (ure & (vol.org == ORGAN_IDS["urinary_bladder"])).any()
    assert np.all(np.abs(vol.x[np.nonzero(ure)[0]] - 20.0) <= 4.0)


def test_cli_version_option_and_cohort_version(tmp_path: Path):
    out = tmp_path / "v1"
    args = ["phantom", "--n", "1", "--out", str(out), "--seed", "2", "--shape", "32", "32", "64",
            "--spacing", "16", "16", "16"]
    assert main(args + ["--version", "1"]) == 0
    assert json.loads((out / "phantom_settings.json").read_text())["phantom_version"] == PHANTOM_VERSIONS[1]
    assert json.loads((out / "phantom_00000" / "meta.json").read_text())["phantom_version"] == PHANTOM_VERSIONS[1]
    assert cohort_phantom_version(out) == 1 and cohort_phantom_version(tmp_path) is None
    assert main(args) == 2  # resuming a version-1 cohort as version 2 is refused
    gen = PhantomGenerator(grid=TINY, version=1)
    assert gen.sample([PERSON], seed=0)[0].meta["phantom_version"] == PHANTOM_VERSIONS[1]
    assert gen.sha256 != PhantomGenerator(grid=TINY).sha256


def test_cli_scanner_option_writes_the_activity_and_refuses_a_mixed_resume(tmp_path: Path, capsys):
    args = ["phantom", "--n", "1", "--seed", "2", "--shape", "32", "32", "64", "--spacing", "16", "16", "16"]
    off, on = tmp_path / "off", tmp_path / "on"
    assert main(args + ["--out", str(off), "--scanner", "OFF"]) == 0
    assert main(args + ["--out", str(on)]) == 0
    assert json.loads((off / "phantom_settings.json").read_text())["scanner"] == "off"
    assert json.loads((off / "phantom_00000" / "meta.json").read_text())["scanner"] is None
    assert json.loads((on / "phantom_00000" / "meta.json").read_text())["scanner"] is not None
    # same person and seed: the activity equals the phantom made with scanner=None
    direct = make_phantom(Demographics(**json.loads((off / "phantom_00000" / "meta.json").read_text())["demographics"]),
                          grid=Grid((32, 32, 64), (16.0, 16.0, 16.0)),
                          seed=json.loads((off / "phantom_00000" / "meta.json").read_text())["case_seed"], scanner=None)
    assert np.array_equal(Cohort(off).load("phantom_00000").pet, direct.pet)
    capsys.readouterr()
    assert main(args + ["--out", str(off)]) == 2  # resuming a scanner-off cohort with the scanner is refused
    assert "scanner" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "bad"), "--scanner", "no-such-scanner"]) == 2
    assert "no-such-scanner" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything was written
