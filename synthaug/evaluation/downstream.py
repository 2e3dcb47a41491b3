"""Downstream benchmark: does synthaug data make a segmentation model better, and than what?

:func:`run_downstream` trains one fixed small MONAI 3D U-Net (CT + PET in; 12 organ
logits + 1 lesion logit out) under several data *arms* and scores it on held-out real
cases: lesion Dice, false-positive and false-negative volume (AutoPET's definitions, see
:mod:`synthaug.evaluation.segmentation`) and Dice per organ of the synthaug organ map.
Every arm uses the same recipe (iterations, batch, patch sampling, augmentation, learning
rate); only the training cases differ. Validation and test cases are always real.

Arms (stable names; ``docs/downstream.md`` says more):

- ``real_only``: the real cases with MONAI spatial + intensity augmentation (every arm gets it);
- ``real_copypaste``: + lesion copy-paste between the real cases (:mod:`synthaug.data.copypaste`);
- ``real_phantom``: + as many fresh phantom cases, demographics matched;
- ``real_synth_1to1`` / ``real_synth_1to2``: + 1 or 2 synthetic cases per real case, demographics matched;
- ``synth_only``: synthetic cases only (as many as the largest real cohort);
- ``shift``: real cases without one subgroup (default BMI >= 30), tested on that subgroup, once
  without (``shift_real_only``) and once with (``shift_synth``) synthetic cases of that subgroup;
- ``real_lesion_insertion``: + ``RandLesionInsertd`` once it exists (reported "not available" until then).

The output folder holds ``results.json``, ``report.md``, ``downstream.png`` and one JSON per
finished arm x n_real x seed run under ``runs/``: a re-run skips finished runs.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..core.demographics import Demographics, sample_population
from ..core.grid import Grid
from ..core.io import (
    META_FILE,
    ORGANS_FILE,
    PET_FILE,
    SEG_FILE,
    Cohort,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
    write_case,
    write_demographics_csv,
)
from ..core.labels import NUM_ORGAN_CLASSES
from .metrics import area_resize, to_ras
from .segmentation import lesion_metrics, nanmean, organ_dice

#: Arms a user can ask for (``shift`` runs two: ``shift_real_only`` and ``shift_synth``).
ARMS: tuple[str, ...] = ("real_only", "real_copypaste", "real_phantom", "real_synth_1to1", "real_synth_1to2",
                         "synth_only", "shift", "real_lesion_insertion")
#: Synthetic cases per real case of the mixed arms.
SYNTH_RATIO: dict[str, int] = {"real_synth_1to1": 1, "real_synth_1to2": 2}
TASKS: tuple[str, ...] = ("lesions", "organs")
#: CT window (HU) mapped to [-1, 1]; PET enters as log(1 + SUV) / PET_SCALE.
CT_WINDOW = (-1000.0, 1000.0)
PET_SCALE = 2.0
#: Voxels above this CT value (HU) count as body when cropping to the body's bounding box.
BODY_HU = -500.0
CROP_MARGIN = 2
SETTINGS_FILE = "downstream_settings.json"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
PLOT_FILE = "downstream.png"
#: Settings a re-run may change (finished runs stay valid); every other setting must match.
_FREE_SETTINGS = ("arms", "n_real", "seeds", "threads", "progress", "out")
#: What a benchmark writes into its output folder (a folder holding only these may be resumed).
_OWN_ENTRIES = ("synthetic", "phantom", "runs")
_SUBGROUP_RE = re.compile(r"^\s*(bmi|age|height_cm|weight_kg|sex)\s*(>=|<=|>|<|==|=)\s*([A-Za-z0-9.]+)\s*$")


@dataclass(frozen=True)
class DownstreamConfig:
    """Everything a downstream run depends on (saved in ``results.json``).

    Args:
        real: the real training cohort (AutoPET layout, or a ``synthaug prepare`` / ``phantom`` output).
        out: output folder (created; a re-run resumes).
        test: the held-out real test cohort; ``None`` splits ``test_fraction`` of ``real`` off.
        test_fraction: share of ``real`` used as test cases when ``test`` is ``None``.
        synthetic: a ``synthaug generate`` cache (or an AutoPET-layout cohort) of synthetic cases.
        weights: cascade weights to sample the synthetic cases from when ``synthetic`` is ``None``
            (``None``: the shipped demo weights); they go to ``<out>/synthetic/``.
        arms: arms to run (see :data:`ARMS`).
        n_real: numbers of real training cases (the low-data curve).
        seeds: one run per seed: the real subset, the network's initialisation and every draw.
        tasks: ``lesions`` and/or ``organs``.
        n_val: real validation cases split off ``real`` (scored, never trained on, nothing selected on them).
        spacing_mm: isotropic working grid every case is resampled to.
        patch: training patch (voxels of the working grid).
        batch_size, iterations, lr: the recipe (Adam, polynomial decay).
        channels: the U-Net's channels per level.
        lesion_patch_fraction: share of patches centred on a lesion voxel (where the case has one).
        copypaste_prob: probability that a ``real_copypaste`` patch gets pasted lesions.
        shift_group: the subgroup left out in ``shift``: ``bmi>=30``, ``age>70``, ``sex=F``, ...
        synth_seed: seed of generated synthetic and phantom cases and of the splits.
        sampler_steps: stage-1 sampler steps when generating (``None``: the weights' default).
        threads: torch threads (``None``: torch's default).
        progress: show progress bars.
    """

    real: str
    out: str
    test: str | None = None
    test_fraction: float = 0.3
    synthetic: str | None = None
    weights: str | None = None
    arms: tuple[str, ...] = ARMS
    n_real: tuple[int, ...] = (4, 8, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    tasks: tuple[str, ...] = TASKS
    n_val: int = 2
    spacing_mm: float = 8.0
    patch: tuple[int, int, int] = (32, 32, 32)
    batch_size: int = 2
    iterations: int = 300
    lr: float = 2e-3
    channels: tuple[int, ...] = (8, 16, 32, 64)
    lesion_patch_fraction: float = 1 / 3
    copypaste_prob: float = 0.5
    shift_group: str = "bmi>=30"
    synth_seed: int = 0
    sampler_steps: int | None = None
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("arms", "n_real", "seeds", "tasks", "patch", "channels"):
            value = getattr(self, name)
            if isinstance(value, (str, int)):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"arms: unknown arm(s) {unknown}; choose from {list(ARMS)}")
        if not self.arms:
            raise ValueError("arms: give at least one arm")
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms: {list(self.arms)} names an arm twice")
        bad_tasks = [t for t in self.tasks if t not in TASKS] or ([] if self.tasks else ["(none)"])
        if bad_tasks:
            raise ValueError(f"tasks: {bad_tasks} not allowed; choose from {list(TASKS)}")
        if not self.n_real or any(isinstance(n, bool) or int(n) != n or n < 1 for n in self.n_real):
            raise ValueError(f"n_real={list(self.n_real)}: give one or more integers >= 1")
        if not self.seeds or any(isinstance(s, bool) or int(s) != s or s < 0 for s in self.seeds):
            raise ValueError(f"seeds={list(self.seeds)}: give one or more integers >= 0")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.n_real)) != len(self.n_real):
            raise ValueError("seeds and n_real must not repeat a value")
        object.__setattr__(self, "n_real", tuple(sorted(int(n) for n in self.n_real)))
        if len(self.patch) != 3 or any(int(p) != p or p < 8 or p % 8 for p in self.patch):
            raise ValueError(f"patch={list(self.patch)}: three multiples of 8, each >= 8")
        if len(self.channels) < 2 or any(int(c) != c or c < 4 for c in self.channels):
            raise ValueError(f"channels={list(self.channels)}: two or more integers >= 4")
        if 2 ** (len(self.channels) - 1) > min(self.patch):
            raise ValueError(f"patch={list(self.patch)} is too small for {len(self.channels)} U-Net levels")
        checks = {
            "test_fraction": 0.0 < self.test_fraction < 1.0,
            "n_val": isinstance(self.n_val, int) and self.n_val >= 0,
            "spacing_mm": self.spacing_mm > 0,
            "batch_size": isinstance(self.batch_size, int) and self.batch_size >= 1,
            "iterations": isinstance(self.iterations, int) and self.iterations >= 1,
            "lr": 0.0 < self.lr < 1.0,
            "lesion_patch_fraction": 0.0 <= self.lesion_patch_fraction <= 1.0,
            "copypaste_prob": 0.0 <= self.copypaste_prob <= 1.0,
            "synth_seed": isinstance(self.synth_seed, int) and self.synth_seed >= 0,
            "sampler_steps": self.sampler_steps is None or self.sampler_steps >= 1,
            "threads": self.threads is None or self.threads >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is outside its allowed range")
        parse_subgroup(self.shift_group)
        if self.synthetic is not None and self.weights is not None:
            raise ValueError("synthetic and weights: give one synthetic source, not both")

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping) -> DownstreamConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# --- subgroups and demographic matching ------------------------------------------------------------


def parse_subgroup(text: str) -> Callable[[Demographics | None], bool]:
    """A predicate for ``field op value`` (fields bmi, age, height_cm, weight_kg, sex); unknown values are outside."""
    m = _SUBGROUP_RE.match(str(text))
    if not m:
        raise ValueError(f"shift_group={text!r}: expected e.g. 'bmi>=30', 'age>70' or 'sex=F'")
    name, op, raw = m.groups()
    if name == "sex":
        if op not in ("=", "==") or raw not in ("M", "F"):
            raise ValueError(f"shift_group={text!r}: sex takes '=' and M or F")
        return lambda d: d is not None and d.sex == raw
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"shift_group={text!r}: {raw!r} is not a number") from None
    compare = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less,
               "=": np.equal, "==": np.equal}[op]

    def member(d: Demographics | None) -> bool:
        v = None if d is None else (d.bmi if name == "bmi" else getattr(d, name))
        return v is not None and bool(compare(v, value))

    return member


def match_cases(targets: Sequence[Demographics | None], pool: Mapping[str, Demographics | None], per_target: int,
                exclude: Sequence[str] = ()) -> list[str]:
    """Pick ``per_target`` cases of ``pool`` per target, nearest demographics first, each case once.

    Rounds go over all targets in order (so 1:2 gives every target its nearest, then its second nearest).
    """
    from ..data.transforms import match_demographics

    free = [cid for cid in pool if cid not in set(exclude)]
    need = per_target * len(targets)
    if need > len(free):
        raise ValueError(f"synthetic: {need} matched cases needed, the source has {len(free)}")
    picked: list[str] = []
    for _ in range(per_target):
        for target in targets:
            demos = [pool[c] or Demographics(None, None, None, None) for c in free]
            best = free[int(match_demographics(target, demos, k=1)[0])]
            picked.append(best)
            free.remove(best)
    return picked


# --- cohorts: checks, identities, preparation --------------------------------------------------------


def _open(root: str | Path, what: str) -> Cohort:
    from ..data.cache import is_cache, open_cache_as_cohort

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: cohort folder not found: {root}")
    try:
        return open_cache_as_cohort(root) if is_cache(root) else Cohort(root)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{what}: {err}") from None
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def check_cohort(cohort: Cohort, what: str, tasks: Sequence[str]) -> None:
    """Refuse a cohort the benchmark cannot use: no cases, no SUV, no lesion (or organ) labels."""
    if len(cohort) == 0:
        raise ValueError(f"{what}: the cohort {cohort.root} is empty")
    entries = getattr(cohort, "entries", None)
    needs = [("pet", PET_FILE, "SUV")]
    needs.append(("lesions", SEG_FILE, "lesion labels"))
    if "organs" in tasks:
        needs.append(("organs", ORGANS_FILE, "organ labels (or leave 'organs' out of tasks)"))
    for cid in cohort.case_ids:
        for key, fname, label in needs:
            present = (key in (entries[cid].get("arrays") or ())) if entries is not None \
                else (cohort.path(cid) / fname).is_file()
            if not present:
                raise ValueError(f"{what}: case {cid} has no {label} ({fname})")


def case_identity(cohort: Cohort, case_id: str) -> str:
    """What makes two cases the same person: a phantom's own seed, a synthetic case's generator and seed,
    else the case id (real studies: AutoPET ids are unique)."""
    entries = getattr(cohort, "entries", None)
    meta = entries.get(case_id, {}) if entries is not None else {}
    if entries is None:
        path = cohort.path(case_id) / META_FILE
        if path.is_file():
            try:
                meta = json.loads(path.read_text())
            except json.JSONDecodeError:
                meta = {}
    if meta.get("source") == "phantom" and meta.get("case_seed") is not None:
        return f"phantom-seed:{int(meta['case_seed'])}"
    return case_id


def check_disjoint(test: Mapping[str, str], train: Mapping[str, str], what: str = "training") -> None:
    """Refuse test cases whose identity (see :func:`case_identity`) is also a training case; one line naming them."""
    by_identity = {ident: cid for cid, ident in train.items()}
    clash = sorted(f"{cid}" + (f" (= {what} {by_identity[ident]})" if by_identity[ident] != cid else "")
                   for cid, ident in test.items() if ident in by_identity)
    if clash:
        raise ValueError(f"test: {len(clash)} test case(s) are also {what} cases: {', '.join(clash)}")


def generator_training_ids(raw: Mapping | None) -> list[str] | None:
    """The case ids of the generator's training cohort where its weights JSON records them
    (``training_cohort.case_ids``, at the top level or under ``info``); ``None`` where it does not."""
    raw = raw or {}
    for cohort in (raw.get("training_cohort"), (raw.get("info") or {}).get("training_cohort")):
        if isinstance(cohort, Mapping) and isinstance(cohort.get("case_ids"), list):
            return [str(c) for c in cohort["case_ids"]]
    return None


def prepare_case(case, spacing_mm: float) -> dict:
    """One case on the isotropic working grid, cropped to the body's bounding box and normalised.

    Returns ``image`` (2, X, Y, Z) float32 (CT in [-1, 1], log(1 + SUV) / PET_SCALE), ``organs`` and
    ``lesions`` (uint8; ``organs`` may be ``None``), ``voxel_ml`` and ``demographics``.
    CT and PET are area-averaged; organs take the label with the largest share of the new voxel and
    lesions the voxels at least half covered by lesion.
    """
    ct, spacing = to_ras(case.ct, case.affine)
    shape = tuple(max(1, int(round(n * s / spacing_mm))) for n, s in zip(ct.shape, spacing))
    ct = area_resize(ct, shape)
    pet = area_resize(to_ras(case.pet, case.affine)[0], shape)
    lesions = area_resize(to_ras(case.lesions, case.affine)[0] > 0, shape) >= 0.5
    organs = None
    if case.organs is not None:
        src = to_ras(case.organs, case.affine)[0]
        best = np.full(shape, -1.0, np.float32)
        organs = np.zeros(shape, np.uint8)
        for label in np.unique(src):
            share = area_resize(src == label, shape)
            organs[share > best] = label
            best = np.maximum(best, share)
    body = (ct > BODY_HU) | lesions | (organs > 0 if organs is not None else False)
    if body.any():
        idx = np.argwhere(body)
        lo = np.maximum(idx.min(0) - CROP_MARGIN, 0)
        hi = np.minimum(idx.max(0) + CROP_MARGIN + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        ct, pet, lesions = ct[box], pet[box], lesions[box]
        organs = organs[box] if organs is not None else None
    image = np.stack([np.clip(ct, *CT_WINDOW) / CT_WINDOW[1], np.log1p(np.clip(pet, 0, None)) / PET_SCALE])
    return {"image": image.astype(np.float32), "organs": organs, "lesions": lesions.astype(np.uint8),
            "voxel_ml": spacing_mm**3 / 1000.0, "demographics": case.demographics}


# --- the model and its recipe ------------------------------------------------------------------------


def build_model(cfg: DownstreamConfig):
    """The one segmentation network of every arm: MONAI ``UNet``, 2 channels in, 12 organ + 1 lesion logits out."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=2, out_channels=NUM_ORGAN_CLASSES + 1, channels=cfg.channels,
                strides=(2,) * (len(cfg.channels) - 1), num_res_units=1, norm="instance")


def augmentation(seed: int):
    """The MONAI augmentation of every arm: left-right flip, small affine, intensity scale/shift, noise."""
    from monai.transforms import (
        Compose,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ("image", "organs", "lesions")
    aug = Compose([
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandAffined(keys, prob=0.25, rotate_range=(0.15, 0.15, 0.15), scale_range=(0.1, 0.1, 0.1),
                    mode=("bilinear", "nearest", "nearest"), padding_mode="border"),
        RandScaleIntensityd("image", factors=0.1, prob=0.3),
        RandShiftIntensityd("image", offsets=0.05, prob=0.3),
        RandGaussianNoised("image", std=0.02, prob=0.2),
    ])
    aug.set_random_state(seed=seed)
    return aug


def crop_patch(item: Mapping, centre: Sequence[int], patch: Sequence[int]) -> dict[str, np.ndarray]:
    """The ``patch`` around ``centre`` (padded with air / background where it leaves the volume)."""
    image = item["image"]
    shape = image.shape[1:]
    lo = [int(c) - p // 2 for c, p in zip(centre, patch)]
    src = tuple(slice(max(a, 0), min(a + p, n)) for a, p, n in zip(lo, patch, shape))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, lo))
    out_image = np.zeros((2, *patch), np.float32)
    out_image[0] = -1.0
    out_image[(slice(None), *dst)] = image[(slice(None), *src)]
    out = {"image": out_image, "lesions": np.zeros(patch, np.uint8), "organs": np.zeros(patch, np.uint8)}
    out["lesions"][dst] = item["lesions"][src]
    if item.get("organs") is not None:
        out["organs"][dst] = item["organs"][src]
    return out


def sample_patch(item: Mapping, cfg: DownstreamConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A training patch: centred on a lesion voxel with probability ``lesion_patch_fraction``, else anywhere."""
    lesion_voxels = item.get("_lesion_voxels")
    if lesion_voxels is None:
        lesion_voxels = np.argwhere(item["lesions"] > 0)
    if len(lesion_voxels) and rng.random() < cfg.lesion_patch_fraction:
        centre = lesion_voxels[int(rng.integers(len(lesion_voxels)))]
    else:
        centre = [int(rng.integers(n)) for n in item["image"].shape[1:]]
    return crop_patch(item, centre, cfg.patch)


def lesion_insertion_transform(seed: int):
    """Hook for arm 7: the ``RandLesionInsertd`` transform once it exists, else ``None`` ("not available").

    When the transform lands, build it here for the patch dictionaries of :func:`sample_patch`
    (keys ``image`` (CT, PET), ``organs``, ``lesions``) and seed it from ``seed``.
    """
    try:
        from ..data import transforms
    except ImportError:  # pragma: no cover - the package always has it
        return None
    insert = getattr(transforms, "RandLesionInsertd", None)
    if insert is None:
        return None
    raise NotImplementedError("RandLesionInsertd exists now: wire it into lesion_insertion_transform")


def train_model(items: Sequence[Mapping], cfg: DownstreamConfig, seed: int, *,
                patch_hook: Callable[[dict, Mapping, np.random.Generator], dict] | None = None):
    """Train the network on ``items`` with the fixed recipe; returns ``(model, losses)``.

    Each batch element draws a case uniformly from ``items``, then a patch; ``patch_hook`` (copy-paste,
    lesion insertion) changes the patch before the MONAI augmentation.
    """
    import torch
    from monai.losses import DiceCELoss

    if not items:
        raise ValueError("no training cases")
    torch.manual_seed(seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A1]))
    model = build_model(cfg)
    aug = augmentation(seed)
    organ_loss = DiceCELoss(to_onehot_y=True, softmax=True)
    lesion_loss = DiceCELoss(sigmoid=True, batch=True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=cfg.iterations, power=0.9)
    for item in items:
        if "_lesion_voxels" not in item:
            item["_lesion_voxels"] = np.argwhere(item["lesions"] > 0)
    losses = []
    model.train()
    for _ in range(cfg.iterations):
        batch = []
        for _ in range(cfg.batch_size):
            item = items[int(rng.integers(len(items)))]
            patch = sample_patch(item, cfg, rng)
            if patch_hook is not None:
                patch = patch_hook(patch, item, rng)
            d = aug({"image": torch.from_numpy(patch["image"]),
                     "organs": torch.from_numpy(patch["organs"][None].astype(np.float32)),
                     "lesions": torch.from_numpy(patch["lesions"][None].astype(np.float32))})
            batch.append(d)
        image = torch.stack([torch.as_tensor(d["image"]) for d in batch])
        organs = torch.stack([torch.as_tensor(d["organs"]) for d in batch]).round()
        lesions = torch.stack([torch.as_tensor(d["lesions"]) for d in batch]).round()
        logits = model(image.as_subclass(torch.Tensor))
        loss = 0.0
        if "lesions" in cfg.tasks:
            loss = loss + lesion_loss(logits[:, NUM_ORGAN_CLASSES:], lesions.as_subclass(torch.Tensor))
        if "organs" in cfg.tasks:
            loss = loss + organ_loss(logits[:, :NUM_ORGAN_CLASSES], organs.as_subclass(torch.Tensor))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.eval(), losses


def predict(model, image: np.ndarray, cfg: DownstreamConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sliding-window prediction of one prepared case: ``(organ label map, lesion mask)``."""
    import torch
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        logits = sliding_window_inference(torch.from_numpy(image)[None], roi_size=cfg.patch, sw_batch_size=4,
                                          predictor=model, overlap=0.25, mode="gaussian")
    logits = logits.as_subclass(torch.Tensor)[0]
    organs = logits[:NUM_ORGAN_CLASSES].argmax(0).numpy().astype(np.uint8)
    lesions = (logits[NUM_ORGAN_CLASSES] > 0).numpy()
    return organs, lesions


def score(model, cases: Mapping[str, Mapping], cfg: DownstreamConfig) -> dict:
    """Per-case metrics on ``cases`` and their aggregate (see :func:`aggregate`)."""
    per_case = {}
    for cid, item in cases.items():
        organs, lesions = predict(model, item["image"], cfg)
        row = {}
        if "lesions" in cfg.tasks:
            row.update(lesion_metrics(lesions, item["lesions"] > 0, item["voxel_ml"]))
        if "organs" in cfg.tasks and item.get("organs") is not None:
            row["organ_dice"] = organ_dice(organs, item["organs"])
        per_case[cid] = row
    return {"per_case": per_case, "aggregate": aggregate(per_case)}


def aggregate(per_case: Mapping[str, Mapping]) -> dict:
    """AutoPET-style aggregate: Dice and FN volume over cases with lesions, FP volume over all cases;
    organ Dice per organ over the cases holding it, and their mean."""
    rows = list(per_case.values())
    out: dict = {"n_cases": len(rows)}
    if rows and "fp_ml" in rows[0]:
        positive = [r for r in rows if r["true_ml"] > 0]
        out.update({"lesion_dice": nanmean(r["dice"] for r in positive),
                    "fp_ml": nanmean(r["fp_ml"] for r in rows),
                    "fn_ml": nanmean(r["fn_ml"] for r in positive),
                    "n_lesion_cases": len(positive)})
    organ_rows = [r["organ_dice"] for r in rows if "organ_dice" in r]
    if organ_rows:
        per_organ = {name: nanmean(r[name] for r in organ_rows) for name in organ_rows[0]}
        out["organ_dice"] = per_organ
        out["organ_dice_mean"] = nanmean(per_organ.values())
    return out


# --- the plan of runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One arm x n_real x seed training run."""

    arm: str
    n_real: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.arm}__n{self.n_real}__s{self.seed}"


#: Arms whose runs need generated synthetic cases.
SYNTHETIC_ARMS = ("real_synth_1to1", "real_synth_1to2", "synth_only", "shift_synth")


def plan_runs(cfg: DownstreamConfig, n_shift: int | None = None) -> list[Run]:
    """Every run: those without synthetic cases first (they need no sampling), then the others; seed by seed
    within each group, so that a partial run already compares the arms on the first seeds."""
    runs = []
    for seed in cfg.seeds:
        for n in cfg.n_real:
            runs += [Run(arm, n, seed) for arm in cfg.arms if arm not in ("synth_only", "shift")]
        if "synth_only" in cfg.arms:
            runs.append(Run("synth_only", 0, seed))
        if "shift" in cfg.arms:
            n = n_shift if n_shift is not None else max(cfg.n_real)
            runs += [Run("shift_real_only", n, seed), Run("shift_synth", n, seed)]
    return [r for r in runs if r.arm not in SYNTHETIC_ARMS] + [r for r in runs if r.arm in SYNTHETIC_ARMS]


def real_subset(pool: Sequence[str], n: int, seed: int) -> list[str]:
    """The first ``n`` of a seed's permutation of ``pool``: nested (4 of 8 are the first 4), shared by every arm."""
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5B5])).permutation(len(pool))
    return [pool[i] for i in order[:n]]


