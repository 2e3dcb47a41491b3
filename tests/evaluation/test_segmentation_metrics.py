"""Dice and AutoPET's false-positive / false-negative volumes on volumes with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthaug.evaluation.segmentation import dice, lesion_metrics, nanmean, organ_dice


def _boxes(shape, *boxes) -> np.ndarray:
    out = np.zeros(shape, bool)
    for box in boxes:
        out[box] = True
    return out


def test_dice_of_two_half_overlapping_cubes():
    a = _boxes((10, 10, 10), np.s_[0:4, 0:4, 0:4])  # 64 voxels
    b = _boxes((10, 10, 10), np.s_[2:6, 0:4, 0:4])  # 64 voxels, 32 shared
    assert dice(a, b) == pytest.approx(2 * 32 / 128)
    assert dice(a, a) == 1.0 and dice(a, np.zeros_like(a)) == 0.0
    assert math.isnan(dice(np.zeros_like(a), np.zeros_like(a)))


def test_lesion_volumes_follow_autopets_component_rules():
    shape = (20, 20, 20)
    truth = _boxes(shape, np.s_[0:3, 0:3, 0:3],       # lesion A, 27 voxels: hit by the prediction
                   np.s_[10:12, 10:12, 10:12])        # lesion B, 8 voxels: missed
    pred = _boxes(shape, np.s_[2:5, 0:3, 0:3],        # 27 voxels touching A (9 shared): not a false positive
                  np.s_[15:17, 0:2, 0:5])             # 20 voxels touching nothing: false positive
    m = lesion_metrics(pred, truth, voxel_ml=0.5)
    assert m["fp_ml"] == pytest.approx(20 * 0.5)
    assert m["fn_ml"] == pytest.approx(8 * 0.5)
    assert m["dice"] == pytest.approx(2 * 9 / (35 + 47))
    assert m["true_ml"] == pytest.approx(35 * 0.5) and m["pred_ml"] == pytest.approx(47 * 0.5)


def test_diagonal_neighbours_are_one_component():
    truth = _boxes((6, 6, 6), np.s_[0:1, 0:1, 0:1], np.s_[1:2, 1:2, 1:2])  # touch at a corner only
    pred = _boxes((6, 6, 6), np.s_[0:1, 0:1, 0:1])
    assert lesion_metrics(pred, truth, 1.0)["fn_ml"] == 0.0  # 26-connected: the whole lesion counts as found


def test_a_case_without_lesions_has_no_dice_and_only_false_positive_volume():
    pred = _boxes((8, 8, 8), np.s_[0:2, 0:2, 0:2])
    m = lesion_metrics(pred, np.zeros((8, 8, 8), bool), voxel_ml=2.0)
    assert math.isnan(m["dice"]) and m["fp_ml"] == 16.0 and m["fn_ml"] == 0.0


def test_organ_dice_per_label_leaves_absent_organs_undefined():
    truth = np.zeros((6, 6, 6), np.uint8)
    truth[:3] = 7  # liver
    pred = np.zeros_like(truth)
    pred[1:4] = 7
    scores = organ_dice(pred, truth)
    assert scores["liver"] == pytest.approx(2 * 2 / 6)
    assert math.isnan(scores["brain"]) and "background" not in scores
    assert nanmean(scores.values()) == pytest.approx(scores["liver"])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="voxel_ml"):
        lesion_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), 0.0)
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
