"""The label calibration fitted on cleaned organ maps: what the sampler outputs once the label clean-up
(``synthaug.core.labels.clean_organ_map``) has relabelled stray pieces."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_calibration import _calibrate, _soft, tiny  # noqa: F401  (tiny: the module's fixture)

from synthaug.core.labels import NUM_ORGAN_CLASSES, clean_organ_map
from synthaug.model.channels import LABEL_BIAS_SIZE, NUM_CHANNELS, decode, harden_labels
from synthaug.sampling import calibration
from synthaug.sampling.calibration import (
    FREE,
    cleaned_stats,
    compact,
    fit_label_bias,
    fit_label_bias_cleaned,
    hu_histograms,
    label_map,
    load_compact,
    load_label_map,
    map_path,
    mean_counts,
    merge,
    organ_map,
)

SPLEEN = 8


def _with_stray_piece(seed: int) -> np.ndarray:
    """Soft channels of a body of soft tissue holding a spleen and, 40 mm away on a 4 mm grid, a
    two-voxel piece of spleen label: the clean-up relabels the piece."""
    rng = np.random.default_rng(seed)
    x = np.full((NUM_CHANNELS, 12, 12, 24), -1.0)
    x[:2] = rng.normal(0, 0.5, (2, 12, 12, 24))
    organs = np.full((12, 12, 24), 2)
    organs[:, :, :2] = 0
    organs[3:7, 3:7, 3:8] = SPLEEN
    organs[5, 5, 18:20] = SPLEEN  # the stray piece
    for c in range(NUM_ORGAN_CLASSES):
        x[2 + c] = np.where(organs == c, 0.7, -0.7) + rng.normal(0, 0.2, organs.shape)
    return x


def test_label_maps_rebuild_the_organ_map_the_sampler_decides():
    x = _with_stray_piece(0)
    part, labels = compact(x, 0.5), label_map(x, 0.5)
    assert labels.classes.shape == x.shape[1:] and (labels.classes == FREE).sum() == len(part.free)
    rng = np.random.default_rng(1)
    for bias in [np.zeros(LABEL_BIAS_SIZE), *rng.uniform(-0.5, 0.5, (4, LABEL_BIAS_SIZE))]:
        decoded = decode(harden_labels(torch.from_numpy(x)[None], bias)[0])
        np.testing.assert_array_equal(organ_map(part, labels, bias), decoded["organs"])
    np.testing.assert_allclose(labels.suv, decoded["pet"], rtol=1e-6)
    with pytest.raises(ValueError, match="not of the same sample"):
        organ_map(compact(_soft(0, x.shape[1:]), 0.5), labels, np.zeros(LABEL_BIAS_SIZE))
    with pytest.raises(ValueError, match="one sample's, not 2 merged"):
        organ_map(merge([part, part]), labels, np.zeros(LABEL_BIAS_SIZE))


def test_cleaned_stats_measure_the_organ_map_after_the_clean_up(tmp_path):
    x = _with_stray_piece(2)
    part, labels = compact(x, 0.5), label_map(x, 0.5)
    calibration.save_label_map(tmp_path / "m.npz", labels)
    labels = load_label_map(tmp_path / "m.npz")
    bias = np.zeros(LABEL_BIAS_SIZE)
    counts, hist, suv = cleaned_stats(part, labels, bias, (4.0, 4.0, 4.0))
    drawn = mean_counts(part, bias)
    assert drawn[SPLEEN] - counts[SPLEEN] == 2  # the stray piece is gone from the counts
    assert counts[:NUM_ORGAN_CLASSES].sum() == drawn[:NUM_ORGAN_CLASSES].sum() and counts[-1] == drawn[-1]
    cleaned, moved = clean_organ_map(organ_map(part, labels, bias), (4.0, 4.0, 4.0))
    assert moved == 2
    np.testing.assert_array_equal(hist, hu_histograms(cleaned, labels.hu))
    np.testing.assert_allclose(suv, np.bincount(cleaned.ravel(), weights=labels.suv.ravel().astype(np.float64),
                                                minlength=NUM_ORGAN_CLASSES))


def test_the_cleaned_fit_reaches_the_target_the_clean_up_would_leave_short():
    """A clean-up that takes a fifth of class 3 (its stray pieces): fitted on the counts as drawn, the
    offsets leave the cleaned class 3 about a fifth short; the cleaned fit reaches the target."""
    samples = [_soft(s, (10, 10, 10)) for s in range(4)]
    target = np.mean([mean_counts(compact(x, 1.0), np.zeros(LABEL_BIAS_SIZE)) for x in samples], axis=0)
    data = merge(compact(x, 1.0) for x in samples)

    def cleaned(bias):
        counts = mean_counts(data, bias)
        counts[3] *= 0.8
        return counts

    organs = slice(1, NUM_ORGAN_CLASSES)
    bias, _ = fit_label_bias(data, target)
    assert cleaned(bias)[3] < 0.85 * target[3]
    bias, counts, rounds = fit_label_bias_cleaned(data, target, cleaned)
    np.testing.assert_array_equal(counts, cleaned(bias))
    assert np.all(np.abs(counts[organs] / target[organs] - 1) < 0.03), (counts, target)
    assert rounds[-1]["error"] < rounds[0]["error"] and len(rounds) == calibration.CLEAN_FIT_ROUNDS
    assert rounds[0]["cleaned"][3] == pytest.approx(0.8 * rounds[0]["drawn"][3], abs=0.1)
    np.testing.assert_allclose(rounds[0]["label_bias"], fit_label_bias(data, target)[0], atol=1e-4)
    assert bias[0] == 0 and bias[-1] == 0 and np.all(np.abs(bias) <= 1.0)
    with pytest.raises(ValueError, match="rounds=0 must be at least 1"):
        fit_label_bias_cleaned(data, target, cleaned, rounds=0)


def test_calibrate_fits_the_sr_stage_on_cleaned_maps_and_the_global_stage_as_drawn(tiny, tmp_path, capsys):  # noqa: F811
    root = tmp_path / "root"
    shutil.copytree(tiny / "weights", root / "weights")
    (root / "cohort").symlink_to(tiny / "cohort")
    code, out, _ = _calibrate(capsys, root, tmp_path / "g", "--stage", "global", "--cases", "3")
    assert code == 0 and "organ maps as the network draws them" in out
    code, out, _ = _calibrate(capsys, root, tmp_path / "s", "--stage", "sr", "--cases", "2", "--write")
    assert code == 0 and "stray pieces relabelled" in out
    sr = json.loads((root / "weights" / "sr.json").read_text())
    info = sr["label_calibration"]
    assert info["clean_labels"] is True and len(info["rounds"]) == calibration.CLEAN_FIT_ROUNDS
    assert set(info["mean_voxels_as_drawn"]) == set(info["mean_voxels"])
    spacing = json.loads((root / "weights" / "sr.json").read_text())["output_grid"]["spacing"]
    per_case = []
    for i in range(2):  # the table's calibrated volumes are those of the cleaned maps under the written offsets
        part = load_compact(tmp_path / "s" / f"{i:05d}.npz")
        labels = load_label_map(map_path(tmp_path / "s" / f"{i:05d}.npz"))
        organs = clean_organ_map(organ_map(part, labels, np.asarray(sr["label_bias"])), spacing)[0]
        per_case.append(np.bincount(organs.ravel(), minlength=NUM_ORGAN_CLASSES))
    for c, name in enumerate(calibration.CLASS_NAMES[:NUM_ORGAN_CLASSES]):
        assert info["mean_voxels"][name]["calibrated"] == pytest.approx(np.mean(per_case, axis=0)[c], abs=0.06)
    code, out, _ = _calibrate(capsys, root, tmp_path / "s", "--stage", "sr", "--cases", "2", "--raw-labels")
    assert code == 0 and "organ maps as the network draws them" in out and "rounds" not in out


def test_a_work_folder_without_label_maps_is_refused(tiny, tmp_path, capsys):  # noqa: F811
    assert _calibrate(capsys, tiny, tmp_path / "g", "--stage", "global", "--cases", "1")[0] == 0
    origin = json.loads((tmp_path / "g" / calibration.ORIGIN_FILE).read_text())
    del origin["label_maps"]  # as written before the calibration kept label maps
    (tmp_path / "g" / calibration.ORIGIN_FILE).write_text(json.dumps(origin))
    code, _, err = _calibrate(capsys, tiny, tmp_path / "g", "--stage", "global", "--cases", "1")
    assert code == 2 and "label_maps None, not True" in err and len(err.strip().splitlines()) == 1


def test_body_scaled_targets_keep_the_body_drawn_and_the_organs_shares():
    target = np.zeros(LABEL_BIAS_SIZE)
    target[0], target[1:NUM_ORGAN_CLASSES], target[-1] = 900.0, np.arange(1, NUM_ORGAN_CLASSES) * 10.0, 7.0
    drawn = target.copy()
    drawn[0], drawn[1:NUM_ORGAN_CLASSES] = 933.0, drawn[1:NUM_ORGAN_CLASSES] * 0.95  # the body drawn 5 % small
    scaled, scale = calibration.body_scaled_target(target, drawn)
    assert scale == pytest.approx(drawn[1:NUM_ORGAN_CLASSES].sum() / target[1:NUM_ORGAN_CLASSES].sum())
    assert scaled[0] == 933.0 and scaled[-1] == 7.0
    np.testing.assert_allclose(scaled[1:NUM_ORGAN_CLASSES] / target[1:NUM_ORGAN_CLASSES], scale)
    assert scaled[1:NUM_ORGAN_CLASSES].sum() == pytest.approx(drawn[1:NUM_ORGAN_CLASSES].sum())
    with pytest.raises(ValueError, match="holds no body"):
        calibration.body_scaled_target(np.zeros(LABEL_BIAS_SIZE), drawn)


def test_a_body_drawn_small_is_labelled_larger_by_absolute_targets_and_kept_by_scaled_ones():
    """Samples whose organ channels all come out 0.3 low against the background's: absolute targets make the
    offsets give organ labels to background voxels until the body is the target's size; scaled to the body
    drawn, the fit leaves the background as drawn and reaches each organ's share of the body."""
    truth = [_soft(s, (10, 10, 10)) for s in range(4)]
    target = np.mean([mean_counts(compact(x, 0.5), np.zeros(LABEL_BIAS_SIZE)) for x in truth], axis=0)
    small = [x.copy() for x in truth]
    for x in small:
        x[3:2 + NUM_ORGAN_CLASSES] -= 0.3  # channels 3.. are the organ classes 1..; the background's stays
    data = merge(compact(x, 0.5) for x in small)
    drawn = mean_counts(data, np.zeros(LABEL_BIAS_SIZE))
    assert drawn[0] > 1.1 * target[0]
    _, absolute = fit_label_bias(data, target)
    assert absolute[0] < 1.02 * target[0]  # the body grown back into the background
    goal, scale = calibration.body_scaled_target(target, drawn)
    assert scale < 0.99
    _, counts = fit_label_bias(data, goal)
    organs = slice(1, NUM_ORGAN_CLASSES)
    assert abs(counts[0] / drawn[0] - 1) < 0.02
    assert np.all(np.abs(counts[organs] / goal[organs] - 1) < 0.05), (counts, goal)


def test_calibrate_keep_body_records_the_scale_it_fitted_with(tiny, tmp_path, capsys):  # noqa: F811
    root = tmp_path / "root"
    shutil.copytree(tiny / "weights", root / "weights")
    (root / "cohort").symlink_to(tiny / "cohort")
    code, out, _ = _calibrate(capsys, root, tmp_path / "g", "--stage", "global", "--cases", "3", "--keep-body",
                              "--write", "--no-intensities")
    info = json.loads((root / "weights" / "global.json").read_text())["label_calibration"]
    assert code == 0 and info["keep_body"] is True and f"x {info['body_scale']:.4f}" in out
    rows = info["mean_voxels"]
    organs = [n for n in rows if n not in ("background", "lesion")]
    drawn_body = sum(rows[n]["uncalibrated"] for n in organs)
    assert info["body_scale"] == pytest.approx(drawn_body / sum(rows[n]["training"] for n in organs), rel=1e-3)