# --- generated sources ---------------------------------------------------------------------------------


def _case_seed(seed: int, index: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index), stream]).generate_state(1, dtype=np.uint32)[0])


def make_phantom_cohort(root: Path, like: Mapping[str, Demographics], n: int, grid: Grid, seed: int,
                        progress: bool = True) -> Cohort:
    """``n`` fresh phantom cases with demographics drawn like ``like`` on ``grid`` (resumable)."""
    from ..core.progress import progress_bar
    from ..phantom import impute_demographics, make_phantom

    demos = sample_population(n, seed, like=like)
    ids = [f"phantom_arm_{i:05d}" for i in range(n)]
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    todo = [i for i, cid in enumerate(ids) if not (root / cid / META_FILE).is_file()]
    for i in progress_bar(todo, desc="phantom arm cases", unit="case", disable=not progress):
        d = demos[i] if demos[i].is_complete else impute_demographics(demos[i], _case_seed(seed, i, 2))
        demos[i] = d
        case = make_phantom(d, grid=grid, seed=_case_seed(seed, i, 1))
        case.meta["case_seed"] = _case_seed(seed, i, 1)
        write_case(root, ids[i], case, overwrite=True)
    write_demographics_csv(root / "demographics.csv", dict(zip(ids, demos)))
    return Cohort(root)


