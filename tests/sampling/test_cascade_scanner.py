"""The cascade's last step: the PET imaged by a scanner model, off by default, seeded by the case."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import randomised_tiny_weights

from synthaug.core.demographics import Demographics
from synthaug.sampling.cascade import CascadedSampler

DEMO = Demographics(age=50, sex="F", height_cm=170, weight_kg=70, diagnosis="NEGATIVE")


@pytest.fixture(scope="module")
def sampler(tmp_path_factory) -> CascadedSampler:
    folder = randomised_tiny_weights(tmp_path_factory.mktemp("weights"))
    return CascadedSampler.from_pretrained(folder).configure(steps=3, sr_steps=2, patch_size=(18, 18, 34), overlap=4)


def test_the_scanner_is_off_by_default_and_images_only_the_pet_when_on(sampler):
    plain = sampler.sample(DEMO, seed=4)[0]
    assert "scanner" not in plain.meta
    scanned = sampler.configure(scanner="default").sample(DEMO, seed=4)[0]
    again = sampler.sample(DEMO, seed=4)[0]
    sampler.configure(scanner="off")
    assert sampler.scanner is None and np.array_equal(sampler.sample(DEMO, seed=4)[0].pet, plain.pet)
    assert scanned.meta["scanner"]["psf_fwhm_mm"] and np.array_equal(scanned.pet, again.pet)  # seeded by the case
    assert not np.array_equal(scanned.pet, plain.pet) and scanned.pet.min() >= 0
    for name in ("ct", "organs", "lesions"):
        assert np.array_equal(getattr(scanned, name), getattr(plain, name)), name


def test_an_unknown_scanner_is_refused_before_any_work(sampler):
    with pytest.raises(ValueError, match="nonexistent"):
        sampler.configure(scanner="nonexistent")
    assert sampler.scanner is None
