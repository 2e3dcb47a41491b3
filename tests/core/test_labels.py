"""The organ map's label clean-up (synthaug.core.labels.stray_label_pieces / clean_organ_map) on
constructed maps whose stray pieces are known."""

import numpy as np
import pytest

from synthaug.core.labels import ORGAN_IDS, clean_organ_map, stray_label_pieces

SOFT, FAT, HEART, SPLEEN, KIDNEYS, AORTA, LIVER, BLADDER = (
    ORGAN_IDS[n] for n in ("soft_tissue", "body_fat", "heart", "spleen", "kidneys", "aorta", "liver", "urinary_bladder"))


def body(shape=(40, 40, 60)) -> np.ndarray:
    organs = np.full(shape, SOFT, dtype=np.uint8)
    organs[:, :, :2] = 0
    return organs


def test_a_far_small_piece_takes_the_label_around_it_and_the_organ_stays():
    organs = body()
    organs[5:15, 5:15, 5:15] = SPLEEN            # the spleen, 1000 voxels
    organs[20:30, 20:30, 40:50] = HEART          # the heart, with 8 voxels of spleen label inside its rim
    organs[20:22, 20:22, 40:42] = SPLEEN
    cleaned, n = clean_organ_map(organs, (4.0, 4.0, 4.0))
    assert n == 8
    assert (cleaned[20:22, 20:22, 40:42] != SPLEEN).all()
    assert (cleaned == SPLEEN).sum() == 1000 and (organs == SPLEEN).sum() == 1008
    # each relabelled voxel takes its nearest other label: heart inside the heart, soft tissue at the corner
    assert cleaned[21, 21, 41] == HEART and cleaned[20, 20, 40] in (HEART, SOFT)
    changed = cleaned != organs
    assert changed.sum() == 8 and np.array_equal(changed, stray_label_pieces(organs, (4.0, 4.0, 4.0)))


def test_close_pieces_of_a_broken_tube_stay():
    """An aorta broken in three: the gaps (8 mm) are within the 20 mm tolerance; a chain of
    pieces grows from the main one."""
    organs = body()
    organs[18:21, 18:21, 4:40] = AORTA
    organs[18:21, 18:21, 42:46] = AORTA  # 2 voxels (8 mm) beyond the main piece
    organs[18:21, 18:21, 48:52] = AORTA  # 8 mm beyond that one, 24 mm from the main piece
    cleaned, n = clean_organ_map(organs, (4.0, 4.0, 4.0))
    assert n == 0 and np.array_equal(cleaned, organs)


def test_a_chain_grows_whatever_the_pieces_sizes():
    """The far piece is larger than the one that links it to the aorta: it joins once its neighbour has."""
    organs = body()
    organs[16:22, 16:22, 4:40] = AORTA   # 1296 voxels
    organs[18:20, 18:20, 42:44] = AORTA  # 8 voxels, 8 mm beyond the main piece
    organs[17:21, 17:21, 46:50] = AORTA  # 64 voxels, 8 mm beyond that one, 24 mm from the main piece
    cleaned, n = clean_organ_map(organs, (4.0, 4.0, 4.0))
    assert n == 0 and np.array_equal(cleaned, organs)
    organs[18:20, 18:20, 42:44] = SOFT   # without the link the far piece is stray
    assert clean_organ_map(organs, (4.0, 4.0, 4.0))[1] == 64


def test_a_piece_of_a_tenth_of_the_organ_or_more_stays_wherever_it_is():
    organs = body()
    organs[2:12, 2:12, 5:15] = LIVER   # 1000 voxels
    organs[30:35, 30:35, 45:49] = LIVER  # 100 voxels, far: a split organ, not a stray piece
    assert clean_organ_map(organs, (4.0, 4.0, 4.0))[1] == 0
    organs[30:35, 30:35, 48] = SOFT      # 75 voxels: below a tenth, far: stray
    assert clean_organ_map(organs, (4.0, 4.0, 4.0))[1] == 75


def test_two_part_organs_keep_two_parts_and_tissues_are_never_stray():
    organs = body()
    organs[5:10, 5:10, 20:30] = KIDNEYS   # left and right kidney, far apart
    organs[30:35, 5:10, 20:30] = KIDNEYS
    organs[18:20, 30:32, 50:52] = KIDNEYS  # a third, small, far piece
    for i in range(0, 40, 8):             # scattered islands of fat
        organs[i, 35, 10] = FAT
    cleaned, n = clean_organ_map(organs, (4.0, 4.0, 4.0))
    assert n == 8 and (cleaned == KIDNEYS).sum() == 500 and (cleaned == FAT).sum() == 5


def test_the_gap_is_measured_in_mm():
    """The same piece, three voxels from the organ: 12 mm on a 4 mm grid (close), 30 mm on a 10 mm grid (far)."""
    organs = body()
    organs[5:15, 5:15, 5:15] = SPLEEN
    organs[17:19, 5:7, 5:7] = SPLEEN
    assert clean_organ_map(organs, (4.0, 4.0, 4.0))[1] == 0
    assert clean_organ_map(organs, (10.0, 4.0, 4.0))[1] == 8
    assert clean_organ_map(organs, (4.0, 4.0, 4.0), min_gap_mm=8.0)[1] == 8


def test_a_clean_map_is_returned_unchanged_as_a_copy():
    organs = body()
    organs[5:15, 5:15, 5:15] = BLADDER
    cleaned, n = clean_organ_map(organs, (2.0, 2.0, 2.0))
    assert n == 0 and np.array_equal(cleaned, organs) and cleaned is not organs


@pytest.mark.parametrize("spacing, kwargs, match", [
    ((4.0, 4.0), {}, "spacing"),
    ((4.0, 0.0, 4.0), {}, "spacing"),
    ((4.0, 4.0, 4.0), {"max_fraction": 1.5}, "max_fraction"),
    ((4.0, 4.0, 4.0), {"min_gap_mm": -1.0}, "min_gap_mm"),
])
def test_bad_arguments_are_refused_in_one_line(spacing, kwargs, match):
    with pytest.raises(ValueError, match=match):
        clean_organ_map(body(), spacing, **kwargs)