def make_synthetic_cache(root: Path, generator, like: Mapping[str, Demographics], n: int, seed: int,
                         progress: bool = True) -> Cohort:
    """``n`` synthetic cases drawn like ``like`` into a ``synthaug generate`` cache (resumable)."""
    from ..data.cache import generate_cache, merge_manifest, open_cache_as_cohort, plan_cases

    plan = plan_cases(n, seed, like=dict(like))
    generate_cache(root, generator, plan, fmt="npy", seed=seed, demographics_source="downstream",
                   progress=progress)
    merge_manifest(root, n=n)
    return open_cache_as_cohort(root)


# --- the benchmark -----------------------------------------------------------------------------------------


@dataclass
class _Data:
    """The cohorts of one benchmark, prepared on the working grid (filled by :func:`_load_data`)."""

    cfg: DownstreamConfig
    real: Cohort
    test: Cohort
    pool: list[str]
    val: list[str]
    test_ids: list[str]
    shift_test: list[str]
    shift_pool: list[str]
    cache: dict[tuple[str, str], dict] = field(default_factory=dict)

    def item(self, source: str, cohort: Cohort, cid: str) -> dict:
        key = (source, cid)
        if key not in self.cache:
            self.cache[key] = prepare_case(cohort.load(cid), self.cfg.spacing_mm)
        return self.cache[key]


