"""Lesion copy-paste between cases (the real_copypaste arm of synthaug downstream)."""

from __future__ import annotations

import numpy as np
import pytest

from synthaug.data.copypaste import LesionBank, paste_lesion, random_paste


def _donor() -> dict[str, np.ndarray]:
    ct = np.full((12, 12, 12), 40.0, np.float32)
    pet = np.ones((12, 12, 12), np.float32)
    lesions = np.zeros((12, 12, 12), np.uint8)
    lesions[2:4, 2:4, 2:4] = 1            # 8 voxels
    lesions[8:9, 8:11, 8:9] = 1           # 3 voxels
    pet[lesions > 0] = 9.0
    ct[lesions > 0] = 60.0
    return {"ct": ct, "pet": pet, "lesions": lesions}


def _recipient() -> dict[str, np.ndarray]:
    organs = np.zeros((10, 10, 10), np.uint8)
    organs[3:8, 3:8, 3:8] = 2
    return {"ct": np.full((10, 10, 10), -1000.0, np.float32), "pet": np.zeros((10, 10, 10), np.float32),
            "lesions": np.zeros((10, 10, 10), np.uint8), "organs": organs}


def test_the_bank_holds_each_connected_lesion():
    bank = LesionBank({"donor": _donor()})
    assert sorted(int(les.mask.sum()) for les in bank.lesions) == [3, 8]
    assert LesionBank({"donor": _donor()}, min_voxels=4).lesions[0].mask.sum() == 8


def test_a_pasted_lesion_lands_in_the_body_with_its_values_and_label():
    bank = LesionBank({"donor": _donor()}, min_voxels=4)
    patch = _recipient()
    out = paste_lesion(patch, bank.lesions[0], np.random.default_rng(0))
    assert out is not None and int(out["lesions"].sum()) == 8
    assert np.all(out["pet"][out["lesions"] > 0] == 9.0) and np.all(out["ct"][out["lesions"] > 0] == 60.0)
    centre = np.argwhere(out["lesions"]).mean(0).round().astype(int)
    assert patch["organs"][tuple(centre)] > 0 or np.any(patch["organs"][out["lesions"] > 0])
    np.testing.assert_array_equal(out["organs"], patch["organs"])  # organ labels untouched
    assert patch["lesions"].sum() == 0  # the input is not modified


def test_no_place_means_no_paste():
    bank = LesionBank({"donor": _donor()}, min_voxels=4)
    patch = _recipient()
    patch["organs"][:] = 0
    assert paste_lesion(patch, bank.lesions[0], np.random.default_rng(0)) is None
    tiny = {k: v[:1, :1, :1] for k, v in _recipient().items()}
    assert paste_lesion(tiny, bank.lesions[0], np.random.default_rng(0)) is None


def test_random_paste_respects_probability_exclusions_and_seed():
    bank = LesionBank({"donor": _donor()})
    patch = _recipient()
    assert random_paste(patch, bank, np.random.default_rng(0), prob=0.0)["lesions"].sum() == 0
    assert random_paste(patch, bank, np.random.default_rng(0), prob=1.0, exclude=("donor",))["lesions"].sum() == 0
    a = random_paste(patch, bank, np.random.default_rng(5), prob=1.0)
    b = random_paste(patch, bank, np.random.default_rng(5), prob=1.0)
    assert a["lesions"].sum() > 0
    np.testing.assert_array_equal(a["lesions"], b["lesions"])
    with pytest.raises(ValueError, match="prob"):
        random_paste(patch, bank, np.random.default_rng(0), prob=1.5)
