"""Label calibration: hardened label channels, exact counts from reduced samples, fitted offsets,
and the offsets' place in stage configs and the sampler."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_stage_config, write_tiny_cohort

import synthaug
from synthaug import cli
from synthaug.core.checkpoint import CheckpointError
from synthaug.core.demographics import Demographics
from synthaug.core.labels import NUM_ORGAN_CLASSES
from synthaug.model.channels import (
    CT_CHANNEL,
    LABEL_BIAS_SIZE,
    LESION_CHANNEL,
    NUM_CHANNELS,
    ORGAN_CHANNELS,
    PET_CHANNEL,
    Calibration,
    calibrate_intensities,
    channel_to_ct,
    channel_to_pet,
    ct_to_channel,
    decode,
    harden_labels,
    spread_organ_levels,
)
from synthaug.model.stages import STAGE_FORMAT_VERSION, StageConfig, build_stage_model, load_stage, save_stage
from synthaug.sampling import calibration
from synthaug.sampling.calibration import (
    CASES_PER_FEATURE,
    CLASS_NAMES,
    HU_LOW,
    MIN_SPREAD_CASES,
    ORIGIN_FILE,
    class_intensities,
    compact,
    demographic_features,
    expected_means,
    fit_intensities,
    fit_label_bias,
    fit_level_spread,
    histogram_medians,
    hu_histograms,
    load_compact,
    mean_counts,
    merge,
    save_compact,
    training_cohort_stats,
    training_stats,
)
from synthaug.sampling.cascade import CascadedSampler


def _soft(seed: int, shape=(6, 7, 8)) -> np.ndarray:
    """Generated-looking channels: a random organ map as +-1 channels, blurred by noise, and a low lesion channel."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.5, (NUM_CHANNELS, *shape))
    organs = rng.integers(0, NUM_ORGAN_CLASSES, shape)
    for c in range(NUM_ORGAN_CLASSES):
        x[2 + c] += np.where(organs == c, 0.8, -0.8)
    x[LESION_CHANNEL] = rng.normal(-0.5, 0.4, shape)
    return x


