"""synthaug: demography-conditioned synthetic whole-body FDG PET/CT for segmentation training.

The heavy parts (torch models, samplers, datasets) are imported lazily, so that
``import synthaug`` and the CLI start quickly.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .core.case import Case
from .core.demographics import Demographics, sample_population
from .core.grid import PRESETS, Grid, get_preset
from .core.labels import ORGAN_LABELS

__version__ = "0.1.0"

_LAZY = {
    "make_phantom": "synthaug.phantom.body",
    "Cohort": "synthaug.core.io",
    "read_case": "synthaug.core.io",
    "write_case": "synthaug.core.io",
    "CascadedSampler": "synthaug.sampling.cascade",
    "SyntheticPETCTDataset": "synthaug.data.dataset",
}

__all__ = [
    "Case", "CascadedSampler", "Cohort", "Demographics", "Grid", "ORGAN_LABELS", "PRESETS", "SyntheticPETCTDataset",
    "get_preset", "make_phantom", "read_case", "sample_population", "write_case",
]

if TYPE_CHECKING:  # pragma: no cover
    from .core.io import Cohort, read_case, write_case
    from .data.dataset import SyntheticPETCTDataset
    from .phantom.body import make_phantom
    from .sampling.cascade import CascadedSampler


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'synthaug' has no attribute {name!r}")
