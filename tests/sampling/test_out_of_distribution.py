"""Demographics outside the weights' training population sample with a one-line warning."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import load_script, randomised_tiny_weights, write_tiny_cohort

from synthaug.core.checkpoint import read_config, sha256_file
from synthaug.core.demographics import Demographics, OutOfDistributionWarning, PopulationRanges, sample_population
from synthaug.model.stages import StageConfig
from synthaug.sampling.cascade import DEMO_WEIGHTS, CascadedSampler, generator_digest

INSIDE = Demographics(60, "M", 178, 82, "LYMPHOMA")
CHILD = Demographics(8, "F", 125, 22, "LYMPHOMA")  # BMI 14.1
RANGES = PopulationRanges(age=(18.0, 90.0), height_cm=(145.0, 200.0), bmi=(15.0, 45.0),
                          diagnoses=("NEGATIVE", "LYMPHOMA"), source="a test cohort")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return randomised_tiny_weights(tmp_path_factory.mktemp("tiny") / "weights")


def _sample(folder: Path, demos) -> list[str]:
    sampler = CascadedSampler.from_pretrained(folder, stages="global").configure(steps=1, lesions="model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler.sample(demos, seed=0)
    return [str(w.message) for w in caught if issubclass(w.category, OutOfDistributionWarning)]


def test_sampling_outside_the_recorded_population_warns_once_per_field(tiny, tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    for f in tiny.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    assert len(load_script("record_population").record(folder, RANGES)) == 2
    messages = _sample(folder, [CHILD, CHILD, INSIDE])
    assert len(messages) == 3  # age, height, BMI: once each for two identical children
    assert messages[0].startswith("age=8 is outside the training population's range [18, 90] years")
    assert "height_cm=125" in messages[1] and "[145, 200] cm" in messages[1]
    assert all("\n" not in m for m in messages)
    assert _sample(folder, [INSIDE]) == []
    assert _sample(folder, [Demographics(60, "M", 178, 82, "MELANOMA")]) == [
        "diagnosis='MELANOMA' is not among the training population's diagnoses ['NEGATIVE', 'LYMPHOMA']: "
        "sampled anyway, the weights learnt nothing there"]


def test_weights_that_record_no_population_load_and_do_not_warn(tiny):
    assert "training_population" not in json.loads((tiny / "global.json").read_text())
    assert _sample(tiny, [CHILD]) == []


def test_the_shipped_weights_record_their_training_cohort_without_changing_their_identity():
    configs = {s: read_config(DEMO_WEIGHTS / s) for s in ("global", "sr")}
    # the training cohort: `synthaug phantom --n 300 --seed 0 --version 2` (model card), whose demographics
    # are sample_population(300, seed=0), its cases phantom_00000 ... phantom_00299
    cohort = PopulationRanges.of(sample_population(300, seed=0))
    ids = [f"phantom_{i:05d}" for i in range(300)]
    for raw in configs.values():
        recorded = StageConfig.from_dict(raw).population
        assert recorded is not None and replace(recorded, source="") == cohort
        data = raw["info"]["training_data"]
        assert data["path"] in recorded.source and data["case_ids"] == ids
        assert data["case_ids_sha256"] == hashlib.sha256("\n".join(ids).encode()).hexdigest()
        assert len(set(data["case_identities"])) == 300 and all(i.startswith("phantom-seed:") for i in data["case_identities"])
    # metadata only: the generator digest is that of the same configs without it, and SHA256SUMS holds
    loaded = [(raw["sha256"], StageConfig.from_dict(raw)) for raw in configs.values()]
    bare = [(sha, replace(cfg, population=None)) for sha, cfg in loaded]
    assert generator_digest(loaded) == generator_digest(bare)
    sums = dict(reversed(line.split()) for line in (DEMO_WEIGHTS / "SHA256SUMS").read_text().splitlines())
    assert sums == {f"{s}.safetensors": configs[s]["sha256"] for s in configs}
    assert all(sha256_file(DEMO_WEIGHTS / name) == sha for name, sha in sums.items())


def test_a_cohort_folder_records_its_case_ids_and_population_without_changing_identity(tiny, tmp_path):
    """``record_population.py --cohort`` writes the cohort's case ids (as ``synthaug train`` records
    them) and the demographics they span; the generator digest stays that of the weights."""
    cohort = tmp_path / "cohort"
    ids = write_tiny_cohort(cohort, heights=(150.0, 190.0))
    folder = tmp_path / "w"
    folder.mkdir()
    for f in tiny.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    before = generator_digest([(read_config(folder / s)["sha256"], StageConfig.from_dict(read_config(folder / s)))
                               for s in ("global", "sr")])
    script = load_script("record_population")
    script.main(["--weights", str(folder), "--cohort", str(cohort)])
    for stage in ("global", "sr"):
        raw = read_config(folder / stage)
        assert raw["info"]["training_data"]["case_ids"] == list(ids)
        assert StageConfig.from_dict(raw).population.height_cm == (150.0, 190.0)
    after = generator_digest([(read_config(folder / s)["sha256"], StageConfig.from_dict(read_config(folder / s)))
                              for s in ("global", "sr")])
    assert after == before
    other = tmp_path / "other"  # the SR stage trained on another cohort: recorded on its own
    write_tiny_cohort(other, heights=(160.0, 170.0))
    script.main(["--weights", str(folder), "--cohort", str(other), "--stages", "sr"])
    assert StageConfig.from_dict(read_config(folder / "global")).population.height_cm == (150.0, 190.0)
    assert StageConfig.from_dict(read_config(folder / "sr")).population.height_cm == (160.0, 170.0)
