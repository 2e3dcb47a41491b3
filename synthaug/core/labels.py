"""The synthaug organ map: one small, fixed list shared by the phantom, the label
channels of the generator and the evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and scipy are imported where used: the constants below need neither
    import numpy as np

ORGAN_LABELS: dict[int, str] = {
    0: "background",
    1: "body_fat",
    2: "soft_tissue",  # muscle and other soft tissue
    3: "bone",
    4: "brain",
    5: "lungs",
    6: "heart",
    7: "liver",
    8: "spleen",
    9: "kidneys",
    10: "urinary_bladder",
    11: "aorta",  # aorta / blood pool
}
ORGAN_IDS: dict[str, int] = {name: i for i, name in ORGAN_LABELS.items()}
NUM_ORGAN_CLASSES = len(ORGAN_LABELS)

#: How many separate parts each organ has in a body (lungs and kidneys: left and right); the
#: tissue classes (fat, soft tissue, bone) are scattered by nature and have no count.
ORGAN_PARTS: dict[str, int] = {
    "brain": 1,
    "lungs": 2,
    "heart": 1,
    "liver": 1,
    "spleen": 1,
    "kidneys": 2,
    "urinary_bladder": 1,
    "aorta": 1,
}

#: Organs that form the body (everything but background).
BODY_ORGANS = tuple(i for i in ORGAN_LABELS if i != 0)


def check_organ_map(organs, where: str = "organ map") -> None:
    """Raise ``ValueError`` if ``organs`` holds an id outside the synthaug organ map."""
    import numpy as np

    values = np.unique(np.asarray(organs))
    bad = [int(v) for v in values if int(v) not in ORGAN_LABELS or v != int(v)]
    if bad:
        raise ValueError(
            f"{where}: label ids {bad} are outside the synthaug organ map 0-{NUM_ORGAN_CLASSES - 1}"
        )


#: Stray pieces of a generated organ label (:func:`stray_label_pieces`): a piece beyond the organ's
#: :data:`ORGAN_PARTS` largest that is smaller than this share of the largest piece ...
STRAY_MAX_FRACTION = 0.1
#: ... and lies farther than this (mm) from every piece kept. A break in a tube such as the aorta
#: leaves pieces close to the rest, which stay; the spleen label a generator draws on the heart's or
#: the bladder's rim lies 4-38 cm from the spleen and goes (benchmarks/results/stray_labels.json).
STRAY_MIN_GAP_MM = 20.0


def stray_label_pieces(organs: np.ndarray, spacing: Sequence[float], *, max_fraction: float = STRAY_MAX_FRACTION,
                       min_gap_mm: float = STRAY_MIN_GAP_MM) -> np.ndarray:
    """Boolean mask of the stray pieces of the organs of :data:`ORGAN_PARTS` in an organ map.

    Each organ keeps its ``ORGAN_PARTS`` largest 26-connected pieces and every piece that is at least
    ``max_fraction`` of the largest or lies within ``min_gap_mm`` of a kept piece (kept pieces gather
    close ones in turn, until none joins); what remains is stray. The tissue classes (fat, soft tissue,
    bone) are scattered by nature and never stray.
    """
    import numpy as np
    from scipy import ndimage

    organs = np.asarray(organs)
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (organs.ndim,) or not (spacing > 0).all():
        raise ValueError(f"spacing {spacing.tolist()} must give one positive value per axis of the "
                         f"{organs.ndim}-D organ map")
    if not 0 <= max_fraction <= 1 or min_gap_mm < 0:
        raise ValueError(f"max_fraction={max_fraction} must be in [0, 1] and min_gap_mm={min_gap_mm} >= 0")
    stray = np.zeros(organs.shape, dtype=bool)
    pad = np.ceil(min_gap_mm / spacing).astype(int) + 1
    organ_boxes = ndimage.find_objects(organs)
    for name, parts in ORGAN_PARTS.items():
        label = ORGAN_IDS[name]
        if label > len(organ_boxes) or organ_boxes[label - 1] is None:
            continue
        # Work in the organ's box grown by the gap, which holds every piece and every piece's surroundings.
        region = tuple(slice(max(s.start - p, 0), s.stop + p) for s, p in zip(organ_boxes[label - 1], pad))
        pieces, n = ndimage.label(organs[region] == label, structure=np.ones((3,) * organs.ndim, dtype=bool))
        if n <= parts:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        order = np.argsort(-sizes, kind="stable")
        candidates = [i for i in order[parts:] if sizes[i] < max_fraction * sizes[order[0]]]
        kept = np.isin(pieces, np.setdiff1d(order, candidates) + 1)
        boxes = ndimage.find_objects(pieces)
        # A chain of close pieces grows from the kept ones: repeat until no piece joins.
        joined = True
        while joined and candidates:
            joined = False
            for i in list(candidates):
                box = tuple(slice(max(s.start - p, 0), s.stop + p) for s, p in zip(boxes[i], pad))
                near = kept[box]
                piece = pieces[box] == i + 1
                if near.any() and ndimage.distance_transform_edt(~near, sampling=spacing)[piece].min() <= min_gap_mm:
                    near |= piece
                    candidates.remove(i)
                    joined = True
        for i in candidates:
            stray[region][boxes[i]] |= pieces[boxes[i]] == i + 1
    return stray


def clean_organ_map(organs: np.ndarray, spacing: Sequence[float], **kwargs: float) -> tuple[np.ndarray, int]:
    """``(cleaned, relabelled)``: the organ map with its stray pieces (:func:`stray_label_pieces`, same
    keywords) given the label of the nearest voxel outside them, and how many voxels changed.

    A generator's label channels can leave a few voxels of an organ's label far from that organ (spleen
    or kidney label on the heart's or the bladder's rim); such voxels teach a segmenter false positives
    and skew the organ's SUVmax. The images are left as they are: only the labels move.
    """
    import numpy as np
    from scipy import ndimage

    organs = np.asarray(organs)
    stray = stray_label_pieces(organs, spacing, **kwargs)
    n = int(stray.sum())
    if not n:
        return organs.copy(), 0
    if stray.all():
        raise ValueError("the organ map is all stray pieces: no label to give them")
    cleaned = organs.copy()
    pieces, _ = ndimage.label(stray, structure=np.ones((3,) * organs.ndim, dtype=bool))
    for i, box in enumerate(ndimage.find_objects(pieces), start=1):
        # A piece's nearest outside voxel lies in its box grown by one voxel, whose rim it does not fill.
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        piece = pieces[box] == i
        nearest = ndimage.distance_transform_edt(stray[box], sampling=spacing, return_distances=False,
                                                 return_indices=True)
        source = organs[box][tuple(nearest)]
        cleaned[box][piece] = source[piece]
    return cleaned, n
