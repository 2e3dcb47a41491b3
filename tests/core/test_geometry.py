"""synthaug.core.geometry: the RAS reorientation, which gives the new spacing or the new affine."""

from __future__ import annotations

import numpy as np
import pytest

from synthaug.core.geometry import spacing_of, to_ras, to_ras_affine


def test_a_flipped_and_permuted_volume_comes_back_in_ras_with_its_spacing_and_affine():
    arr = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    # array axes: 0 runs superior at 5 mm, 1 runs left (-R) at 2 mm, 2 runs anterior at 3 mm
    affine = np.array([[0.0, -2.0, 0.0, 10.0], [0.0, 0.0, 3.0, -20.0], [5.0, 0.0, 0.0, 30.0], [0, 0, 0, 1.0]])
    out, spacing = to_ras(arr, affine)
    same, new_affine = to_ras_affine(arr, affine)
    assert out.shape == (3, 4, 2) and np.array_equal(out, same)
    assert spacing == pytest.approx([2.0, 3.0, 5.0]) and spacing_of(new_affine) == pytest.approx(spacing)
    assert np.all(np.diag(new_affine)[:3] > 0) and np.count_nonzero(new_affine[:3, :3]) == 3  # RAS+, axis-aligned
    # every voxel keeps its world position: the old index of out[i, j, k] maps where the new one does
    i, j, k = 1, 2, 1
    old = np.argwhere(arr == out[i, j, k])[0]
    assert affine @ np.r_[old, 1.0] == pytest.approx(new_affine @ np.r_[i, j, k, 1.0])
