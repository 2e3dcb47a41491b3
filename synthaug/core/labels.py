"""The synthaug organ map: one small, fixed list shared by the phantom, the label
channels of the generator and the evaluation."""

from __future__ import annotations

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
