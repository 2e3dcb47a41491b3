"""The cascade's last step: the PET imaged by a scanner model, off by default unless the weights name one,
seeded by the case."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import randomised_tiny_weights

from synthaug.core.checkpoint import CheckpointError
from synthaug.core.demographics import Demographics
from synthaug.model.stages import StageConfig
from synthaug.phantom.scanner import DEFAULT_SCANNER, SCANNER_PRESETS
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


def _name_scanner(folder, scanner: dict) -> None:
    for stage in ("global", "sr"):
        path = folder / f"{stage}.json"
        config = json.loads(path.read_text())
        config["scanner"] = scanner
        path.write_text(json.dumps(config))


def test_weights_that_name_a_scanner_image_the_pet_with_it_by_default_and_off_turns_it_off(sampler, tmp_path):
    preset = sorted(SCANNER_PRESETS)[0]
    folder = randomised_tiny_weights(tmp_path / "weights")
    _name_scanner(folder, SCANNER_PRESETS[preset].to_dict())
    named = CascadedSampler.from_pretrained(folder).configure(steps=3, sr_steps=2, patch_size=(18, 18, 34), overlap=4)
    assert named.scanner == SCANNER_PRESETS[preset] and named.sr_config.scanner == SCANNER_PRESETS[preset]
    case = named.sample(DEMO, seed=4)[0]
    assert case.meta["scanner"] == SCANNER_PRESETS[preset].to_dict()
    explicit = sampler.configure(scanner=preset).sample(DEMO, seed=4)[0]
    sampler.configure(scanner="off")
    assert np.array_equal(case.pet, explicit.pet)  # the same as asking for that scanner by name
    named.configure(scanner="off")
    assert named.scanner is None and "scanner" not in named.sample(DEMO, seed=4)[0].meta
    # the field survives the JSON round trip and is left out when absent (older weights read unchanged)
    assert StageConfig.from_dict(named.sr_config.to_dict()).scanner == SCANNER_PRESETS[preset]
    assert "scanner" not in sampler.sr_config.to_dict()


def test_a_malformed_scanner_in_the_weights_is_refused_on_load(tmp_path):
    folder = randomised_tiny_weights(tmp_path / "weights")
    _name_scanner(folder, {**DEFAULT_SCANNER.to_dict(), "resolution": 3})
    with pytest.raises((ValueError, CheckpointError), match="resolution"):
        CascadedSampler.from_pretrained(folder)
