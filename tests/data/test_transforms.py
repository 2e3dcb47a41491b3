"""MONAI transforms that mix synthetic cases in: conventions, matching, reproducibility, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, Lambdad, RandSpatialCropd
from test_cache import FakeGenerator

from synthaug.core.demographics import Demographics
from synthaug.data.cache import generate_cache, merge_manifest, plan_cases
from synthaug.data.dataset import SyntheticPETCTDataset, demographics_from_item, demographics_item
from synthaug.data.transforms import (
    AddSyntheticChannelD,
    AddSyntheticChanneld,
    AddSyntheticChannelDict,
    RandSyntheticReplaceD,
    RandSyntheticReplaced,
    RandSyntheticReplaceDict,
    SyntheticDraw,
    match_demographics,
)

POOL = [Demographics(30 + 5 * i, "F" if i % 2 else "M", 160 + 3 * i, 60 + 4 * i) for i in range(8)]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "cache"
    generate_cache(root, FakeGenerator(), plan_cases(8, seed=0, demographics=POOL), fmt="npy", progress=False)
    merge_manifest(root)
    return SyntheticPETCTDataset.from_cache(root)


def _real(i: int, demo: Demographics | None = None, shape=(8, 8, 16)) -> dict:
    aff = torch.eye(4, dtype=torch.float64) * 8.0
    aff[3, 3] = 1.0
    return {"image": MetaTensor(torch.full((2, *shape), float(i)), affine=aff),
            "label": MetaTensor(torch.zeros((1, *shape)), affine=aff),
            "demographics": demographics_item(demo or POOL[i % len(POOL)]),
            "case_id": f"real_{i}", "seed": -1}


def test_aliases_and_set_random_state_returns_self(synth):
    assert RandSyntheticReplaceD is RandSyntheticReplaceDict is RandSyntheticReplaced
    assert AddSyntheticChannelD is AddSyntheticChannelDict is AddSyntheticChanneld
    t = RandSyntheticReplaced(["image", "label"], synth)
    assert t.set_random_state(seed=1) is t
    a = AddSyntheticChanneld("image", synth)
    assert a.set_random_state(seed=1) is a
    with pytest.raises(ValueError, match="source"):
        RandSyntheticReplaced("image", object())
    with pytest.raises(ValueError, match="match_k"):
        RandSyntheticReplaced("image", synth, match_k=0)


def test_replace_keeps_keys_and_matches_demographics(synth):
    t = RandSyntheticReplaced(["image", "label"], synth, prob=1.0, match_k=1).set_random_state(0)
    for i in range(4):
        real = _real(i, POOL[i])
        out = t(real)
        assert set(out) == set(real)  # nothing added or removed: mixed batches still collate
        assert out["case_id"] == synth.cases[i].case_id  # the exact demographic match
        assert demographics_from_item(out["demographics"]) == POOL[i]
        assert out["image"].shape == (2, 8, 8, 16) and not torch.equal(out["image"], real["image"])
        torch.testing.assert_close(out["image"].as_tensor(), synth[i]["image"].as_tensor())
    untouched = RandSyntheticReplaced(["image", "label"], synth, prob=0.0)(_real(0))
    assert untouched["case_id"] == "real_0" and torch.equal(untouched["image"], _real(0)["image"])
    # missing keys: an error unless allowed
    no_label = {k: v for k, v in _real(0).items() if k != "label"}
    with pytest.raises(KeyError):
        RandSyntheticReplaced(["image", "label"], synth, prob=1.0)(no_label)
    assert "label" not in RandSyntheticReplaced(["image", "label"], synth, prob=1.0, allow_missing_keys=True)(no_label)


def test_match_demographics():
    target = Demographics(62, "F", 172, 85)
    idx = match_demographics(target, POOL, k=2)
    assert all(POOL[i].sex == "F" for i in idx)
    assert list(idx) == [5, 7]  # the closest women by age, height and weight (distances 0.83, 0.99)
    assert list(match_demographics(None, POOL, k=2)) == list(range(8))  # no demographics: all
    assert len(match_demographics(Demographics(None, None, None, None), POOL, k=3)) == 3


def test_deterministic_core_and_recorded_draw(synth):
    t = RandSyntheticReplaced(["image", "label"], synth, prob=1.0)
    out = t.replace(_real(0), SyntheticDraw(index=5))
    assert out["case_id"] == "synth_00005"
    t.set_random_state(3)
    t(_real(2))
    assert isinstance(t._draw, SyntheticDraw) and t._draw.index is not None


def _picks(transform, reals) -> list[str]:
    return [transform(r)["case_id"] for r in reals]


def test_compose_with_fixed_seed_is_reproducible(synth):
    reals = [_real(i) for i in range(12)]

    def pipeline(seed):
        return Compose([RandSyntheticReplaced(["image", "label"], synth, prob=0.5, match_k=4),
                        RandSpatialCropd(["image", "label"], roi_size=(4, 4, 8), random_size=False)]
                       ).set_random_state(seed)

    a, b, c = pipeline(7), pipeline(7), pipeline(8)
    pa, pb, pc = _picks(a, reals), _picks(b, reals), _picks(c, reals)
    assert pa == pb
    assert pa != pc
    assert any(p.startswith("real_") for p in pa) and any(p.startswith("synth_") for p in pa)  # prob=0.5 mixes


def test_generator_source_matches_the_real_case():
    gen = FakeGenerator()
    t = RandSyntheticReplaced(["image", "label"], gen, prob=1.0).set_random_state(0)
    real = _real(0, Demographics(40, "F", 150, 50, "MELANOMA"))
    out = t(real)
    demo = demographics_from_item(out["demographics"])
    assert demo.sex == "F" and demo.diagnosis == "MELANOMA" and abs(demo.age - 40) < 10
    assert out["image"].shape == (2, 8, 8, 16) and out["seed"] == t._draw.seed
    again = RandSyntheticReplaced(["image", "label"], FakeGenerator(), prob=1.0).set_random_state(0)(real)
    torch.testing.assert_close(again["image"].as_tensor(), out["image"].as_tensor())


def test_add_synthetic_channels(synth):
    t = AddSyntheticChanneld(["image", "label"], synth, mode=("trilinear", "nearest")).set_random_state(0)
    real = _real(1)
    out = t(real)
    assert out["image"].shape == (4, 8, 8, 16) and out["label"].shape == (2, 8, 8, 16)
    torch.testing.assert_close(out["image"][:2].as_tensor(), real["image"].as_tensor())
    torch.testing.assert_close(out["image"].affine, real["image"].affine)
    # resized when the real case is on another grid; or written to a new key
    other = AddSyntheticChanneld("image", synth, output_postfix="_synth").set_random_state(0)(_real(1, shape=(4, 4, 8)))
    assert other["image"].shape == (2, 4, 4, 8) and other["image_synth"].shape == (2, 4, 4, 8)
    with pytest.raises(ValueError, match="output_postfix"):
        AddSyntheticChanneld("image", synth, output_postfix="")


def _mark_cached(x):
    return x + 0.0


def test_cache_dataset_and_workers_seeded_per_worker_and_reproducible(synth):
    reals = [_real(i) for i in range(8)]
    transform = Compose([Lambdad("image", _mark_cached),  # deterministic: cached
                         RandSyntheticReplaced(["image", "label"], synth, prob=1.0, match_k=8)])
    ds = CacheDataset(reals, transform=transform, progress=False, num_workers=0)

    def run() -> list[str]:
        loader = DataLoader(ds, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0))
        return [b["case_id"][0] for b in loader]

    first, second = run(), run()
    assert first == second  # the same draws across runs with a seeded loader
    assert all(p.startswith("synth_") for p in first)
    # workers 0 and 1 take items 0,2,4,6 and 1,3,5,7: with one shared random state they would
    # draw in lockstep; seeded per worker they do not
    assert [first[i] for i in (0, 2, 4, 6)] != [first[i] for i in (1, 3, 5, 7)]
    plain = Dataset(reals, transform=transform)
    batch = next(iter(DataLoader(plain, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 2, 8, 8, 16)  # replaced items collate with each other


def test_mixed_real_and_synthetic_batches_collate(synth):
    reals = [_real(i) for i in range(6)]
    t = RandSyntheticReplaced(["image", "label"], synth, prob=0.5)
    # MONAI's DataLoader reseeds the transform from its generator (with num_workers=0 too): without a
    # seeded one the draws would follow torch's global random state, which the tests before this one set.
    loader = DataLoader(Dataset(reals, transform=t), batch_size=6, num_workers=0,
                        generator=torch.Generator().manual_seed(1))
    batch = next(iter(loader))
    kinds = {cid.split("_")[0] for cid in batch["case_id"]}
    assert kinds == {"real", "synth"} and batch["image"].shape[0] == 6
    assert np.all(np.isfinite(batch["demographics"]["age"].numpy()))
