"""Shared test helpers: a tiny hand-made cohort and tiny stage configurations.

The tiny setting runs the whole cascade in seconds on 2 CPU cores: the global stage on
16 x 16 x 32 voxels at 32 mm, the output (SR) grid 32 x 32 x 64 at 16 mm, networks
with channels (8, 16) and no attention.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from synthaug.core.case import Case
from synthaug.core.demographics import Demographics
from synthaug.core.grid import Grid
from synthaug.core.io import write_case, write_demographics_csv
from synthaug.core.labels import ORGAN_IDS
from synthaug.model.nets import NetConfig
from synthaug.model.stages import StageConfig, build_stage_model, default_stage_config, save_stage

TINY_GLOBAL_GRID = Grid((16, 16, 32), (32.0, 32.0, 32.0))
TINY_OUTPUT_GRID = Grid((32, 32, 64), (16.0, 16.0, 16.0))
TINY_NET = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8, "num_head_channels": 8}

#: StageConfig overrides as they appear in a ``synthaug train --config`` JSON file.
TINY_STAGE_JSON = {
    "global_grid": TINY_GLOBAL_GRID.to_dict(),
    "output_grid": TINY_OUTPUT_GRID.to_dict(),
    "patch_size": [16, 16, 16],
    "sample_patch_size": [16, 16, 32],
    "sample_overlap": 4,
    "net": TINY_NET,
}


def tiny_stage_config(stage: str, objective: str = "edm", **overrides) -> StageConfig:
    """A StageConfig for the tiny grids with a tiny network (``overrides`` win)."""
    base = default_stage_config(stage, "demo", objective)
    net = NetConfig.from_dict({**base.net.to_dict(), **TINY_NET})
    kw = {"global_grid": TINY_GLOBAL_GRID, "output_grid": TINY_OUTPUT_GRID, "patch_size": (16, 16, 16),
          "sample_patch_size": (16, 16, 32), "sample_overlap": 4, "net": net}
    kw.update(overrides)
    return default_stage_config(stage, "demo", objective, **kw)


def write_train_config(path: str | Path, stage_overrides: dict | None = None, **train) -> Path:
    """Write a ``synthaug train --config`` file: tiny stage overrides + TrainConfig fields."""
    path = Path(path)
    path.write_text(json.dumps({"stage": {**TINY_STAGE_JSON, **(stage_overrides or {})}, **train}))
    return path


def body_length_mm(height_cm: float) -> float:
    """Length of the tiny phantom's body: strongly height dependent (145 cm -> 350 mm, 200 cm -> 900 mm)."""
    return 10.0 * (height_cm - 110.0)


def tiny_case(demo: Demographics, seed: int, grid: Grid = TINY_OUTPUT_GRID) -> Case:
    """A cylinder "body" whose length depends on height, with a liver, a brain and maybe a lesion."""
    rng = np.random.default_rng(seed)
    x, y, z = (np.arange(n) * s for n, s in zip(grid.shape, grid.spacing))  # mm from the first voxel
    x, y, z = np.meshgrid(x - x.mean(), y - y.mean(), z, indexing="ij")
    top = grid.fov_mm[2] - 48.0
    bottom = top - body_length_mm(demo.height_cm)
    radius = 200.0 + 0.6 * (demo.weight_kg - 75.0)  # wide: the body survives coarse grids
    body = (x**2 / radius**2 + y**2 / (0.75 * radius) ** 2 < 1) & (z > bottom) & (z < top)
    organs = np.where(body, ORGAN_IDS["soft_tissue"], 0).astype(np.uint8)
    ct = np.where(body, 40.0, -1000.0) + rng.normal(0, 5, grid.shape)
    pet = np.where(body, 1.0, 0.0)
    brain = body & ((x**2 + y**2 + (z - top + 70) ** 2) < 55.0**2)
    liver = body & (((x + 30) ** 2 + y**2 + (z - top + 0.35 * (top - bottom)) ** 2) < 60.0**2)
    organs[brain], ct[brain], pet[brain] = ORGAN_IDS["brain"], 30.0, 8.0
    organs[liver], ct[liver], pet[liver] = ORGAN_IDS["liver"], 55.0, 2.2
    lesions = np.zeros(grid.shape, np.uint8)
    if rng.random() < 0.5:
        lesion = body & (((x - 40) ** 2 + (y - 10) ** 2 + (z - top + 0.5 * (top - bottom)) ** 2) < 25.0**2)
        lesions[lesion], pet[lesion] = 1, 6.0
    return Case(ct.astype(np.float32), pet.astype(np.float32), organs, lesions, grid.affine, demo, {"source": "phantom"})


def write_tiny_cohort(root: str | Path, heights=(145.0, 200.0, 150.0, 195.0, 140.0, 205.0), seed: int = 0,
                      grid: Grid = TINY_OUTPUT_GRID) -> list[str]:
    """Write a tiny cohort in the AutoPET layout (one case per height); returns the case ids."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    demos = {}
    for i, h in enumerate(heights):
        demo = Demographics(age=float(rng.integers(30, 80)), sex="M" if i % 2 else "F", height_cm=float(h),
                            weight_kg=float(np.round(rng.uniform(60, 90), 1)), diagnosis="NEGATIVE")
        case_id = f"case{i:03d}"
        write_case(root, case_id, tiny_case(demo, seed * 1000 + i, grid))
        demos[case_id] = demo
    write_demographics_csv(root / "demographics.csv", demos)
    return list(demos)


def body_extent_voxels(ct: np.ndarray) -> int:
    """Number of axial slices (along Z) whose mean CT over the given (X, Y) columns is body (> -500 HU)."""
    return int((ct.mean(axis=(0, 1)) > -500).sum())


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomised(model: torch.nn.Module, seed: int, gain: float = 1.0) -> torch.nn.Module:
    """He-like random weights everywhere (MONAI zero-initialises output layers, which would
    make an untrained denoiser trivially seam-free)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * gain / np.sqrt(p[0].numel()))
    return model.eval()


def randomised_tiny_weights(folder: str | Path) -> Path:
    """A weights folder with randomly initialised (fixed-seed) tiny global and SR stages."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g_cfg, sr_cfg = tiny_stage_config("global"), tiny_stage_config("sr")
    with torch.random.fork_rng():  # the layers _randomised leaves (biases, norms) start from a fixed seed too
        torch.manual_seed(0)
        save_stage(folder / "global", _randomised(build_stage_model(g_cfg), 0, gain=0.3), g_cfg)
        save_stage(folder / "sr", _randomised(build_stage_model(sr_cfg), 1, gain=0.5), sr_cfg)
    return folder
