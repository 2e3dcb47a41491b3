"""SyntheticPETCTDataset: structure, determinism, both sources, MONAI transforms, workers."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from test_cache import FakeGenerator

from synthaug.core.demographics import Demographics
from synthaug.core.io import write_case, write_demographics_csv
from synthaug.data.cache import generate_cache, merge_manifest, plan_cases
from synthaug.data.dataset import (
    PETCTCohortDataset,
    SyntheticPETCTDataset,
    demographics_from_item,
    demographics_item,
)


def _assert_items_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            torch.testing.assert_close(a[key].as_tensor(), b[key].as_tensor(), rtol=0, atol=0)
            torch.testing.assert_close(a[key].affine, b[key].affine)
        elif key == "demographics":
            assert demographics_from_item(a[key]) == demographics_from_item(b[key])
        else:
            assert a[key] == b[key]


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "cache"
    generate_cache(root, FakeGenerator(), plan_cases(4, seed=10), fmt="npy", progress=False)
    merge_manifest(root)
    return root


def test_item_structure_and_indexing():
    gen = FakeGenerator()
    ds = SyntheticPETCTDataset(3, generator=gen, seed=5)
    assert len(ds) == 3
    item = ds[1]
    assert set(item) == set(ds.item_keys) == {"image", "label", "demographics", "case_id", "seed"}
    img, lab = item["image"], item["label"]
    assert isinstance(img, MetaTensor) and img.shape == (2, 8, 8, 16) and img.dtype == torch.float32
    assert isinstance(lab, MetaTensor) and lab.shape == (1, 8, 8, 16) and lab.dtype == torch.float32
    np.testing.assert_allclose(img.affine.numpy(), gen.output_grid.affine)
    np.testing.assert_allclose(lab.affine.numpy(), gen.output_grid.affine)
    assert item["case_id"] == "synth_00001" and item["seed"] == 6
    assert img.meta["filename_or_obj"] == "synth_00001"
    ref = gen.sample([ds.cases[1].demographics], seed=[6])[0]
    np.testing.assert_array_equal(img[0].numpy(), ref.ct)  # CT is channel 0
    np.testing.assert_array_equal(img[1].numpy(), ref.pet)  # PET is channel 1
    np.testing.assert_array_equal(lab[0].numpy(), ref.lesions)
    assert set(np.unique(lab.numpy())) <= {0.0, 1.0}
    _assert_items_equal(ds[-2], item)
    with pytest.raises(IndexError):
        ds[3]


def test_label_choices():
    gen = FakeGenerator()
    organs = SyntheticPETCTDataset(1, generator=gen, label="organs")[0]
    assert organs["label"].max() > 1  # the organ map, not the lesion mask
    both = SyntheticPETCTDataset(1, generator=gen, label="both", label_key="lesion", organ_key="organ")[0]
    assert set(both) == {"image", "lesion", "organ", "demographics", "case_id", "seed"}
    torch.testing.assert_close(both["organ"].as_tensor(), organs["label"].as_tensor())
    with pytest.raises(ValueError, match="label="):
        SyntheticPETCTDataset(1, generator=gen, label="tumour")
    with pytest.raises(ValueError, match="keys must differ"):
        SyntheticPETCTDataset(1, generator=gen, label_key="image")


def test_deterministic_per_index_and_seed():
    a = SyntheticPETCTDataset(4, generator=FakeGenerator(), seed=3)
    b = SyntheticPETCTDataset(4, generator=FakeGenerator(), seed=3)
    for i in (3, 0, 2):  # any order
        _assert_items_equal(a[i], b[i])
    _assert_items_equal(a[2], a[2])
    c = SyntheticPETCTDataset(4, generator=FakeGenerator(), seed=4)
    assert c[0]["seed"] == 4 and not torch.equal(c[0]["image"], a[0]["image"])
    # c's case 0 is a's case 1 only in seed; demographics are drawn per dataset seed
    assert c.cases[0].seed == a.cases[1].seed


def test_demographics_sources(tmp_path):
    fixed = [Demographics(30, "F", 160, 55, "LYMPHOMA"), Demographics(75, "M", None, 80)]
    ds = SyntheticPETCTDataset(generator=FakeGenerator(), demographics=fixed)
    assert len(ds) == 2
    assert demographics_from_item(ds[1]["demographics"]) == fixed[1]
    item = ds[1]["demographics"]
    assert math.isnan(item["height_cm"]) and item["diagnosis"] == ""  # collate-friendly unknowns
    csv = tmp_path / "demographics.csv"
    write_demographics_csv(csv, {"a": fixed[0], "b": fixed[1]})
    like = SyntheticPETCTDataset(20, generator=FakeGenerator(), like=csv, seed=1)
    assert {c.demographics.sex for c in like.cases} <= {"F", "M"}
    assert all(c.demographics.diagnosis in ("LYMPHOMA", None) for c in like.cases)
    pop = SyntheticPETCTDataset(3, generator=FakeGenerator(), seed=1)
    assert all(c.demographics.is_complete for c in pop.cases)
    with pytest.raises(ValueError, match="n "):
        SyntheticPETCTDataset(generator=FakeGenerator())
    assert demographics_from_item(demographics_item(None)) is None


def test_cache_and_on_the_fly_give_the_same_items(cache):
    cached = SyntheticPETCTDataset.from_cache(cache)
    fly = SyntheticPETCTDataset(4, generator=FakeGenerator(), seed=10)
    assert len(cached) == 4 and [c.case_id for c in cached.cases] == [c.case_id for c in fly.cases]
    for i in range(4):
        _assert_items_equal(cached[i], fly[i])
    assert len(SyntheticPETCTDataset.from_cache(cache, n=2)) == 2
    with pytest.raises(ValueError, match="holds 4 cases"):
        SyntheticPETCTDataset.from_cache(cache, n=5)
    with pytest.raises(ValueError, match="excludes"):
        SyntheticPETCTDataset(source=cache, generator=FakeGenerator())


def test_metadata_and_affine_survive_spacing_and_orientation():
    from monai.transforms import Compose, CropForegroundd, Orientationd, RandCropByPosNegLabeld, Spacingd

    ds = SyntheticPETCTDataset(1, generator=FakeGenerator(), seed=0)
    item = ds[0]
    keys = ["image", "label"]
    out = Compose([
        Spacingd(keys, pixdim=(16.0, 16.0, 16.0), mode=("bilinear", "nearest")),
        Orientationd(keys, axcodes="LPS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ])(item)
    img, lab = out["image"], out["label"]
    assert img.shape == (2, 4, 4, 8) and lab.shape == (1, 4, 4, 8)
    aff = img.affine.numpy()
    np.testing.assert_allclose(np.abs(np.diag(aff)[:3]), [16.0, 16.0, 16.0])
    assert aff[0, 0] < 0 and aff[1, 1] < 0 and aff[2, 2] > 0  # LPS
    torch.testing.assert_close(lab.affine, img.affine)
    assert img.meta["filename_or_obj"] == "synth_00000" and img.meta["source"] == "synthetic"
    # the world position of the body's top (Z, feet to head) is unchanged by the resampling
    def top_mm(t: MetaTensor) -> float:
        zs = np.nonzero((t[0].numpy() > -500).any(axis=(0, 1)))[0]
        return float((t.affine.numpy() @ [0, 0, zs.max(), 1])[2])
    assert abs(top_mm(img) - top_mm(item["image"])) <= 16.0
    # foreground crop and label-balanced patches work on the items
    crops = Compose([CropForegroundd(keys, source_key="label"),
                     RandCropByPosNegLabeld(keys, "label", spatial_size=(4, 4, 4), num_samples=2)])(item)
    assert len(crops) == 2 and crops[0]["image"].shape == (2, 4, 4, 4) and crops[0]["case_id"] == "synth_00000"


def _count_factory(counter: list) -> FakeGenerator:
    counter.append(1)
    return FakeGenerator()


def test_dataloader_workers_build_the_generator_lazily_and_agree():
    from monai.data import DataLoader

    made: list = []
    ds = SyntheticPETCTDataset(6, generator=functools.partial(_count_factory, made), seed=2)
    runs = []
    for _ in range(2):
        loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
        runs.append([b for b in loader])
    assert made == []  # built in the workers only, never in this process
    ids = [cid for b in runs[0] for cid in b["case_id"]]
    assert ids == [f"synth_{i:05d}" for i in range(6)]  # distinct cases, in order, whichever worker
    for b0, b1 in zip(*runs):
        torch.testing.assert_close(b0["image"].as_tensor(), b1["image"].as_tensor(), rtol=0, atol=0)
    direct = ds[3]  # the main process builds its own generator now
    assert made == [1]
    torch.testing.assert_close(runs[0][1]["image"][1].as_tensor(), direct["image"].as_tensor(), rtol=0, atol=0)
    assert runs[0][0]["demographics"]["age"].shape == (2,)  # demographics collate


def test_real_cohort_dataset_matches_the_structure(tmp_path, cache):
    real = tmp_path / "real"
    cases = FakeGenerator().sample([Demographics(50, "F", 165, 70)] * 2, seed=[100, 101])
    for i, case in enumerate(cases):
        case.meta = {"source": "real"}
        write_case(real, f"patient_{i}", case)
    write_demographics_csv(real / "demographics.csv", {f"patient_{i}": c.demographics for i, c in enumerate(cases)})
    ds = PETCTCohortDataset(real)
    item = ds[1]
    synth = SyntheticPETCTDataset.from_cache(cache)[0]
    assert set(item) == set(synth) and item["seed"] == -1 and item["case_id"] == "patient_1"
    assert item["image"].shape == (2, 8, 8, 16)
    np.testing.assert_array_equal(item["label"][0].numpy(), cases[1].lesions)
    assert demographics_from_item(item["demographics"]) == cases[1].demographics
    assert len(PETCTCohortDataset(cache)) == 4  # a cache reads the same way


def test_phantom_on_the_fly_equals_its_cache(tmp_path):
    pytest.importorskip("synthaug.phantom.body")
    from synthaug.core.grid import Grid
    from synthaug.sampling.generator import PhantomGenerator

    gen = PhantomGenerator("demo", grid=Grid((16, 16, 32), (32.0, 32.0, 32.0)))
    root = tmp_path / "cache"
    generate_cache(root, gen, plan_cases(2, seed=3), fmt="npy", progress=False)
    merge_manifest(root)
    fly = SyntheticPETCTDataset(2, generator=gen, seed=3, label="both")
    cached = SyntheticPETCTDataset.from_cache(root, label="both")
    for i in range(2):
        _assert_items_equal(fly[i], cached[i])
    assert fly[1]["image"].meta["source"] == "phantom"
