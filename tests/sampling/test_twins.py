"""Counterfactual twins: the grid of settings, its checks, and twins of the tiny cascade and the phantom."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers import TINY_GLOBAL_GRID, randomised_tiny_weights

from synthaug.core.demographics import Demographics
from synthaug.core.labels import ORGAN_IDS
from synthaug.sampling.cascade import CascadedSampler
from synthaug.sampling.generator import PhantomGenerator
from synthaug.sampling.twins import parse_vary, sample_twins, twin_label, twin_settings

BASE = Demographics(age=55, sex="F", height_cm=168, weight_kg=72, diagnosis="NEGATIVE")


@pytest.fixture(scope="module")
def cascade(tmp_path_factory) -> CascadedSampler:
    weights = randomised_tiny_weights(tmp_path_factory.mktemp("weights"))
    return CascadedSampler.from_pretrained(weights).configure(steps=4, sr_steps=2, patch_size=(18, 18, 34), overlap=4,
                                                              patch_batch=8)


class NoWork:
    """A generator that must never be asked for a case (checks happen first)."""

    def sample(self, *args, **kwargs):
        raise AssertionError("sampled before the arguments were checked")


def test_twins_of_the_cascade_change_the_varied_field_only_and_share_the_seed(cascade):
    cases = cascade.sample_twins(BASE, vary={"weight": [60, 80, 100]}, seed=7)
    assert len(cases) == 3
    assert [c.demographics.weight_kg for c in cases] == [60.0, 80.0, 100.0]
    for i, case in enumerate(cases):
        assert replace(case.demographics, weight_kg=BASE.weight_kg) == BASE
        assert case.meta["seed"] == 7
        assert case.meta["twin"] == {"base": BASE.to_dict(), "varied": {"weight_kg": [60.0, 80.0, 100.0][i]},
                                     "index": i, "n": 3}
    # A twin is the case the sampler makes for its demographics and the shared seed.
    alone = cascade.sample(replace(BASE, weight_kg=80.0), seed=7)[0]
    for name in ("ct", "pet", "organs", "lesions"):
        assert np.array_equal(getattr(cases[1], name), getattr(alone, name)), name
    assert not np.array_equal(cases[0].ct, cases[2].ct)  # the conditioning reaches the output


def test_two_fields_give_their_product_with_the_last_field_fastest():
    settings = twin_settings(BASE, {"weight": [60, 80], "age": [40, 70]})
    assert settings == [{"weight_kg": 60.0, "age": 40.0}, {"weight_kg": 60.0, "age": 70.0},
                        {"weight_kg": 80.0, "age": 40.0}, {"weight_kg": 80.0, "age": 70.0}]
    assert twin_settings(BASE, {"weight_kg": [90], "sex": ["M"], "diagnosis": ["LYMPHOMA"]}) == [
        {"weight_kg": 90.0, "sex": "M", "diagnosis": "LYMPHOMA"}]
    assert twin_label(settings[1]) == "weight 60 kg, age 70 y"


def test_global_stage_twins_follow_the_grid_order(cascade):
    sampler = CascadedSampler(cascade.global_model, cascade.global_config).configure(steps=3)
    cases = sampler.sample_twins(BASE, vary={"height": [150, 190], "sex": ["M", "F"]}, seed=2)
    got = [(c.demographics.height_cm, c.demographics.sex) for c in cases]
    assert got == [(150.0, "M"), (150.0, "F"), (190.0, "M"), (190.0, "F")]
    assert all(c.demographics.weight_kg == BASE.weight_kg and c.demographics.age == BASE.age for c in cases)
    assert [c.meta["twin"]["index"] for c in cases] == [0, 1, 2, 3]


@pytest.mark.parametrize(("vary", "match"), [
    ({}, "at least one field"),
    ({"wieght": [60, 80]}, "unknown field 'wieght'"),
    ({"weight": [60, 500]}, r"weight=500 is outside the allowed range \[2, 400\] kg"),
    ({"age": [-1]}, "age=-1 is outside"),
    ({"height": []}, "height: no values"),
    ({"weight": "60,80"}, "expected a list of values"),
    ({"weight": [60, "x"]}, "expected a number"),
    ({"weight": [60, 60]}, "given twice"),
    ({"weight": [60], "weight_kg": [70]}, "weight is given twice"),
    ({"sex": ["X"]}, "sex='X' is not allowed"),
    ({"diagnosis": ["FLU"]}, "diagnosis='FLU' is not allowed"),
    ({"weight": [None]}, "expected a number"),
])
def test_bad_vary_is_refused_with_one_line_before_any_work(vary, match):
    with pytest.raises(ValueError, match=match) as err:
        sample_twins(NoWork(), BASE, vary, seed=0)
    assert "\n" not in str(err.value) and str(err.value).startswith("`vary`")


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_seed_and_base_are_refused(seed):
    with pytest.raises(ValueError, match="seed"):
        sample_twins(NoWork(), BASE, {"weight": [60]}, seed=seed)
    with pytest.raises(ValueError, match="`base`: expected a Demographics"):
        sample_twins(NoWork(), BASE.to_dict(), {"weight": [60]}, seed=0)


def test_parse_vary_reads_flags_and_refuses_malformed_items():
    assert parse_vary(["weight=60, 80,100", "sex=m,f", "diagnosis=lymphoma"]) == {
        "weight": [60.0, 80.0, 100.0], "sex": ["M", "F"], "diagnosis": ["LYMPHOMA"]}
    for texts, match in [(["weight60"], "expected FIELD=V1,V2"), (["=60"], "expected FIELD"),
                         (["weight="], "no values"), (["weight=60,,80"], "empty value"),
                         (["weight=sixty"], "must be numbers"), (["height=1", "height=2"], "height is given twice"),
                         (["size=1"], "unknown field 'size'")]:
        with pytest.raises(ValueError, match=match) as err:
            parse_vary(texts)
        assert str(err.value).startswith("`vary`")


def test_phantom_twins_on_a_small_grid():
    generator = PhantomGenerator(grid=TINY_GLOBAL_GRID)
    cases = generator.sample_twins(BASE, vary={"weight": [55, 85, 115]}, seed=3)
    assert [c.demographics.weight_kg for c in cases] == [55.0, 85.0, 115.0]
    assert all(c.meta["seed"] == 3 and c.meta["source"] == "phantom" for c in cases)
    fat = [int((c.organs == ORGAN_IDS["body_fat"]).sum()) for c in cases]
    assert fat[0] < fat[1] < fat[2]
    again = generator.sample(replace(BASE, weight_kg=85.0), seed=3)[0]
    assert np.array_equal(again.ct, cases[1].ct)