def _split(cfg: DownstreamConfig) -> tuple[Cohort, Cohort, list[str], list[str], list[str]]:
    real = _open(cfg.real, "real")
    check_cohort(real, "real", cfg.tasks)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.synth_seed, 0x7E5]))
    ids = list(real.case_ids)
    order = [ids[i] for i in rng.permutation(len(ids))]
    if cfg.test is None:
        n_test = max(1, int(round(cfg.test_fraction * len(ids))))
        test, test_ids, order = real, sorted(order[:n_test]), order[n_test:]
    else:
        test = _open(cfg.test, "test")
        check_cohort(test, "test", cfg.tasks)
        test_ids = list(test.case_ids)
    val, pool = sorted(order[: cfg.n_val]), order[cfg.n_val:]
    if max(cfg.n_real) > len(pool):
        raise ValueError(f"n_real={max(cfg.n_real)} exceeds the {len(pool)} real training cases left "
                         f"after {len(ids) - len(pool)} test/validation cases")
    train_keys = {c: case_identity(real, c) for c in pool + val}
    check_disjoint({c: case_identity(test, c) for c in test_ids}, train_keys)
    return real, test, sorted(pool), val, test_ids


def _load_data(cfg: DownstreamConfig) -> _Data:
    real, test, pool, val, test_ids = _split(cfg)
    member = parse_subgroup(cfg.shift_group)
    shift_test = [c for c in test_ids if member(test.demographics.get(c))]
    shift_pool = [c for c in pool if not member(real.demographics.get(c))]
    if "shift" in cfg.arms:
        if not shift_test:
            raise ValueError(f"shift_group={cfg.shift_group!r}: no test case is in this subgroup")
        if not any(member(real.demographics.get(c)) for c in pool):
            raise ValueError(f"shift_group={cfg.shift_group!r}: no real training case is in this subgroup")
        if not shift_pool:
            raise ValueError(f"shift_group={cfg.shift_group!r}: every real training case is in this subgroup")
    return _Data(cfg, real, test, pool, val, test_ids, shift_test, shift_pool)


