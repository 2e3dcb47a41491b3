"""The case: what every part of synthaug passes around (see README, "Data model")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .demographics import Demographics

#: Source tags of a case.
SOURCES = ("synthetic", "real", "phantom")


@dataclass
class Case:
    """One PET/CT study with its labels on one grid.

    Arrays are (X, Y, Z) as nibabel returns them, RAS+, Z from feet to head.

    Attributes:
        ct: float32, Hounsfield units.
        pet: float32, SUV (body weight).
        organs: uint8 synthaug organ map (``synthaug.core.labels``), or ``None`` if unknown.
        lesions: uint8 0/1 lesion mask (AutoPET's SEG), or ``None`` if unknown.
        affine: 4x4 voxel-to-world (RAS+, mm).
        demographics: who the case is (or was generated for), if known.
        meta: provenance: ``source``, ``seed``, ``model_sha256``, ``case_id``, ...
    """

    ct: np.ndarray
    pet: np.ndarray | None
    organs: np.ndarray | None
    lesions: np.ndarray | None
    affine: np.ndarray
    demographics: Demographics | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.ct.ndim != 3:
            raise ValueError(f"ct must be a 3D (X, Y, Z) array, got shape {self.ct.shape}")
        for name in ("pet", "organs", "lesions"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != self.ct.shape:
                raise ValueError(f"{name} has shape {arr.shape} but ct has {self.ct.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.ct.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0
