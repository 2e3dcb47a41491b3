"""synthaug: demography-conditioned synthetic whole-body FDG PET/CT for segmentation training.

The heavy parts (torch models, samplers, datasets) are imported lazily, so that
``import synthaug`` and the CLI start quickly.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .case import Case
from .demographics import Demographics, sample_population
from .grid import PRESETS, Grid, get_preset
from .labels import ORGAN_LABELS

__version__ = "0.1.0"

_LAZY = {
    "make_phantom": "synthaug.phantom",
    "Cohort": "synthaug.io",
    "read_case": "synthaug.io",
    "write_case": "synthaug.io",
    "CascadedSampler": "synthaug.cascade",
    "SyntheticPETCTDataset": "synthaug.dataset",
}

__all__ = [
    "Case", "CascadedSampler", "Cohort", "Demographics", "Grid", "ORGAN_LABELS", "PRESETS", "SyntheticPETCTDataset",
    "get_preset", "make_phantom", "read_case", "sample_population", "write_case",
]

if TYPE_CHECKING:  # pragma: no cover
    from .cascade import CascadedSampler
    from .dataset import SyntheticPETCTDataset
    from .io import Cohort, read_case, write_case
    from .phantom import make_phantom


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'synthaug' has no attribute {name!r}")
