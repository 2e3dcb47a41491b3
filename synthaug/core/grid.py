"""Voxel grids and the named resolution presets (see README, "Resolutions")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape (X, Y, Z) and spacing in mm, RAS+, centred on the world origin."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(s) < 1 for s in self.shape):
            raise ValueError(f"grid shape must be three positive integers, got {self.shape}")
        if len(self.spacing) != 3 or any(float(s) <= 0 for s in self.spacing):
            raise ValueError(f"grid spacing must be three positive numbers (mm), got {self.spacing}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))

    @property
    def fov_mm(self) -> tuple[float, float, float]:
        """Field of view in mm along X, Y, Z."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing))

    @property
    def affine(self) -> np.ndarray:
        """RAS+ voxel-to-world affine (mm) with the volume centre at the world origin."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = [-(n - 1) * s / 2.0 for n, s in zip(self.shape, self.spacing)]
        return aff

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.shape))

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "spacing": list(self.spacing)}

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        return cls(tuple(d["shape"]), tuple(d["spacing"]))


@dataclass(frozen=True)
class Preset:
    """A named pair of grids: the global stage's and the output (SR stage) grid."""

    name: str
    global_grid: Grid
    output_grid: Grid


PRESETS: dict[str, Preset] = {
    "demo": Preset("demo", Grid((32, 32, 64), (16.0, 16.0, 16.0)), Grid((128, 128, 256), (4.0, 4.0, 4.0))),
    "autopet": Preset(
        "autopet",
        Grid((64, 64, 128), (400 * 2.0364 / 64, 400 * 2.0364 / 64, 326 * 3.0 / 128)),
        Grid((400, 400, 326), (2.0364, 2.0364, 3.0)),
    ),
}


def get_preset(name: str) -> Preset:
    """Look up a preset by name with a clear error."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
