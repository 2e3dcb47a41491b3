"""``scripts/height_landmarks.py``: the brain-to-bladder distance and the body's extent on constructed labels."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import load_script

from synthaug.core.labels import ORGAN_IDS


def test_landmarks_measure_the_centroid_distance_and_the_labelled_extent():
    script = load_script("height_landmarks")
    organs = np.zeros((8, 8, 100), dtype=np.uint8)
    organs[2:6, 2:6, 10:90] = ORGAN_IDS["soft_tissue"]
    organs[3:5, 3:5, 80:86] = ORGAN_IDS["brain"]            # centre slice 82.5
    organs[3:5, 3:5, 20:25] = ORGAN_IDS["urinary_bladder"]  # centre slice 22
    affine = np.diag([4.0, 4.0, 5.0, 1.0])
    affine[2, 3] = -200.0
    marks = script.landmarks(organs, affine)
    assert marks["body_extent_mm"] == 80 * 5.0
    assert marks["brain_to_bladder_mm"] == pytest.approx((82.5 - 22.0) * 5.0)
    organs[organs == ORGAN_IDS["urinary_bladder"]] = ORGAN_IDS["soft_tissue"]
    assert np.isnan(script.landmarks(organs, affine)["brain_to_bladder_mm"])  # no bladder: not measured


def test_fidelity_is_perfect_for_a_measure_proportional_to_height():
    script = load_script("height_landmarks")
    heights = [150.0, 165.0, 180.0, 195.0]
    marks = [{"body_extent_mm": 1000.0 if h > 170 else 5.0 * h, "brain_to_bladder_mm": 4.5 * h} for h in heights]
    fid = script.fidelity(heights, marks)
    assert fid["brain_to_bladder_mm"]["pearson_r"] == pytest.approx(1.0)
    assert fid["brain_to_bladder_mm"]["slope_mm_per_cm"] == pytest.approx(4.5)
    assert fid["body_extent_mm"]["pearson_r"] < 0.99  # a field of view that cuts the tall bodies
