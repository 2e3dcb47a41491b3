"""The one model and recipe of every arm: working-grid preparation, patches, augmentation, training, scoring."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ...core.geometry import BODY_HU, to_ras
from ...core.labels import NUM_ORGAN_CLASSES
from ..metrics import area_resize
from ..segmentation import lesion_metrics, nanmean, organ_dice
from .config import DownstreamConfig

#: CT window (HU) mapped to [-1, 1]; PET enters as log(1 + SUV) / PET_SCALE.
CT_WINDOW = (-1000.0, 1000.0)
PET_SCALE = 2.0
#: Voxels of margin around the body's bounding box (CT > BODY_HU) that every case is cropped to.
CROP_MARGIN = 2


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


#: Share of training patches of arm 7 that get inserted lesions (copy-paste's default probability too).
INSERTION_PROB = 0.5


def lesion_insertion_transform(seed: int, spacing_mm: float, prob: float = 0.5) -> tuple[Callable | None, str]:
    """Arm 7: ``(patch_hook, "")``, the hook running ``RandLesionInsertd`` on a training patch (the pair's
    shape is the one :func:`~synthaug.evaluation.downstream.run` uses for an arm that may not be available).

    The patch goes back to HU and SUV (CT beyond the window stays clipped), gets lesions with
    probability ``prob`` (sites from the patch's organ labels, counts and uptake from the case's
    diagnosis, the transform's default appearance) and is normalised again.
    """
    from ...data.lesion_insert import RandLesionInsertd

    insert = RandLesionInsertd(keys="image", prob=prob, affine=np.diag([spacing_mm] * 3 + [1.0]))
    insert.set_random_state(seed=seed)

    def hook(patch: dict, item: Mapping, rng: np.random.Generator) -> dict:
        if not np.asarray(patch["organs"]).any():  # a patch of air beside the body: no site for a lesion
            return patch
        image = np.stack([patch["image"][0] * CT_WINDOW[1], np.expm1(patch["image"][1] * PET_SCALE)])
        out = insert({"image": image, "organs": patch["organs"][None], "lesions": patch["lesions"][None],
                      "demographics": item.get("demographics")})
        ct, pet = np.asarray(out["image"][0]), np.asarray(out["image"][1])
        return {"image": np.stack([np.clip(ct, *CT_WINDOW) / CT_WINDOW[1],
                                   np.log1p(np.clip(pet, 0, None)) / PET_SCALE]).astype(np.float32),
                "organs": np.asarray(out["organs"][0]).astype(np.uint8),
                "lesions": (np.asarray(out["lesions"][0]) > 0).astype(np.uint8)}

    return hook, ""


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