def _counts(x: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Voxels per organ class and lesion, counted on the hardened channels the sampler returns."""
    arrays = decode(harden_labels(torch.from_numpy(x)[None], bias)[0])
    return np.append(np.bincount(arrays["organs"].ravel(), minlength=NUM_ORGAN_CLASSES), arrays["lesions"].sum())


def test_harden_labels_sets_exact_labels_after_the_offsets():
    x = torch.from_numpy(_soft(0))[None]
    bias = np.linspace(-0.3, 0.3, LABEL_BIAS_SIZE)
    hard = harden_labels(x, bias)
    labels = hard[:, 2:].unique()
    assert set(labels.tolist()) == {-1.0, 1.0} and (hard[0, ORGAN_CHANNELS] > 0).sum(0).eq(1).all()
    expected = (x[0, ORGAN_CHANNELS] + torch.as_tensor(bias[:NUM_ORGAN_CLASSES]).view(-1, 1, 1, 1)).argmax(0)
    assert torch.equal(hard[0, ORGAN_CHANNELS].argmax(0), expected)
    assert torch.equal(hard[0, LESION_CHANNEL] > 0, x[0, LESION_CHANNEL] + bias[-1] > 0)
    assert torch.equal(hard[:, [CT_CHANNEL, PET_CHANNEL]], x[:, [CT_CHANNEL, PET_CHANNEL]])
    assert not torch.equal(harden_labels(x)[0, ORGAN_CHANNELS].argmax(0), expected)  # the offsets do move borders
    assert torch.equal(harden_labels(x)[0, ORGAN_CHANNELS].argmax(0), x[0, ORGAN_CHANNELS].argmax(0))


@pytest.mark.parametrize("bias", [[0.1] * 3, [0.0] * (LABEL_BIAS_SIZE - 1) + [float("nan")]])
def test_bad_label_bias_is_refused(bias):
    with pytest.raises(ValueError, match="label_bias needs 13 finite offsets"):
        harden_labels(torch.zeros(1, NUM_CHANNELS, 2, 2, 2), bias)
    with pytest.raises(ValueError, match="label_bias needs"):
        Calibration(label_bias=tuple(bias))


def test_reduced_samples_count_exactly_as_the_full_ones(tmp_path):
    samples = [_soft(s) for s in range(3)]
    data = merge(compact(x, 0.4) for x in samples)
    assert data.cases == 3 and len(data.free) < 3 * samples[0][0].size  # something was reduced away
    save_compact(tmp_path / "a.npz", data)
    data = load_compact(tmp_path / "a.npz")
    rng = np.random.default_rng(1)
    for bias in [np.zeros(LABEL_BIAS_SIZE), *rng.uniform(-0.4, 0.4, (5, LABEL_BIAS_SIZE))]:
        expected = np.mean([_counts(x, bias) for x in samples], axis=0)
        np.testing.assert_array_equal(mean_counts(data, bias), expected)
        hu, suv = class_intensities(data, bias)
        full = [decode(harden_labels(torch.from_numpy(x)[None], bias)[0]) for x in samples]
        organs = np.concatenate([a["organs"].ravel() for a in full])
        pet = np.concatenate([a["pet"].ravel() for a in full]).astype(np.float64)
        expected = np.bincount(organs, weights=pet, minlength=NUM_ORGAN_CLASSES) / np.bincount(organs, minlength=NUM_ORGAN_CLASSES)
        np.testing.assert_allclose(suv, expected, rtol=1e-5, atol=1e-3)
        ct = np.rint(np.concatenate([a["ct"].ravel() for a in full]).astype(np.float64))
        lower_medians = [np.sort(ct[organs == c])[(np.sum(organs == c) + 1) // 2 - 1] for c in range(NUM_ORGAN_CLASSES)]
        np.testing.assert_array_equal(hu, lower_medians)
    with pytest.raises(ValueError, match="different max_abs"):
        merge([compact(samples[0], 0.4), compact(samples[1], 0.5)])


def test_fit_restores_the_volumes_of_lowered_channels():
    """Samples whose class-3 channel came out 0.4 too low and class-5 0.3 too high: the fit
    brings every class back to the counts of the unshifted samples."""
    truth = [_soft(s, (10, 10, 10)) for s in range(4)]
    target = np.mean([_counts(x, np.zeros(LABEL_BIAS_SIZE)) for x in truth], axis=0)
    shifted = [x.copy() for x in truth]
    for x in shifted:
        x[2 + 3] -= 0.4
        x[2 + 5] += 0.3
    data = merge(compact(x, 0.5) for x in shifted)
    before = mean_counts(data, np.zeros(LABEL_BIAS_SIZE))
    assert before[3] < 0.85 * target[3] and before[5] > 1.1 * target[5]
    bias, after = fit_label_bias(data, target)
    organs = slice(1, NUM_ORGAN_CLASSES)
    assert np.all(np.abs(after[organs] / target[organs] - 1) < 0.02), (after, target)
    assert bias[3] - np.median(bias[organs]) > 0.25 and bias[5] - np.median(bias[organs]) < -0.15
    assert bias[0] == 0 and bias[-1] == 0 and np.all(np.abs(bias) <= 0.5)
    les_target = target.copy()
    les_target[-1] = 2 * target[-1] + 10
    bias, after = fit_label_bias(data, les_target, fit_lesion=True)
    assert bias[-1] > 0 and abs(after[-1] / les_target[-1] - 1) < 0.05


def test_an_unreachable_lesion_target_does_not_stop_the_organ_fit():
    """A lesion channel far below 0 (no offset within max_abs makes a lesion) with --fit-lesion:
    the organ offsets still converge, and the lesion's goes to the bound."""
    truth = [_soft(s, (10, 10, 10)) for s in range(4)]
    target = np.mean([_counts(x, np.zeros(LABEL_BIAS_SIZE)) for x in truth], axis=0)
    target[-1] = 5.0
    shifted = [x.copy() for x in truth]
    for x in shifted:
        x[2 + 3] -= 0.4
        x[LESION_CHANNEL] = -3.0
    data = merge(compact(x, 0.5) for x in shifted)
    bias, after = fit_label_bias(data, target, fit_lesion=True)
    organs = slice(1, NUM_ORGAN_CLASSES)
    assert np.all(np.abs(after[organs] / target[organs] - 1) < 0.02), (after, target)
    assert after[-1] == 0 and bias[-1] == pytest.approx(0.5)


def test_intensity_fit_restores_organ_means_within_its_limits():
    """Class 3 drawn 12 % too low in SUV and 20 HU too bright, class 5 200 HU too dark (beyond
    the limit): the fit gives back class 3 exactly and moves class 5 by the limit only; the
    background and a class absent from the samples stay as they are."""
    target_hu, target_suv = np.linspace(-100, 100, NUM_ORGAN_CLASSES), np.linspace(0.5, 6.0, NUM_ORGAN_CLASSES)
    hu, suv = target_hu.copy(), target_suv.copy()
    hu[0] += 30
    suv[3] *= 0.88
    hu[3] += 20
    hu[5] -= 200
    hu[7], suv[7] = np.nan, np.nan
    shift, gain = fit_intensities(hu, suv, target_hu, target_suv)
    assert gain[3] == pytest.approx(1 / 0.88) and shift[3] == pytest.approx(-20)
    assert shift[5] == pytest.approx(150.0)
    assert shift[0] == 0 and gain[0] == 1 and shift[7] == 0 and gain[7] == 1
    others = [c for c in range(1, NUM_ORGAN_CLASSES) if c not in (3, 5, 7)]
    np.testing.assert_allclose(shift[others], 0, atol=1e-9)
    np.testing.assert_allclose(gain[others], 1)


def test_calibrate_intensities_moves_each_organ_by_its_own_shift_and_gain():
    x = harden_labels(torch.from_numpy(_soft(2))[None])
    organs = x[0, ORGAN_CHANNELS].argmax(0)
    shift = np.linspace(-50, 50, NUM_ORGAN_CLASSES)
    gain = np.linspace(0.8, 1.2, NUM_ORGAN_CLASSES)
    out = calibrate_intensities(x, shift, gain)
    torch.testing.assert_close(channel_to_ct(out[0, CT_CHANNEL]), channel_to_ct(x[0, CT_CHANNEL]) + torch.from_numpy(shift)[organs])
    torch.testing.assert_close(channel_to_pet(out[0, PET_CHANNEL]), channel_to_pet(x[0, PET_CHANNEL]) * torch.from_numpy(gain)[organs])
    torch.testing.assert_close(out[:, 2:], x[:, 2:])
    assert calibrate_intensities(x) is x
    y = x.clone()
    assert calibrate_intensities(y, shift, gain, inplace=True) is y
    torch.testing.assert_close(y, out)


def _hardened_cases(levels: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Hardened channels of len(levels) cases: a random organ map, each class at its case's HU
    level from ``levels`` (cases, NUM_ORGAN_CLASSES) plus a 10-HU texture."""
    rng = np.random.default_rng(seed)
    out = []
    for case_levels in levels:
        organs = rng.integers(0, NUM_ORGAN_CLASSES, (8, 9, 10))
        hu = case_levels[organs] + rng.normal(0, 10, organs.shape)
        x = _soft(seed, organs.shape)
        x[CT_CHANNEL] = ct_to_channel(hu)
        x[2:2 + NUM_ORGAN_CLASSES] = np.where(organs == np.arange(NUM_ORGAN_CLASSES)[:, None, None, None], 1.0, -1.0)
        out.append(x)
    return torch.from_numpy(np.stack(out))


def _class_medians(x: torch.Tensor) -> np.ndarray:
    organs = x[:, ORGAN_CHANNELS].argmax(1)
    hu = channel_to_ct(x[:, CT_CHANNEL])
    return np.array([[float(hu[b][organs[b] == c].median()) for c in range(NUM_ORGAN_CLASSES)]
                     for b in range(x.shape[0])])


def test_spread_organ_levels_narrows_each_case_towards_the_centre_and_keeps_the_texture():
    """Two cases whose liver-like class 7 sits at 70 and 30 HU around a centre of 50: scale
    0.25 takes them to 55 and 45, each voxel moved alike; classes at scale 1 stay as they are."""
    levels = np.tile(np.linspace(-100, 200, NUM_ORGAN_CLASSES), (2, 1))
    levels[:, 7] = [70.0, 30.0]
    x = _hardened_cases(levels)
    centre, scale = np.zeros(NUM_ORGAN_CLASSES), np.ones(NUM_ORGAN_CLASSES)
    centre[7], scale[7] = 50.0, 0.25
    before, out = _class_medians(x), spread_organ_levels(x, centre, scale)
    after = _class_medians(out)
    np.testing.assert_allclose(after[:, 7], 50 + 0.25 * (before[:, 7] - 50), atol=1e-3)
    others = [c for c in range(NUM_ORGAN_CLASSES) if c != 7]
    np.testing.assert_allclose(after[:, others], before[:, others], atol=1e-3)
    moved = channel_to_ct(out[:, CT_CHANNEL]) - channel_to_ct(x[:, CT_CHANNEL])
    organs = x[:, ORGAN_CHANNELS].argmax(1)
    for b in range(2):  # one shift per case and class: the texture is kept
        assert float(moved[b][organs[b] == 7].std()) < 1e-3
    torch.testing.assert_close(out[:, 1:], x[:, 1:])
    assert spread_organ_levels(x) is x and spread_organ_levels(x, centre, np.ones(NUM_ORGAN_CLASSES)) is x
    y = x.clone()
    assert spread_organ_levels(y, centre, scale, inplace=True) is y
    torch.testing.assert_close(y, out)


def test_level_spread_fit_matches_the_training_spread_and_leaves_what_it_cannot_judge():
    rng = np.random.default_rng(0)
    n = 200
    training = rng.normal(np.linspace(-100, 100, NUM_ORGAN_CLASSES), 3.0, (n, NUM_ORGAN_CLASSES))
    samples = rng.normal(np.linspace(-100, 100, NUM_ORGAN_CLASSES), 3.0, (60, NUM_ORGAN_CLASSES))
    samples[:, 4] = rng.normal(40, 12.0, 60)  # four times the cohort's spread
    training[:, 6] = rng.normal(0, 20.0, n)  # the cohort spreads more than the samples: nothing to narrow
    samples[MIN_SPREAD_CASES - 1:, 9] = np.nan  # a class too few samples have
    training[:, 10] = np.nan  # and one the cohort lacks
    centre, scale = fit_level_spread(samples, training)
    assert scale[4] == pytest.approx(training[:, 4].std() / samples[:, 4].std()) and 0.2 < scale[4] < 0.3
    assert centre[4] == pytest.approx(np.median(training[:, 4]))
    assert scale[0] == 1 and scale[6] == 1 and scale[9] == 1 and scale[10] == 1
    assert np.all(scale <= 1) and np.all(np.isfinite(centre))
    narrowed = centre[4] + scale[4] * (samples[:, 4] - centre[4])
    assert narrowed.std() == pytest.approx(training[:, 4].std())


@pytest.mark.parametrize(("level", "scale", "match"), [
    ([0.0] * NUM_ORGAN_CLASSES, [], "ct_level and ct_level_scale need 12"),
    ([0.0] * 3, [1.0] * 3, "need 12 values each"),
    ([0.0] * (NUM_ORGAN_CLASSES - 1) + [float("nan")], [1.0] * NUM_ORGAN_CLASSES, "ct_level must be finite"),
    ([0.0] * NUM_ORGAN_CLASSES, [1.0] * (NUM_ORGAN_CLASSES - 1) + [1.5], "ct_level_scale must be within"),
    ("12", "12", "ct_level and ct_level_scale need 12"),
    (["a"], [1.0], "ct_level must be a list of numbers"),
])
def test_bad_level_spread_is_refused(level, scale, match):
    with pytest.raises(ValueError, match=match):
        Calibration(ct_level=level, ct_level_scale=scale)


def test_weights_with_a_bad_level_spread_are_refused_on_load(tmp_path):
    cfg = tiny_stage_config("global")
    save_stage(tmp_path / "global", build_stage_model(cfg), cfg)
    raw = json.loads((tmp_path / "global.json").read_text())
    raw["ct_level"], raw["ct_level_scale"] = [0.0] * NUM_ORGAN_CLASSES, [2.0] * NUM_ORGAN_CLASSES
    (tmp_path / "global.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="ct_level_scale must be within"):
        load_stage(tmp_path / "global")


@pytest.mark.parametrize(("field", "values", "match"), [
    ("pet_gain", [1.0] * 3, "pet_gain needs 12"),
    ("pet_gain", [1.0] * (NUM_ORGAN_CLASSES - 1) + [2.0], "pet_gain needs 12 values .* within"),
    ("ct_shift", [0.0] * (NUM_ORGAN_CLASSES - 1) + [float("nan")], "ct_shift needs 12"),
    ("ct_shift", "12", "ct_shift needs 12"),
])
def test_bad_intensity_calibration_is_refused(field, values, match):
    with pytest.raises(ValueError, match=match):
        Calibration(**{field: tuple(values)})


def test_intensity_calibration_round_trips_and_old_configs_have_none():
    cfg = replace(tiny_stage_config("sr"), calibration=Calibration(
        ct_shift=tuple(np.linspace(-20, 20, NUM_ORGAN_CLASSES)), pet_gain=tuple(np.linspace(0.9, 1.1, NUM_ORGAN_CLASSES)),
        ct_level=tuple(np.linspace(-90, 90, NUM_ORGAN_CLASSES)),
        ct_level_scale=tuple(np.linspace(0.2, 1.0, NUM_ORGAN_CLASSES))))
    assert StageConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["ct_shift"], old["pet_gain"], old["ct_level"], old["ct_level_scale"]
    assert StageConfig.from_dict(old).calibration == Calibration()


@pytest.mark.parametrize("kept", [(), ("free_values",)])
def test_samples_reduced_before_intensities_were_kept_are_refused(tmp_path, kept):
    data = compact(_soft(0), 0.5)
    np.savez(tmp_path / "old.npz", fixed=data.fixed, free=data.free, lesion=data.lesion,
             scalars=np.array([data.lesion_fixed, data.cases, data.max_abs], dtype=np.float64),
             **{k: getattr(data, k) for k in kept})
    with pytest.raises(ValueError, match="reduced without the CT and PET the intensity fit needs"):
        load_compact(tmp_path / "old.npz")


def test_histogram_medians_are_the_lower_medians_and_clip_to_the_range():
    classes = np.array([1, 1, 1, 1, 2, 2, 2, 3, 3])
    hu = np.array([-100.0, 40.2, 39.7, 41.0, 5000.0, 5000.0, -3000.0, 10.0, 30.0])
    med = histogram_medians(hu_histograms(classes, hu))
    assert med[1] == 40 and med[2] == HU_LOW + 4095 and med[3] == 10
    assert np.isnan(med[0]) and np.isnan(med[4])  # no voxels


def test_the_ct_shift_matches_the_median_so_a_label_past_its_border_does_not_move_the_organ():
    """An organ generated at its training level (40 HU) whose label takes in a rim of fat
    (-100 HU): the median fit leaves it where it is, a mean fit would shift it by 28 HU."""
    classes = np.full(100, 10)
    hu = np.where(np.arange(100) < 80, 40.0, -100.0)
    median = histogram_medians(hu_histograms(classes, hu))
    suv = np.ones(NUM_ORGAN_CLASSES)
    target = np.full(NUM_ORGAN_CLASSES, 40.0)
    shift, _ = fit_intensities(median, suv, target, suv)
    assert shift[10] == 0 and hu.mean() == 12.0
    shift, _ = fit_intensities(median - 5, suv, target, suv)
    assert shift[10] == 5


def test_fit_refuses_a_target_of_the_wrong_size():
    with pytest.raises(ValueError, match="target needs 13"):
        fit_label_bias(compact(_soft(0), 0.5), np.ones(12))


def test_label_bias_round_trips_and_old_configs_have_none(tmp_path):
    cfg = replace(tiny_stage_config("global"), calibration=Calibration(label_bias=tuple(np.linspace(-0.2, 0.2, LABEL_BIAS_SIZE))))
    assert StageConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["label_bias"]
    assert StageConfig.from_dict(old).calibration.label_bias == ()
    save_stage(tmp_path / "global", build_stage_model(cfg), cfg)
    raw = json.loads((tmp_path / "global.json").read_text())
    raw["label_bias"] = [0.1, 0.2]
    (tmp_path / "global.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="label_bias needs 13"):
        load_stage(tmp_path / "global")
    raw["label_bias"] = "0.1"
    (tmp_path / "global.json").write_text(json.dumps(raw))
    with pytest.raises((ValueError, CheckpointError), match="label_bias"):
        load_stage(tmp_path / "global")


def test_sampler_returns_hardened_labels_decided_with_the_stage_offsets(tmp_path):
    cfg = tiny_stage_config("global")
    model = build_stage_model(cfg)
    demo = Demographics(age=50, sex="F", height_cm=170, weight_kg=70)
    sampler = CascadedSampler(model, cfg).configure(steps=3)
    soft = sampler.sample_global([demo], [0], soft_labels=True)
    hard = sampler.sample_global([demo], [0])
    assert set(hard[:, 2:].unique().tolist()) == {-1.0, 1.0} and len(soft[:, 2:].unique()) > 2
    assert torch.equal(hard, harden_labels(soft))
    favour = np.zeros(LABEL_BIAS_SIZE)
    favour[7] = 100.0  # every voxel becomes class 7
    biased = CascadedSampler(model, replace(cfg, calibration=Calibration(label_bias=tuple(favour)))).configure(steps=3)
    case = biased.sample(demo, seed=0)[0]
    assert np.all(case.organs == 7)
    np.testing.assert_array_equal(case.ct, sampler.sample(demo, seed=0)[0].ct)
    shift, gain = np.zeros(NUM_ORGAN_CLASSES), np.ones(NUM_ORGAN_CLASSES)
    shift[7], gain[7] = 40.0, 1.25
    calibrated = CascadedSampler(model, replace(cfg, calibration=Calibration(
        label_bias=tuple(favour), ct_shift=tuple(shift), pet_gain=tuple(gain)))).configure(steps=3).sample(demo, seed=0)[0]
    np.testing.assert_allclose(calibrated.ct, case.ct + 40.0, atol=1e-3)
    np.testing.assert_allclose(calibrated.pet, case.pet * 1.25, rtol=1e-5, atol=1e-5)
    centre, scale = np.zeros(NUM_ORGAN_CLASSES), np.ones(NUM_ORGAN_CLASSES)
    centre[7], scale[7] = 35.0, 0.0  # the whole body (class 7) pulled onto 35 HU, after the shift
    pulled = CascadedSampler(model, replace(cfg, calibration=Calibration(
        label_bias=tuple(favour), ct_shift=tuple(shift), pet_gain=tuple(gain), ct_level=tuple(centre),
        ct_level_scale=tuple(scale))))
    pulled_case = pulled.configure(steps=3).sample(demo, seed=0)[0]
    assert np.median(pulled_case.ct) == pytest.approx(35.0, abs=1.0)
    np.testing.assert_allclose(pulled_case.ct - calibrated.ct, 35.0 - np.median(calibrated.ct), atol=1.0)


# --- synthaug calibrate -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny random weights (both stages) and a 3-case tiny training cohort."""
    root = tmp_path_factory.mktemp("calib")
    for stage in ("global", "sr"):
        cfg = tiny_stage_config(stage)
        save_stage(root / "weights" / stage, build_stage_model(cfg), replace(cfg, diffusion=replace(cfg.diffusion, steps=2)))
    write_tiny_cohort(root / "cohort", heights=(150.0, 180.0, 200.0))
    return root


def _calibrate(capsys, tiny, work, *args: str) -> tuple[int, str, str]:
    code = cli.main(["calibrate", "--weights", str(tiny / "weights"), "--data", str(tiny / "cohort"),
                     "--work", str(work), "--no-progress", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_calibrate_cli_fits_both_stages_and_writes_loadable_configs(tiny, tmp_path, capsys):
    before = json.loads((tiny / "weights" / "global.json").read_text())
    for shard in ("0/2", "1/2"):  # sharded sampling, then the fit
        code, out, _ = _calibrate(capsys, tiny, tmp_path / "g", "--stage", "global", "--cases", "3", "--shard", shard)
        assert code == 0 and "without --shard to fit" in out
    assert sorted(p.name for p in (tmp_path / "g").glob("?????.npz")) == ["00000.npz", "00001.npz", "00002.npz"]
    assert sorted(p.name for p in (tmp_path / "g").glob("*_map.npz")) == ["00000_map.npz", "00001_map.npz", "00002_map.npz"]
    code, out, _ = _calibrate(capsys, tiny, tmp_path / "g", "--stage", "global", "--cases", "3", "--write")
    assert code == 0 and "wrote the calibration" in out and "aorta" in out and "SUV train" in out
    after = json.loads((tiny / "weights" / "global.json").read_text())
    assert len(after["label_bias"]) == LABEL_BIAS_SIZE and after["label_calibration"]["cases"] == 3
    assert len(after["ct_shift"]) == len(after["pet_gain"]) == NUM_ORGAN_CLASSES
    assert after["intensity_calibration"]["target_cases"] == 3  # intensity targets: the whole cohort by default
    assert after["label_calibration"]["volume_cases"] == 3  # and so are the volume targets
    suv = after["intensity_calibration"]["mean_suv"]
    checked = [name for name, row in suv.items()
               if name != "background" and row["generated"] is not None and row["training"] is not None]
    assert checked  # classes both the samples and the cases have
    for name in checked:
        gain = after["pet_gain"][CLASS_NAMES.index(name)]  # the JSON's keys are sorted
        assert suv[name]["calibrated"] == pytest.approx(suv[name]["generated"] * gain, rel=1e-3, abs=1e-3)
    assert after["sha256"] == before["sha256"]  # the weights are untouched
    assert after["ct_level_scale"] == [1.0] * NUM_ORGAN_CLASSES  # 3 cases are too few to judge a spread
    assert len(after["ct_level"]) == NUM_ORGAN_CLASSES and "per-case median HU" in out
    assert set(after["level_spread"]) == set(CLASS_NAMES[:NUM_ORGAN_CLASSES])
    rows = after["label_calibration"]["mean_voxels"]
    fitted = [n for n in rows if n not in ("background", "lesion")]
    err = lambda key: np.mean([abs(np.log((rows[n][key] + 1) / (rows[n]["training"] + 1))) for n in fitted])  # noqa: E731
    assert err("calibrated") < err("uncalibrated")
    by_sex = after["label_calibration"]["by_sex"]  # cases 0, 2 are women, 1 a man
    assert {s: t["cases"] for s, t in by_sex.items()} == {"F": 2, "M": 1}
    assert "calibrated vs training, % per sex" in out
    for name, row in rows.items():  # the sexes' means make up the pooled one, on both sides of the fit
        for key in ("training", "calibrated", "uncalibrated"):
            pooled = (2 * by_sex["F"]["mean_voxels"][name][key] + by_sex["M"]["mean_voxels"][name][key]) / 3
            assert pooled == pytest.approx(row[key], rel=1e-3, abs=0.1), (name, key)
    code, out, _ = _calibrate(capsys, tiny, tmp_path / "s", "--stage", "sr", "--cases", "2", "--write", "--no-intensities")
    sr = json.loads((tiny / "weights" / "sr.json").read_text())
    assert code == 0 and len(sr["label_bias"]) == LABEL_BIAS_SIZE and "SUV train" not in out
    assert sr["ct_shift"] == [] and sr["pet_gain"] == [] and "intensity_calibration" not in sr
    assert sr["ct_level"] == [] and sr["ct_level_scale"] == [] and "per-case median HU" not in out
    sampler = CascadedSampler.from_pretrained(tiny / "weights")
    assert sampler.global_config.calibration.label_bias == tuple(after["label_bias"])
    assert sampler.global_config.calibration.pet_gain == tuple(after["pet_gain"])


def test_calibrate_spread_only_keeps_the_rest_of_the_calibration(tiny, tmp_path, capsys, monkeypatch):
    """``--spread-only`` on a calibrated stage: its offsets, shift and gain stay; the scales it
    writes are the training cases' spread over the samples', at most 1 (three cases are let
    count here, to judge a spread on the tiny cohort), and the weights load with them."""
    import shutil

    root = tmp_path / "root"
    shutil.copytree(tiny / "weights", root / "weights")
    (root / "cohort").symlink_to(tiny / "cohort")
    code, _, _ = _calibrate(capsys, root, tmp_path / "g", "--stage", "global", "--cases", "3", "--write")
    before = json.loads((root / "weights" / "global.json").read_text())
    monkeypatch.setattr(calibration, "MIN_SPREAD_CASES", 3)
    code, out, _ = _calibrate(capsys, root, tmp_path / "g", "--stage", "global", "--cases", "3", "--write",
                              "--spread-only")
    after = json.loads((root / "weights" / "global.json").read_text())
    assert code == 0 and "per-case median HU" in out and "SUV train" not in out and "mean voxels" not in out
    assert {k for k in after if after[k] != before.get(k)} <= {"ct_level", "ct_level_scale", "level_spread"}
    assert after["label_calibration"] == before["label_calibration"]
    judged = 0
    for c, name in enumerate(CLASS_NAMES[1:NUM_ORGAN_CLASSES], start=1):
        row, scale = after["level_spread"][name], after["ct_level_scale"][c]
        if row["training_sd"] is not None and row["generated_sd"]:
            judged += 1
            assert scale == pytest.approx(min(1.0, row["training_sd"] / row["generated_sd"]), abs=0.06), name
    assert judged  # at least one class both the samples and the cohort have in every case
    assert CascadedSampler.from_pretrained(root / "weights").global_config.calibration.ct_level_scale == tuple(after["ct_level_scale"])
    code, _, err = _calibrate(capsys, root, tmp_path / "g", "--stage", "global", "--cases", "3", "--spread-only",
                              "--no-intensities")
    assert code != 0 and "spread_only" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "match"), [
    (["--stage", "global", "--cases", "9"], "cases=9: the training cohort"),
    (["--stage", "global", "--cases", "0"], "cases=0"),
    (["--stage", "global", "--shard", "2/2"], "--shard '2/2'"),
    (["--stage", "global", "--max-abs", "0"], "max_abs=0.0 must be > 0"),
    (["--stage", "global", "--cases", "1", "--intensity-cases", "9"], "intensity_cases=9: the training cohort"),
    (["--stage", "global", "--cases", "1", "--intensity-cases", "0"], "intensity_cases=0"),
    (["--stage", "global", "--cases", "2", "--volume-cases", "1"], "volume_cases=1: must be at least cases=2"),
    (["--stage", "global", "--cases", "1", "--volume-cases", "9"], "volume_cases=9"),
])
def test_calibrate_cli_rejects_bad_input(tiny, tmp_path, capsys, args, match):
    code, _, err = _calibrate(capsys, tiny, tmp_path / "w", *args)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "w").glob("*.npz"))