def _shift_sizes(cfg: DownstreamConfig, data: _Data) -> tuple[int, int]:
    """Real cases of the shift arms (the largest n_real that the cases outside the subgroup allow) and synthetic ones."""
    n = min(max(cfg.n_real), len(data.shift_pool))
    return n, max(1, n // 2)


def _synthetic_sources(cfg: DownstreamConfig, data: _Data) -> tuple[Cohort | None, Cohort | None, dict]:
    """The synthetic cohorts (like the real cohort; like its subgroup) and the generator's record."""
    wants_like = any(a in cfg.arms for a in ("real_synth_1to1", "real_synth_1to2", "synth_only"))
    wants_shift = "shift" in cfg.arms
    if not (wants_like or wants_shift):
        return None, None, {}
    n_like = max(cfg.n_real) * max([SYNTH_RATIO.get(a, 1) for a in cfg.arms if a in SYNTH_RATIO or a == "synth_only"]
                                   or [1])
    n_shift = _shift_sizes(cfg, data)[1] if wants_shift else 0
    member = parse_subgroup(cfg.shift_group)
    real_demos = {c: data.real.demographics[c] for c in data.pool if c in data.real.demographics}
    if cfg.synthetic is not None:
        source = _open(cfg.synthetic, "synthetic")
        check_cohort(source, "synthetic", cfg.tasks)
        header = getattr(source, "manifest", {})
        record = {"source": f"cohort:{Path(cfg.synthetic).resolve()}",
                  "sha256": header.get("generator_sha256"), "settings": header.get("settings")}
        in_group = [c for c in source.case_ids if member(source.demographics.get(c))]
        if wants_shift and len(in_group) < n_shift:
            raise ValueError(f"synthetic: {len(in_group)} case(s) in shift_group {cfg.shift_group!r}, "
                             f"the shift arm needs {n_shift}")
        return source, source, record
    from ..sampling.cascade import DEMO_WEIGHTS, CascadedSampler

    generator = CascadedSampler.from_pretrained(cfg.weights)
    generator.configure(steps=cfg.sampler_steps)
    folder = Path(cfg.weights) if cfg.weights else DEMO_WEIGHTS
    info = {}
    for stage in ("global", "sr"):
        path = (folder.parent if folder.is_file() else folder) / f"{stage}.json"
        if path.is_file():
            info[stage] = json.loads(path.read_text())
    record = {"source": f"weights:{cfg.weights or 'shipped demo weights'}", "sha256": generator.sha256,
              "settings": dict(generator.settings),
              "weights_sha256": {s: v.get("sha256") for s, v in info.items()},
              "training_cohort": {s: generator_training_ids(v) for s, v in info.items()},
              "training_population": {s: v.get("training_population") for s, v in info.items()}}
    root = Path(cfg.out) / "synthetic"
    like = make_synthetic_cache(root / "like_real", generator, real_demos, n_like, cfg.synth_seed,
                                cfg.progress) if wants_like else None
    group = {c: d for c, d in real_demos.items() if member(d)}
    shift = make_synthetic_cache(root / "shift", generator, group, n_shift, cfg.synth_seed + 1,
                                 cfg.progress) if wants_shift else None
    return like, shift, record


def _settings(cfg: DownstreamConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in _FREE_SETTINGS}


def _check_settings(out: Path, cfg: DownstreamConfig) -> None:
    path = out / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(_settings(cfg)) if old.get(k) != _settings(cfg).get(k))
        if diff:
            raise ValueError(f"out: {out} holds a downstream run with other settings ({', '.join(diff)}); "
                             "use a new output folder or the same settings to resume")
    elif out.is_dir() and any(p.name not in _OWN_ENTRIES for p in out.iterdir()):
        raise FileExistsError(f"out: {out} is a non-empty folder that holds no downstream run; choose another")


