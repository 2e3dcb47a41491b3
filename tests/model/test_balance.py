"""Balanced draws of training cases over sex and height (synthaug.model.balance, TrainConfig.balance)."""

from __future__ import annotations

import numpy as np
import pytest

from synthaug.core.demographics import Demographics
from synthaug.model.balance import stratum_ids, stratum_weights


def _cond(people: list[Demographics]) -> np.ndarray:
    return np.stack([d.to_vector() for d in people])


def _cohort() -> list[Demographics]:
    """30 men of 170-199 cm and 10 women of 150-159 cm: one woman to three men, as a skewed cohort has."""
    men = [Demographics(age=50.0, sex="M", height_cm=170.0 + i, weight_kg=80.0) for i in range(30)]
    women = [Demographics(age=50.0, sex="F", height_cm=150.0 + i, weight_kg=60.0) for i in range(10)]
    return men + women


def test_groups_are_sex_then_equal_width_height_bands_within_sex():
    ids = stratum_ids(_cond(_cohort()), bins=2)
    men, women = ids[:30], ids[30:]
    assert set(men).isdisjoint(women)
    assert list(men[:15]) == [men[0]] * 15 and list(men[15:]) == [men[15]] * 15 and men[0] != men[15]
    assert list(women[:5]) == [women[0]] * 5 and list(women[5:]) == [women[5]] * 5 and women[0] != women[5]
    # bands of equal width, not equal counts: three short men and one tall one split 3 : 1
    men = [Demographics(age=50.0, sex="M", height_cm=h, weight_kg=80.0) for h in (160.0, 161.0, 162.0, 190.0)]
    ids = stratum_ids(_cond(men), bins=2)
    assert ids[0] == ids[1] == ids[2] != ids[3]


def test_unknown_sex_and_unknown_height_are_groups_of_their_own():
    people = [*_cohort(), Demographics(age=50.0, sex=None, height_cm=170.0, weight_kg=70.0),
              Demographics(age=50.0, sex="F", height_cm=None, weight_kg=70.0)]
    ids = stratum_ids(_cond(people), bins=2)
    assert ids[40] not in ids[:40] and ids[41] not in ids[:41]


def test_every_group_gets_the_same_share_and_cases_within_it_the_same():
    p = stratum_weights(_cond(_cohort()), bins=2)
    assert p.sum() == pytest.approx(1.0)
    assert p[:30].sum() == pytest.approx(0.5) and p[30:].sum() == pytest.approx(0.5)  # women: 1/4 -> 1/2
    assert p[30:35] == pytest.approx(np.full(5, 0.25 / 5)) and p[:15] == pytest.approx(np.full(15, 0.25 / 15))


def test_zero_means_uniform_and_bad_settings_are_refused():
    cond = _cond(_cohort())
    assert stratum_weights(cond, 0) is None
    with pytest.raises(ValueError, match="balance=-1"):
        stratum_weights(cond, -1)
    with pytest.raises(ValueError, match="cond must be"):
        stratum_ids(cond[:, :5], 2)


class _Arrays:
    """What StageData reads of a cohort's global-grid arrays, for draws: the conditioning vectors."""

    def __init__(self, cond: np.ndarray) -> None:
        self.cond = cond

    def __len__(self) -> int:
        return len(self.cond)


def _drawn(balance: int, draws: int = 40, batch: int = 50) -> np.ndarray:
    """The cases (row numbers) a global-stage StageData draws in ``draws`` batches from one seeded stream."""
    from types import SimpleNamespace

    from synthaug.model.train import StageData

    arrays = _Arrays(_cond(_cohort()))
    data = StageData(SimpleNamespace(stage="global"), arrays, None, balance)
    data._encode = lambda a, i, region=None: np.zeros((1, 2, 2, 2), np.float32)
    rng, rows = np.random.default_rng(7), []
    for _ in range(draws):
        cond = data.batch(rng, None, batch)["cond"].numpy()
        rows += [int(np.flatnonzero((arrays.cond == c).all(axis=1))[0]) for c in cond]
    return np.array(rows)


def test_stage_data_draws_balanced_and_uniform_draws_are_unchanged():
    """A balanced StageData draws the cohort's women half the time; balance 0 draws exactly as before it existed."""
    uniform, balanced = _drawn(0), _drawn(2)
    assert np.mean(balanced >= 30) == pytest.approx(0.5, abs=0.04)
    assert np.mean(uniform >= 30) == pytest.approx(0.25, abs=0.04)
    assert list(uniform[:50]) == list(np.random.default_rng(7).integers(40, size=50))