def test_a_fit_that_would_not_fit_in_memory_is_refused_after_the_first_sample(tiny, tmp_path, capsys, monkeypatch):
    """A large ``max_abs`` leaves most voxels to the fit; the projected need is checked after one sample,
    not after sampling every case (the SR stage at 1.0 ran out of 24 GiB only at the fit)."""
    monkeypatch.setattr(calibration, "available_memory", lambda: 1024)
    code, _, err = _calibrate(capsys, tiny, tmp_path / "w", "--stage", "global", "--cases", "3", "--max-abs", "1.0")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "max_abs=1.0: the fit of 3 cases would need about" in err and "use a smaller max_abs or fewer cases" in err
    assert [p.name for p in (tmp_path / "w").glob("?????.npz")] == ["00000.npz"]  # one sample, kept for a resumed run
    monkeypatch.setattr(calibration, "available_memory", lambda: None)  # a system that does not say: no check
    code, _, _ = _calibrate(capsys, tiny, tmp_path / "w", "--stage", "global", "--cases", "3", "--max-abs", "1.0")
    assert code == 0 and len(list((tmp_path / "w").glob("?????.npz"))) == 3


def test_the_fit_memory_check_scales_with_sample_size_and_cases():
    per_case = 100 * 2**20
    need = calibration.FIT_MEMORY_PER_SAMPLE_BYTE * per_case * 40
    calibration.check_fit_memory(per_case, 40, 0.5, int(need) + 1)  # just enough: passes
    with pytest.raises(ValueError, match=r"max_abs=0.5: the fit of 40 cases would need about .*\(100 MiB of reduced samples per case\)"):
        calibration.check_fit_memory(per_case, 40, 0.5, int(need) - 1)
    with pytest.raises(ValueError, match="80 cases"):
        calibration.check_fit_memory(per_case, 80, 0.5, int(need) + 1)
    assert calibration.available_memory() is None or calibration.available_memory() > 0