def run_downstream(config: DownstreamConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) every arm x n_real x seed of ``config``; return and write ``results.json``.

    Everything is checked before any training: cohorts (cases, SUV, labels), disjoint test ids
    (also from the generator's training cohort where its weights JSON records it), arms, sizes.
    Finished runs (``<out>/runs/<arm>__n<N>__s<seed>.json``) are not redone.
    """
    import torch

    from ..core.progress import progress_bar

    cfg = config
    out = Path(cfg.out)
    data = _load_data(cfg)
    unavailable = []
    sources: dict = {}

    def synthetic() -> tuple[Cohort | None, Cohort | None]:
        """The synthetic sources, opened (or sampled) when the first run needs them."""
        if not sources:
            like, shift, record = _synthetic_sources(cfg, data)
            for stage, ids in (record.get("training_cohort") or {}).items():
                if ids:
                    check_disjoint({c: c for c in data.test_ids}, {c: c for c in ids},
                                   f"generator ({stage} stage) training")
            sources.update(like=like, shift=shift, record=record)
        return sources["like"], sources["shift"]

    if cfg.synthetic is not None:
        synthetic()  # a given source is checked before anything is written; sampling waits for the first run needing it
    _check_settings(out, cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SETTINGS_FILE, _settings(cfg))
    n_shift, k_shift = _shift_sizes(cfg, data)

    phantom = None
    if "real_phantom" in cfg.arms:
        first = data.real.load(data.pool[0])
        spacing = np.linalg.norm(np.asarray(first.affine)[:3, :3], axis=0)
        grid = Grid(first.ct.shape, tuple(float(s) for s in spacing))
        like = {c: data.real.demographics[c] for c in data.pool}
        phantom = make_phantom_cohort(out / "phantom", like, max(cfg.n_real), grid, cfg.synth_seed + 2, cfg.progress)
    runs = plan_runs(cfg, n_shift)
    (out / "runs").mkdir(exist_ok=True)
    remove_stale_temporaries(out / "runs")
    todo = [r for r in runs if not (out / "runs" / f"{r.key}.json").is_file()]
    log(f"downstream: {len(runs)} runs, {len(runs) - len(todo)} already finished -> {out}")
    bar = progress_bar(total=len(runs), initial=len(runs) - len(todo), desc="downstream", unit="run",
                       disable=not cfg.progress)
    try:
        for run in todo:
            start = time.time()
            synth_like, synth_shift = synthetic() if run.arm in SYNTHETIC_ARMS else (None, None)
            record = _one_run(run, cfg, data, phantom, synth_like, synth_shift, k_shift)
            record["seconds"] = round(time.time() - start, 1)
            if record["status"] == "done":
                atomic_write_json(out / "runs" / f"{run.key}.json", record)
            else:  # not written: a later re-run tries again (e.g. once RandLesionInsertd exists)
                unavailable.append(record)
            bar.update(1)
            agg = (record.get("test") or {}).get("aggregate") or {}
            log(f"{run.key}: {record['status']}" + (
                f", lesion Dice {agg.get('lesion_dice', math.nan):.3f}, organ Dice {agg.get('organ_dice_mean', math.nan):.3f}"
                f" ({record['seconds']:.0f} s)" if record["status"] == "done" else ""))
    finally:
        bar.close()
    if any(r.arm in SYNTHETIC_ARMS for r in runs):
        synthetic()
    results = collect_results(out, cfg, data, sources.get("record", {}), runs, unavailable)
    atomic_write_json(out / RESULTS_FILE, results)
    write_report(out)
    return results


def _one_run(run: Run, cfg: DownstreamConfig, data: _Data, phantom: Cohort | None, synth_like: Cohort | None,
             synth_shift: Cohort | None, k_shift: int) -> dict:
    """Train and score one run; the record that goes to ``runs/<key>.json``."""
    record = {"arm": run.arm, "n_real": run.n_real, "seed": run.seed, "iterations": cfg.iterations,
              "batch_size": cfg.batch_size}
    insertion = lesion_insertion_transform(run.seed) if run.arm == "real_lesion_insertion" else None
    if run.arm == "real_lesion_insertion" and insertion is None:
        return {**record, "status": "not available", "reason": "RandLesionInsertd does not exist yet"}
    shift = run.arm.startswith("shift_")
    pool = data.shift_pool if shift else data.pool
    real_ids = [] if run.arm == "synth_only" else real_subset(pool, run.n_real, run.seed)
    items = [data.item("real", data.real, c) for c in real_ids]
    extra: dict[str, list[str]] = {}
    targets = [data.real.demographics.get(c) for c in real_ids]
    if run.arm == "real_phantom":
        extra["phantom"] = match_cases(targets, phantom.demographics, 1)
        items += [data.item("phantom", phantom, c) for c in extra["phantom"]]
    elif run.arm in SYNTH_RATIO:
        extra["synthetic"] = match_cases(targets, synth_like.demographics, SYNTH_RATIO[run.arm])
    elif run.arm == "synth_only":
        ids = list(synth_like.case_ids)
        order = np.random.default_rng(np.random.SeedSequence([run.seed, 0x5E7])).permutation(len(ids))
        extra["synthetic"] = sorted(ids[i] for i in order[: max(cfg.n_real)])
    elif run.arm == "shift_synth":
        member = parse_subgroup(cfg.shift_group)
        group = {c: d for c, d in synth_shift.demographics.items() if member(d)}
        real_group = [data.real.demographics[c] for c in data.pool if member(data.real.demographics.get(c))]
        order = np.random.default_rng(np.random.SeedSequence([run.seed, 0x5F1])).permutation(len(real_group))
        targets = [real_group[order[i % len(order)]] for i in range(k_shift)]
        extra["synthetic"] = match_cases(targets, group, 1)
    if "synthetic" in extra:
        source = synth_shift if run.arm == "shift_synth" else synth_like
        items += [data.item(f"synthetic:{source.root}", source, c) for c in extra["synthetic"]]

    hook = None
    if run.arm == "real_copypaste":
        from ..data.copypaste import LesionBank, random_paste

        bank = LesionBank({c: {"ct": it["image"][0], "pet": it["image"][1], "lesions": it["lesions"]}
                           for c, it in zip(real_ids, items)})
        donor_of = {id(it): c for c, it in zip(real_ids, items)}

        def hook(patch: dict, item: Mapping, rng: np.random.Generator) -> dict:
            flat = {"ct": patch["image"][0], "pet": patch["image"][1], "lesions": patch["lesions"],
                    "organs": patch["organs"]}
            pasted = random_paste(flat, bank, rng, prob=cfg.copypaste_prob, exclude=(donor_of.get(id(item)),))
            return {"image": np.stack([pasted["ct"], pasted["pet"]]), "lesions": pasted["lesions"],
                    "organs": pasted["organs"]}

    model, losses = train_model(items, cfg, run.seed, patch_hook=hook)
    test_ids = data.shift_test if shift else data.test_ids
    test = score(model, {c: data.item("test", data.test, c) for c in test_ids}, cfg)
    val = score(model, {c: data.item("real", data.real, c) for c in data.val}, cfg) if data.val else None
    return {**record, "status": "done", "train_real": real_ids, "train_extra": extra,
            "n_train": len(items), "test_ids": list(test_ids), "test": test,
            "val": None if val is None else val["aggregate"],
            "loss_first": float(np.mean(losses[: max(1, len(losses) // 10)])),
            "loss_last": float(np.mean(losses[-max(1, len(losses) // 10):]))}


# --- results and report -----------------------------------------------------------------------------------

#: Aggregated metrics in the summary and the report: (key, label, higher is better).
METRICS: tuple[tuple[str, str, bool], ...] = (("lesion_dice", "lesion Dice", True), ("fp_ml", "FP vol (ml)", False),
                                              ("fn_ml", "FN vol (ml)", False), ("organ_dice_mean", "organ Dice", True))


def interval95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval ``(mean, low, high)`` over seeds (``nan`` bounds for fewer than 2 values)."""
    from scipy import stats

    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if arr.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, mean - half, mean + half


def summarise(records: Sequence[Mapping]) -> list[dict]:
    """Per arm x n_real: mean and 95 % interval over seeds of each metric, and the paired difference
    to ``real_only`` (``shift_real_only`` for ``shift_synth``) over the same seeds."""
    done = [r for r in records if r.get("status") == "done"]
    cells: dict[tuple[str, int], dict[int, Mapping]] = {}
    for r in done:
        cells.setdefault((r["arm"], r["n_real"]), {})[r["seed"]] = r["test"]["aggregate"]
    rows = []
    for (arm, n), by_seed in sorted(cells.items(), key=lambda kv: (ARM_ORDER.get(kv[0][0], 99), kv[0][1])):
        row: dict = {"arm": arm, "n_real": n, "seeds": sorted(by_seed)}
        base_arm = "shift_real_only" if arm == "shift_synth" else "real_only"
        base = cells.get((base_arm, n)) if arm not in ("real_only", "shift_real_only", "synth_only") else None
        for key, _, _ in METRICS:
            vals = [agg.get(key) for agg in by_seed.values()]
            row[key] = dict(zip(("mean", "low", "high"), interval95(vals)))
            if base:
                paired = [by_seed[s].get(key) - base[s].get(key) for s in by_seed
                          if s in base and by_seed[s].get(key) is not None and base[s].get(key) is not None]
                row[f"{key}_vs_{base_arm}"] = dict(zip(("mean", "low", "high"), interval95(paired)))
        rows.append(row)
    for r in records:
        if r.get("status") == "not available" and not any(row["arm"] == r["arm"] for row in rows):
            rows.append({"arm": r["arm"], "n_real": None, "status": "not available", "reason": r.get("reason")})
    return rows


ARM_ORDER = {a: i for i, a in enumerate(("real_only", "real_copypaste", "real_phantom", "real_synth_1to1",
                                         "real_synth_1to2", "real_lesion_insertion", "synth_only",
                                         "shift_real_only", "shift_synth"))}


def collect_results(out: Path, cfg: DownstreamConfig, data: _Data, generator: Mapping, runs: Sequence[Run],
                    unavailable: Sequence[Mapping] = ()) -> dict:
    """``results.json``: the arguments, cohort ids, the generator, every run and the summary."""
    from .. import __version__

    records = []
    for run in runs:
        path = out / "runs" / f"{run.key}.json"
        if path.is_file():
            records.append(json.loads(path.read_text()))
    iterations = sorted({r["iterations"] for r in records})
    n_done = len(records)
    records += list(unavailable)
    return {
        "synthaug_version": __version__,
        "arguments": cfg.to_dict(),
        "cohorts": {"real": str(Path(cfg.real).resolve()), "test": str(Path(cfg.test or cfg.real).resolve()),
                    "train_pool_ids": data.pool, "val_ids": data.val, "test_ids": data.test_ids,
                    "shift_test_ids": data.shift_test, "shift_pool_ids": data.shift_pool,
                    "test_disjoint_from_training": True},
        "generator": dict(generator),
        "working_grid": {"spacing_mm": cfg.spacing_mm, "crop": "body bounding box (CT > -500 HU) + 2 voxels"},
        "iterations": iterations,
        "runs": records,
        "summary": summarise(records),
        "complete": n_done == len(runs) - len(unavailable),
    }


def _fmt(cell: Mapping | None, digits: int = 3) -> str:
    if not cell or cell.get("mean") is None or not np.isfinite(cell["mean"]):
        return "-"
    if cell.get("low") is None or not np.isfinite(cell["low"]):
        return f"{cell['mean']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} [{cell['low']:.{digits}f}, {cell['high']:.{digits}f}]"


def report_markdown(results: Mapping, plot_name: str | None = PLOT_FILE) -> str:
    """The report: settings, the table (mean [95 % interval] over seeds) and paired differences."""
    args = results["arguments"]
    gen = results.get("generator") or {}
    lines = ["# synthaug downstream", "",
             f"Model: MONAI UNet channels {args['channels']}, {args['iterations']} iterations x batch "
             f"{args['batch_size']}, patch {args['patch']} at {args['spacing_mm']} mm, Adam lr {args['lr']}; "
             f"seeds {args['seeds']}; tasks {args['tasks']}.",
             f"Test: {len(results['cohorts']['test_ids'])} real cases (shift subgroup "
             f"`{args['shift_group']}`: {len(results['cohorts']['shift_test_ids'])}); "
             f"validation: {len(results['cohorts']['val_ids'])} real cases.",
             f"Generator: {gen.get('source', '-')} (sha256 `{gen.get('sha256') or '-'}`).", ""]
    if not results.get("complete"):
        lines += ["**Incomplete**: some runs have not finished; re-run the same command to resume.", ""]
    lines += ["Mean over seeds [95 % t-interval]. Dice and FN volume over test cases with lesions, FP volume over "
              "all test cases; organ Dice is the mean over the 11 organs.", "",
              "| arm | n real | seeds | " + " | ".join(label for _, label, _ in METRICS) + " |",
              "|---|---|---|" + "---|" * len(METRICS)]
    for row in results["summary"]:
        if row.get("status") == "not available":
            lines.append(f"| {row['arm']} | - | - | not available ({row.get('reason')}) |" + " |" * (len(METRICS) - 1))
            continue
        lines.append(f"| {row['arm']} | {row['n_real']} | {len(row['seeds'])} | "
                     + " | ".join(_fmt(row[k], 1 if k.endswith("_ml") else 3) for k, _, _ in METRICS) + " |")
    lines += ["", "Paired differences to the real-only arm at the same n real and seed "
              "(shift_synth: to shift_real_only), mean [95 % interval]:", "",
              "| arm | n real | Δ lesion Dice | Δ FP vol (ml) | Δ FN vol (ml) | Δ organ Dice |", "|---|---|---|---|---|---|"]
    for row in results["summary"]:
        deltas = [row.get(f"{k}_vs_{'shift_real_only' if row['arm'] == 'shift_synth' else 'real_only'}")
                  for k, _, _ in METRICS]
        if any(deltas):
            lines.append(f"| {row['arm']} | {row['n_real']} | "
                         + " | ".join(_fmt(d, 1 if k.endswith('_ml') else 3) for d, (k, _, _) in zip(deltas, METRICS))
                         + " |")
    if plot_name:
        lines += ["", f"![Dice vs number of real cases]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot_results(results: Mapping, path: str | Path) -> Path:
    """Lesion and organ Dice vs number of real training cases, one line per arm with 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["summary"] if r.get("status") != "not available"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label) in zip(axes, (("lesion_dice", "lesion Dice"), ("organ_dice_mean", "organ Dice (mean)"))):
        for arm in sorted({r["arm"] for r in rows}, key=lambda a: ARM_ORDER.get(a, 99)):
            cells = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["n_real"])
            x = np.array([r["n_real"] for r in cells], float)
            mean = np.array([r[key]["mean"] for r in cells], float)
            low = np.array([r[key]["low"] for r in cells], float)
            high = np.array([r[key]["high"] for r in cells], float)
            err = np.vstack([np.nan_to_num(mean - low), np.nan_to_num(high - mean)])
            style = {"marker": "s", "linestyle": "none"} if arm.startswith(("synth_only", "shift")) else {"marker": "o"}
            ax.errorbar(x, mean, yerr=err, capsize=3, label=arm, **style)
        ax.set_xlabel("real training cases (synth_only: 0; shift: tested on the subgroup)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_report(out: str | Path) -> Path:
    """Write ``report.md`` and ``downstream.png`` from ``<out>/results.json`` (the ``--report-only`` mode)."""
    out = Path(out)
    path = out / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"out: no {RESULTS_FILE} in {out} (run the benchmark first)")
    results = json.loads(path.read_text())
    plot_results(results, out / PLOT_FILE)
    atomic_write_text(out / REPORT_FILE, report_markdown(results))
    return out / REPORT_FILE


__all__ = ["ARMS", "DownstreamConfig", "Run", "aggregate", "build_model", "check_cohort", "check_disjoint",
           "interval95", "match_cases", "parse_subgroup", "plan_runs", "prepare_case", "report_markdown",
           "run_downstream", "summarise", "train_model", "write_report"]
