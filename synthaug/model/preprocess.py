"""Bring cohorts onto a model grid: patient-centred alignment, resampling, cached arrays.

Alignment (the same for phantom and real data): the body (largest connected component
of CT > -500 HU) is centred in X and Y, and its superior end is placed
``TOP_MARGIN_MM`` below the top of the field of view, so that every case starts at
the vertex (or wherever the scan starts) and runs towards the feet.

Resampling uses the affines end to end (scipy's ``affine_transform``): trilinear for CT
and PET (air = -1000 HU and SUV 0 outside the scan), per-class interpolation + argmax
for the organ map, linear + threshold for the lesion mask, with a Gaussian
anti-aliasing filter when the target grid is coarser.

Lesions on a coarse grid: a target voxel is lesion when at least half of it is
(``lesion_rule="majority"``), which loses most small lesions at 16 mm (docs/training.md,
"Lesions on the global grid"); ``"every"`` also marks each lesion that the majority
rule loses at the target voxel holding most of it, so every lesion reaches the coarse
grid as at least one voxel and a model trained there can learn to place it.

Thin organs on a coarse grid: per-class fraction and argmax (``organ_rule="argmax"``)
break a tube narrower than two target voxels into pieces (the phantom aorta at 16 mm); ``"thin"``
also marks each organ of :data:`THIN_ORGANS` wherever it fills at least
:data:`THIN_ORGAN_FRACTION` of a target voxel, which keeps it whole at about twice its argmax
voxels (docs/training.md, "Thin organs on the global grid", has the measurement), taken from its neighbours
(``scripts/thin_organ_check.py``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.case import Case
from ..core.demographics import COND_DIM
from ..core.geometry import BODY_HU, body_mask
from ..core.grid import Grid
from ..core.io import Cohort, atomic_write_json
from ..core.labels import ORGAN_IDS
from ..core.progress import progress_bar

TOP_MARGIN_MM = 16.0
#: Bumped whenever alignment or resampling changes, so stale caches are rebuilt.
PREPROCESS_VERSION = 1
LESION_RULES = ("majority", "every")
ORGAN_RULES = ("argmax", "thin")
#: Organs kept whole on coarse grids by ``organ_rule="thin"``, and the share of a target voxel they need.
THIN_ORGANS = ("aorta",)
THIN_ORGAN_FRACTION = 0.25


def alignment_shift(case: Case, grid: Grid) -> np.ndarray:
    """World translation (mm) that centres the body in X/Y and puts its top below the FOV top."""
    mask = body_mask(case.ct, fill_holes=False, largest_only=True)
    if not mask.any():
        raise ValueError(f"case {case.meta.get('case_id', '?')}: no body found (no CT voxel above {BODY_HU} HU)")
    total = mask.sum()
    mean_idx = np.array([(mask.sum(axis=tuple(a for a in range(3) if a != ax)) * np.arange(n)).sum() / total
                         for ax, n in enumerate(mask.shape)])
    centre_xy = (case.affine[:3, :3] @ mean_idx + case.affine[:3, 3])[:2]
    a = case.affine[2]
    z_world = (a[0] * np.arange(mask.shape[0], dtype=np.float32)[:, None, None]
               + a[1] * np.arange(mask.shape[1], dtype=np.float32)[None, :, None]
               + a[2] * np.arange(mask.shape[2], dtype=np.float32)[None, None, :] + a[3])
    top = float(z_world[mask].max())
    target_top = grid.fov_mm[2] / 2.0 - TOP_MARGIN_MM
    return np.array([-centre_xy[0], -centre_xy[1], target_top - top])


def _resample(arr: np.ndarray, matrix: np.ndarray, offset: np.ndarray, shape, cval: float, zoom: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float32, copy=False)
    sigma = np.where(zoom > 1.0, 0.4 * zoom, 0.0)  # anti-aliasing (in source voxels)
    if np.any(sigma > 0):
        arr = ndimage.gaussian_filter(arr, sigma=sigma, mode="nearest")
    return ndimage.affine_transform(arr, matrix, offset, output_shape=tuple(shape), order=1, mode="constant", cval=cval)


def _block_resample(arr: np.ndarray, starts: np.ndarray, zoom: np.ndarray, shape, cval: float) -> np.ndarray:
    """Exact area resampling when every target voxel covers a whole block of source voxels."""
    k = zoom.astype(int)
    pads = []
    for n, s, kk, t in zip(arr.shape, starts, k, shape):
        lo, hi = s, s + kk * t
        pads.append((max(0, -lo), max(0, hi - n)))
    padded = np.pad(arr, pads, mode="constant", constant_values=cval) if any(p != (0, 0) for p in pads) else arr
    sl = tuple(slice(s + p[0], s + p[0] + kk * t) for s, p, kk, t in zip(starts, pads, k, shape))
    block = padded[sl].astype(np.float32, copy=False)
    if np.all(k == 1):
        return np.ascontiguousarray(block)
    return block.reshape(shape[0], k[0], shape[1], k[1], shape[2], k[2]).mean(axis=(1, 3, 5))


def check_rules(lesion_rule: str, organ_rule: str) -> None:
    """Raise ``ValueError`` naming a resampling rule that does not exist."""
    if lesion_rule not in LESION_RULES:
        raise ValueError(f"lesion_rule={lesion_rule!r}; choose one of {LESION_RULES}")
    if organ_rule not in ORGAN_RULES:
        raise ValueError(f"organ_rule={organ_rule!r}; choose one of {ORGAN_RULES}")


def to_grid(case: Case, grid: Grid, *, align: bool = True, lesion_rule: str = "majority",
            organ_rule: str = "argmax") -> Case:
    """Resample ``case`` onto ``grid`` (patient-centred if ``align``); ``lesion_rule`` and
    ``organ_rule`` as in the module docstring."""
    check_rules(lesion_rule, organ_rule)
    shift = alignment_shift(case, grid) if align else np.zeros(3)
    src_lin = case.affine[:3, :3]
    axis_aligned = np.allclose(src_lin, np.diag(np.diag(src_lin)), atol=1e-6)
    if axis_aligned:  # whole source voxels: the fast exact path below applies more often
        step = np.abs(np.diag(src_lin))
        shift = np.round(shift / step) * step
    target = grid.affine.copy()
    target[:3, 3] -= shift  # target voxel -> source world
    vox = np.linalg.inv(case.affine) @ target  # target voxel -> source voxel
    matrix, offset = vox[:3, :3], vox[:3, 3]
    zoom_src = np.abs(matrix).max(axis=1)  # source voxels per target voxel, per source axis
    starts = offset - (np.diag(matrix) - 1) / 2
    blocky = (np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-6) and np.all(np.diag(matrix) > 0)
              and np.allclose(np.diag(matrix), np.round(np.diag(matrix)), atol=1e-6)
              and np.allclose(starts, np.round(starts), atol=1e-3))
    if blocky:
        st, zm = np.round(starts).astype(int), np.round(np.diag(matrix))

        def resample(arr, cval):
            return _block_resample(arr, st, zm, grid.shape, cval)
    else:

        def resample(arr, cval):
            return _resample(arr, matrix, offset, grid.shape, cval, zoom_src)

    ct = resample(case.ct, -1000.0)
    pet = None if case.pet is None else resample(case.pet, 0.0)
    organs = None
    if case.organs is not None:
        best = np.full(grid.shape, -1.0, dtype=np.float32)
        organs = np.zeros(grid.shape, dtype=np.uint8)
        thin = {ORGAN_IDS[name] for name in THIN_ORGANS} if organ_rule == "thin" else set()
        thin_fraction = {}
        for c in np.unique(case.organs):
            p = resample((case.organs == c).astype(np.float32), 1.0 if c == 0 else 0.0)
            better = p > best
            organs[better] = c
            best = np.maximum(best, p)
            if int(c) in thin:
                thin_fraction[int(c)] = p
        for c, p in thin_fraction.items():
            organs[p >= THIN_ORGAN_FRACTION - 1e-6] = c
    lesions = None
    if case.lesions is not None:
        lesions = (resample((case.lesions > 0).astype(np.float32), 0.0) >= 0.5).astype(np.uint8)
        if lesion_rule == "every":
            _mark_lost_lesions(case.lesions > 0, lesions, matrix, offset)
    meta = dict(case.meta)
    meta["alignment_shift_mm"] = shift.tolist()
    return Case(ct=ct, pet=pet, organs=organs, lesions=lesions, affine=grid.affine, demographics=case.demographics, meta=meta)


def _mark_lost_lesions(source: np.ndarray, target: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> None:
    """Mark in ``target`` (in place) each connected lesion of ``source`` that has no voxel there,
    at the target voxel that most of its source voxels fall in (target voxel v <-> source
    voxel ``matrix @ v + offset``)."""
    components, n = ndimage.label(source)
    if n == 0:
        return
    inverse = np.linalg.inv(matrix)
    for k, box in enumerate(ndimage.find_objects(components), start=1):
        src = np.argwhere(components[box] == k) + [b.start for b in box]
        vox = np.rint((src - offset) @ inverse.T).astype(int)
        inside = np.all((vox >= 0) & (vox < target.shape), axis=1)
        if not inside.any():
            continue  # the lesion lies outside the target field of view
        vox = vox[inside]
        if target[tuple(vox.T)].any():
            continue  # the majority rule kept part of it
        cells, counts = np.unique(vox, axis=0, return_counts=True)
        target[tuple(cells[np.argmax(counts)])] = 1


# --- cached training arrays --------------------------------------------------------------


class GridArrays:
    """A cohort resampled to one grid, as memory-mapped arrays.

    Attributes: ``ct``, ``pet`` (N, X, Y, Z; float16 on fine grids, float32 on coarse),
    ``organs``, ``lesions`` (uint8), ``cond`` (N, COND_DIM), ``has_organs`` (N,),
    ``case_ids``.
    """

    FILES = ("ct", "pet", "organs", "lesions", "cond", "has_organs")

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        info = json.loads((self.folder / "info.json").read_text())
        self.case_ids: list[str] = info["case_ids"]
        self.grid = Grid.from_dict(info["grid"])
        for name in self.FILES:
            setattr(self, name, np.load(self.folder / f"{name}.npy", mmap_mode="r"))

    def __len__(self) -> int:
        return len(self.case_ids)


def _cache_key(cohort: Cohort, grid: Grid, lesion_rule: str = "majority", organ_rule: str = "argmax") -> str:
    d = {"root": str(cohort.root.resolve()), "cases": cohort.case_ids, "grid": grid.to_dict(), "version": PREPROCESS_VERSION}
    if lesion_rule != "majority":  # caches made before a rule existed keep their keys
        d["lesion_rule"] = lesion_rule
    if organ_rule != "argmax":
        d["organ_rule"] = organ_rule
    blob = json.dumps(d, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def preprocess_cohort(data: str | Path, grid: Grid, cache_root: str | Path, *, progress: bool = True,
                      lesion_rule: str = "majority", organ_rule: str = "argmax") -> GridArrays:
    """Resample every case of a cohort onto ``grid`` once and cache the arrays.

    The cache lives in ``cache_root/<key>`` (key = cohort, cases, grid, version, lesion and
    organ rules) and is built in a temporary folder, filled case by case (resumable), then renamed.
    """
    check_rules(lesion_rule, organ_rule)
    cohort = Cohort(data)
    key = _cache_key(cohort, grid, lesion_rule, organ_rule)
    final = Path(cache_root) / key
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    with open(Path(cache_root) / ".lock", "w") as lock:  # one builder at a time (e.g. two stages training)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (final / "info.json").is_file():
                _build(cohort, grid, final, progress, lesion_rule, organ_rule)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return GridArrays(final)


def _build(cohort: Cohort, grid: Grid, final: Path, progress: bool, lesion_rule: str, organ_rule: str) -> None:
    key = final.name
    cache_root = final.parent
    work = Path(cache_root) / f".{key}.partial"
    work.mkdir(parents=True, exist_ok=True)
    n = len(cohort)
    fine = grid.num_voxels > 1_000_000
    fdtype = np.float16 if fine else np.float32
    arrays = {}
    for name, dtype, shape in [("ct", fdtype, grid.shape), ("pet", fdtype, grid.shape), ("organs", np.uint8, grid.shape),
                               ("lesions", np.uint8, grid.shape), ("cond", np.float32, (COND_DIM,)),
                               ("has_organs", np.uint8, ())]:
        path = work / f"{name}.npy"
        mode = "r+" if path.exists() else "w+"
        arrays[name] = np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=(n, *shape))
    done_path = work / "done.json"
    done = set(json.loads(done_path.read_text())) if done_path.exists() else set()
    for i, case_id in enumerate(progress_bar(cohort.case_ids, desc=f"preprocess {grid.shape}", disable=not progress)):
        if case_id in done:
            continue
        demo = cohort.demographics.get(case_id)
        case = to_grid(cohort.load(case_id), grid, lesion_rule=lesion_rule, organ_rule=organ_rule)
        if case.pet is None:
            raise ValueError(f"case {case_id}: no PET")
        arrays["ct"][i] = case.ct
        arrays["pet"][i] = case.pet
        arrays["organs"][i] = 0 if case.organs is None else case.organs
        arrays["lesions"][i] = 0 if case.lesions is None else case.lesions
        arrays["has_organs"][i] = case.organs is not None
        arrays["cond"][i] = demo.to_vector() if demo is not None else np.zeros(COND_DIM, np.float32)
        done.add(case_id)
        if len(done) % 10 == 0 or len(done) == n:  # checkpoint: data first, then the list
            for a in arrays.values():
                a.flush()
            atomic_write_json(done_path, sorted(done))
    for a in arrays.values():
        a.flush()
    del arrays
    atomic_write_json(work / "info.json", {"case_ids": cohort.case_ids, "grid": grid.to_dict(), "root": str(cohort.root),
                                           "version": PREPROCESS_VERSION, "lesion_rule": lesion_rule,
                                           "organ_rule": organ_rule})
    done_path.unlink(missing_ok=True)
    if final.exists():
        shutil.rmtree(final)
    os.replace(work, final)