def test_calibrate_cli_missing_weights_or_cohort(tmp_path, capsys, tiny):
    code = cli.main(["calibrate", "--weights", str(tmp_path / "none"), "--stage", "global", "--data",
                     str(tiny / "cohort"), "--work", str(tmp_path / "w")])
    assert code == 2 and "weights folder not found" in capsys.readouterr().err
    code = cli.main(["calibrate", "--weights", str(tiny / "weights"), "--stage", "global", "--data",
                     str(tmp_path / "nocohort"), "--work", str(tmp_path / "w")])
    assert code == 2 and "cohort folder not found" in capsys.readouterr().err


def test_calibrate_refuses_samples_reduced_otherwise(tiny, tmp_path, capsys):
    assert _calibrate(capsys, tiny, tmp_path / "g", "--stage", "global", "--cases", "1")[0] == 0
    code, _, err = _calibrate(capsys, tiny, tmp_path / "g", "--stage", "global", "--cases", "1", "--max-abs", "0.3")
    assert code == 2 and "max_abs 0.5, not 0.3" in err and len(err.strip().splitlines()) == 1


def _copy_weights(src: Path, dest: Path, *, retrain: str | None = None, global_bias: float | None = None) -> Path:
    """A copy of the weights in ``src`` (replacing ``dest``) whose ``retrain`` stage network differs by one
    weight, or whose stage 1 has the label offsets ``global_bias``."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)
    if retrain is not None:
        model, cfg, _ = load_stage(dest / retrain)
        with torch.no_grad():
            next(model.parameters()).add_(0.01)
        save_stage(dest / retrain, model, cfg)
    if global_bias is not None:
        raw = json.loads((dest / "global.json").read_text())
        raw["label_bias"] = [global_bias] * LABEL_BIAS_SIZE
        (dest / "global.json").write_text(json.dumps(raw))
    return dest


@pytest.mark.parametrize(("stage", "change", "differs"), [
    ("global", {"retrain": "global"}, "weights_sha256"),
    ("sr", {"retrain": "sr"}, "weights_sha256"),
    ("sr", {"retrain": "global"}, "global_stage"),
    ("sr", {"global_bias": 0.1}, "global_stage"),
])
def test_calibrate_refuses_samples_that_other_weights_made(tiny, tmp_path, capsys, stage, change, differs):
    """A work folder records what made its samples: other weights of the stage (a retrained stage shipped
    into the same weights folder), or for the SR stage another stage 1 or stage-1 calibration under it, are
    refused in one line before any sampling, and nothing in the folder changes."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "cohort").symlink_to(tiny / "cohort")
    _copy_weights(tiny / "weights", root / "weights")
    work = tmp_path / "w"
    assert _calibrate(capsys, root, work, "--stage", stage, "--cases", "1", "--shard", "0/2")[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in work.iterdir()}
    assert set(before) == {ORIGIN_FILE, "00000.npz", "00000_map.npz"}
    _copy_weights(tiny / "weights", root / "weights", **change)
    code, _, err = _calibrate(capsys, root, work, "--stage", stage, "--cases", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "use another work folder" in err
    other = ({"weights_sha256", "global_stage"} - {differs}).pop()
    assert differs in err and other not in err
    assert {p.name: p.stat().st_mtime_ns for p in work.iterdir()} == before  # nothing sampled or written


def test_stage_one_calibration_does_not_make_its_own_samples_stale(tiny, tmp_path, capsys):
    """Stage 1 is sampled uncalibrated for its own fit, so its samples stay valid after the fit is
    written (``--spread-only`` is fitted on them afterwards)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "cohort").symlink_to(tiny / "cohort")
    _copy_weights(tiny / "weights", root / "weights")
    work = tmp_path / "w"
    assert _calibrate(capsys, root, work, "--stage", "global", "--cases", "1", "--shard", "0/2")[0] == 0
    _copy_weights(tiny / "weights", root / "weights", global_bias=0.1)
    assert _calibrate(capsys, root, work, "--stage", "global", "--cases", "1")[0] == 0


def test_calibrate_refuses_samples_of_unknown_origin_and_another_cohort(tiny, tmp_path, capsys):
    work = tmp_path / "w"
    assert _calibrate(capsys, tiny, work, "--stage", "global", "--cases", "1")[0] == 0
    (work / ORIGIN_FILE).unlink()  # samples written before the origin was recorded
    code, _, err = _calibrate(capsys, tiny, work, "--stage", "global", "--cases", "1")
    assert code == 2 and f"no {ORIGIN_FILE}" in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "other"
    write_tiny_cohort(other, heights=(150.0, 181.0, 200.0))
    code = cli.main(["calibrate", "--weights", str(tiny / "weights"), "--data", str(other), "--work",
                     str(tmp_path / "w2"), "--no-progress", "--stage", "global", "--cases", "1"])
    assert code == 0
    capsys.readouterr()
    code, _, err = _calibrate(capsys, tiny, tmp_path / "w2", "--stage", "global", "--cases", "1")
    assert code == 2 and "demographics_sha256" in err


@pytest.mark.parametrize("stage", ["global", "sr"])
def test_training_stats_without_a_cache_match_the_cohort_cache(tiny, tmp_path, stage):
    cfg = load_stage(tiny / "weights" / stage)[1]
    direct = training_stats(tiny / "cohort", 2, cfg)
    cached = training_stats(tiny / "cohort", 2, cfg, tmp_path / "cache")
    assert (tmp_path / "cache").is_dir() and direct[0].shape == (LABEL_BIAS_SIZE,)
    np.testing.assert_allclose(direct[0], cached[0])
    np.testing.assert_allclose(direct[1], cached[1], atol=1.0, equal_nan=True)  # fine-grid caches are float16: 1-HU bins may tip
    np.testing.assert_allclose(direct[2], cached[2], rtol=1e-3, atol=1e-3, equal_nan=True)
    assert direct[0][1:NUM_ORGAN_CLASSES].sum() > 0  # the cases do have organs to count
    present = direct[0][:NUM_ORGAN_CLASSES] > 0
    assert np.all(np.isfinite(direct[1][present])) and np.all(direct[2][present] >= 0)


def test_training_stats_take_intensities_from_their_own_cases(tiny):
    cfg = load_stage(tiny / "weights" / "global")[1]
    one, three = training_stats(tiny / "cohort", 1, cfg), training_stats(tiny / "cohort", 3, cfg)
    mixed = training_stats(tiny / "cohort", 1, cfg, intensity_cases=3)
    np.testing.assert_allclose(mixed[0], one[0])  # volumes: the sampled cases only
    np.testing.assert_allclose(mixed[1], three[1], equal_nan=True)  # intensities: all three
    np.testing.assert_allclose(mixed[2], three[2], equal_nan=True)
    assert not np.allclose(one[2], three[2], equal_nan=True)  # the cases do differ in uptake
    per_case = training_cohort_stats(tiny / "cohort", 1, cfg, intensity_cases=3).case_median_hu
    assert per_case.shape == (3, NUM_ORGAN_CLASSES)
    np.testing.assert_allclose(per_case[0], one[1], equal_nan=True)  # one case: its own median is the pooled one


def _cohort_like(n: int, seed: int = 0):
    """Demographic features of n people and a volume that follows body size plus case-to-case noise."""
    from synthaug.core.demographics import sample_population

    x = demographic_features(sample_population(n, seed))
    truth = x @ np.array([50.0, 30.0, 0.2, 1.5, 2.0])  # intercept, male, age, height, weight
    noise = np.random.default_rng(seed).normal(0.0, 0.5, n) * truth.mean()
    return x, truth, noise


def test_expected_means_over_the_sampled_cases_alone_are_their_plain_mean():
    x, truth, noise = _cohort_like(300)
    values = np.stack([truth + noise, 2 * truth], 1)
    np.testing.assert_allclose(expected_means(values, x, 300), values.mean(0), rtol=1e-9)


def test_expected_means_keep_the_body_size_and_average_out_the_rest():
    x, truth, noise = _cohort_like(300)
    np.testing.assert_allclose(expected_means(truth[:, None], x, 40), [truth[:40].mean()], rtol=1e-9)  # exact law
    errors = []  # over cohorts: target error from the whole cohort's fit vs from the 40 sampled cases alone
    for seed in range(30):
        x, truth, noise = _cohort_like(300, seed)
        expected = truth[:40].mean()
        errors.append((expected_means((truth + noise)[:, None], x, 40)[0] - expected, (truth + noise)[:40].mean() - expected))
    rms_fit, rms_sampled = np.sqrt(np.mean(np.square(errors), 0))
    assert rms_fit < 0.75 * rms_sampled  # about sqrt(40 / 300) = 0.37 expected; 1 if nothing were averaged


def test_expected_means_of_chosen_cases_follow_their_demographics():
    x, truth, noise = _cohort_like(300)
    men = np.flatnonzero(x[:, 1] == 1)[:20]
    np.testing.assert_allclose(expected_means(truth[:, None], x, men), [truth[men].mean()], rtol=1e-9)  # exact law
    np.testing.assert_allclose(expected_means(truth[:, None], x, list(range(40))), expected_means(truth[:, None], x, 40))
    small = (truth + noise)[:30, None]  # too few for a fit: the plain mean of those cases
    np.testing.assert_allclose(expected_means(small, x[:30], [3, 5]), small[[3, 5]].mean(0))


def test_expected_means_fall_back_to_the_plain_mean_with_few_cases():
    x, truth, noise = _cohort_like(CASES_PER_FEATURE * 5 - 1)
    values = (truth + noise)[:, None]
    np.testing.assert_allclose(expected_means(values, x, 3), values[:3].mean(0))


@pytest.mark.parametrize(("shape", "rows"), [((10, 2), 11), ((10, 2), 0), ((9, 2), 3), ((10, 2), []),
                                             ((10, 2), [2, 10]), ((10, 2), [-1])])
def test_expected_means_refuse_bad_shapes(shape, rows):
    with pytest.raises(ValueError, match="rows"):
        expected_means(np.ones(shape), np.ones((10, 3)), rows)


def test_demographic_features_leave_out_fields_missing_anywhere():
    from synthaug.core.demographics import Demographics

    demos = [Demographics(60, "M", 180, 80), Demographics(None, "F", 160, 60)]
    np.testing.assert_allclose(demographic_features(demos), [[1, 1, 180, 80], [1, 0, 160, 60]])


def test_training_stats_volume_cases_must_include_the_sampled_ones(tiny):
    cfg = load_stage(tiny / "weights" / "global")[1]
    with pytest.raises(ValueError, match="volume_cases=1 must include the 2 sampled cases"):
        training_stats(tiny / "cohort", 2, cfg, volume_cases=1)
    # three cases are too few for a fit on four demographic features: the sampled cases' own mean
    np.testing.assert_allclose(training_stats(tiny / "cohort", 1, cfg, volume_cases=3)[0],
                               training_stats(tiny / "cohort", 1, cfg)[0])


def test_stage_configs_of_every_format_load_and_a_newer_one_is_refused():
    """Format 1 (no ``format_version``; fields added later absent) loads with the behaviour it was
    trained with; the current format writes every field; a newer format names the version."""
    cfg = tiny_stage_config("global")
    current = cfg.to_dict()
    assert current["format_version"] == STAGE_FORMAT_VERSION and StageConfig.from_dict(current) == cfg
    old = {k: v for k, v in current.items()
           if k not in ("format_version", "lesion_rule", "organ_rule", "upsample", "label_bias", "ct_shift")}
    loaded = StageConfig.from_dict(old)
    assert (loaded.lesion_rule, loaded.organ_rule, loaded.upsample) == ("majority", "argmax", "trilinear")
    assert loaded.calibration == Calibration() and loaded.net == cfg.net
    with pytest.raises(CheckpointError, match="format_version=99"):
        StageConfig.from_dict({**current, "format_version": 99})


def test_the_shipped_weights_load_through_the_migration_unchanged():
    raw = json.loads((Path(synthaug.__file__).parent / "weights" / "global.json").read_text())
    cfg = StageConfig.from_dict(raw)
    assert cfg.calibration.to_dict() == {k: raw[k] for k in Calibration.KEYS}
    assert cfg.lesion_rule == raw["lesion_rule"] and cfg.organ_rule == raw["organ_rule"]
