"""Which cases a training batch draws: uniformly (the default), or balanced over sex and height.

A cohort drawn like AutoPET holds few people far from its sex's median height, and a network trained on
uniform draws fits its common bodies best: the shipped global stage draws women's and short people's
bodies smaller than the phantom's (``scripts/body_volume_check.py``, ``docs/realism.md``).
:func:`stratum_weights` groups the cases by sex and, within each sex, into ``bins`` height bands of
equal width (from that sex's shortest to its tallest case), and draws every group equally often (each
case uniformly within its group): the short and the tall of each sex are seen as often as the middle.
The conditional model the network learns is the same either way; balancing only changes how often
each kind of body is seen. Measured once, it did not help: 1,000 balanced global steps left the shipped
stage's short and female bodies as small as 1,000 uniform ones did (``docs/realism.md``, "Where the
bodies fall short"), so the option is a tool for cohorts skewed further than the phantom's, not a fix.
"""

from __future__ import annotations

import numpy as np

from ..core.demographics import COND_DIM, FIELDS

_SEX, _HEIGHT = 1, 2  # their entries in Demographics.to_vector
_KNOWN = COND_DIM - len(FIELDS)  # where the "known" mask over FIELDS starts


def stratum_ids(cond: np.ndarray, bins: int) -> np.ndarray:
    """Each case's group (int, one per row of ``cond``: (N, COND_DIM) conditioning vectors): sex (unknown
    sex its own), then within it one of ``bins`` equal-width height bands (unknown height its own)."""
    cond = np.asarray(cond, dtype=np.float64)
    if cond.ndim != 2 or cond.shape[1] != COND_DIM:
        raise ValueError(f"cond must be (cases, {COND_DIM}) conditioning vectors, got shape {cond.shape}")
    if bins < 1:
        raise ValueError(f"bins={bins} must be >= 1")
    sex_known = cond[:, _KNOWN + FIELDS.index("sex")] > 0
    height_known = cond[:, _KNOWN + FIELDS.index("height_cm")] > 0
    sex = np.where(sex_known, (cond[:, _SEX] > 0).astype(int), 2)  # 0 F, 1 M, 2 unknown
    height_bin = np.full(len(cond), bins, dtype=int)  # `bins`: height unknown
    for s in np.unique(sex):
        sel = (sex == s) & height_known
        if sel.any():
            h = cond[sel, _HEIGHT]
            edges = np.linspace(h.min(), h.max(), bins + 1)[1:-1]
            height_bin[sel] = np.searchsorted(edges, cond[sel, _HEIGHT], side="right")
    return sex * (bins + 1) + height_bin


def stratum_weights(cond: np.ndarray, bins: int) -> np.ndarray | None:
    """Draw probabilities per case (sum 1) that give every group of :func:`stratum_ids` the same share;
    ``None`` for ``bins == 0`` (uniform draws)."""
    if bins < 0:
        raise ValueError(f"balance={bins} must be 0 (uniform) or a number of height bins per sex")
    if bins == 0:
        return None
    ids = stratum_ids(cond, bins)
    groups, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    return 1.0 / (len(groups) * counts[inverse])
