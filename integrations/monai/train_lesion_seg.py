#!/usr/bin/env python
"""Lesion segmentation on CT + PET with MONAI, mixing real and synthetic cases.

Real cases are read the MONAI way (``LoadImaged`` from an AutoPET-layout cohort); with
probability ``--synthetic-ratio`` a training case is replaced by a synthetic one from a
``synthaug generate`` cache whose demographics match it (``RandSyntheticReplaced``).
Both go through the same deterministic preprocessing, then the same random patch
sampling, into a small 3D UNet trained with Dice + cross-entropy.

    synthaug phantom --n 20 --out data/real          # stands in for AutoPET
    synthaug generate --phantom --n 50 --out data/synth
    python integrations/monai/train_lesion_seg.py --real data/real --synthetic data/synth \\
        --synthetic-ratio 0.5 --max-iters 500 --out runs/lesion_seg

Writes ``model.safetensors`` and ``metrics.json`` (losses, synthetic share, validation
Dice on held-out real cases) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

KEYS = ("image", "label")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", required=True, help="real cohort in the AutoPET layout (CTres/SUV/SEG.nii.gz)")
    p.add_argument("--synthetic", help="synthetic cache from `synthaug generate` (needed if --synthetic-ratio > 0)")
    p.add_argument("--synthetic-ratio", type=float, default=0.5,
                   help="probability that a training case is replaced by a matched synthetic one (0-1)")
    p.add_argument("--max-iters", type=int, default=500, help="training iterations")
    p.add_argument("--roi", type=int, nargs=3, default=(64, 64, 64), metavar=("X", "Y", "Z"), help="patch size")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="resample everything to this spacing in mm (default: keep)")
    p.add_argument("--batch-size", type=int, default=2, help="cases per batch")
    p.add_argument("--samples-per-case", type=int, default=2, help="patches per case")
    p.add_argument("--channels", type=int, nargs="+", default=(16, 32, 64, 128), help="UNet channels per level")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val", type=int, default=1, help="real cases held out for validation (the last ones)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    if not 0.0 <= args.synthetic_ratio <= 1.0:
        p.error(f"--synthetic-ratio {args.synthetic_ratio} must be in [0, 1]")
    if args.synthetic_ratio > 0 and not args.synthetic:
        p.error("--synthetic CACHE is needed when --synthetic-ratio > 0")
    if args.max_iters < 1 or args.batch_size < 1 or args.samples_per_case < 1 or args.val < 0:
        p.error("--max-iters, --batch-size and --samples-per-case must be >= 1, --val >= 0")
    if len(args.channels) < 2:
        p.error("--channels needs at least two levels")
    return args


def normalise_petct(image):
    """CT: HU clipped to [-1000, 1000] and scaled to [-1, 1]; PET: SUV clipped to [0, 20], divided by 5."""
    ct = image[:1].clamp(-1000.0, 1000.0) / 1000.0
    pet = image[1:2].clamp(0.0, 20.0) / 5.0
    return torch.cat([ct, pet])


def preprocess(spacing, *, load: bool):
    """The deterministic part, shared by real (``load=True``) and synthetic cases."""
    from monai.transforms import (
        Compose,
        ConcatItemsd,
        DeleteItemsd,
        EnsureTyped,
        Lambdad,
        LoadImaged,
        Orientationd,
        Spacingd,
    )

    steps = []
    if load:
        steps += [LoadImaged(["ct", "pet", "label"], reader="NibabelReader", image_only=True,
                             ensure_channel_first=True),
                  ConcatItemsd(["ct", "pet"], "image"), DeleteItemsd(["ct", "pet"])]
    steps += [EnsureTyped(list(KEYS), dtype=torch.float32),
              Orientationd(list(KEYS), axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if spacing:
        steps.append(Spacingd(list(KEYS), pixdim=tuple(spacing), mode=("bilinear", "nearest")))
    steps.append(Lambdad("image", normalise_petct))
    return Compose(steps)


def real_items(root: Path) -> list[dict]:
    """MONAI data dicts (file paths + demographics) for an AutoPET-layout cohort."""
    from synthaug.core.io import CT_FILE, PET_FILE, SEG_FILE, Cohort
    from synthaug.data.dataset import demographics_item

    cohort = Cohort(root, require_demographics=False)
    items = []
    for cid in cohort.case_ids:
        folder = cohort.path(cid)
        for name in (CT_FILE, PET_FILE, SEG_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"real case {cid}: missing {folder / name}")
        items.append({"ct": str(folder / CT_FILE), "pet": str(folder / PET_FILE), "label": str(folder / SEG_FILE),
                      "demographics": demographics_item(cohort.demographics.get(cid)), "case_id": cid})
    return items


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from monai.data import CacheDataset, DataLoader, decollate_batch
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.metrics import DiceMetric
    from monai.networks.nets import UNet
    from monai.transforms import AsDiscrete, Compose, RandCropByPosNegLabeld, RandFlipd, SpatialPadd
    from monai.utils import set_determinism
    from safetensors.torch import save_file

    from synthaug.core.io import atomic_path, atomic_write_json
    from synthaug.data.dataset import SyntheticPETCTDataset
    from synthaug.data.transforms import RandSyntheticReplaced

    set_determinism(seed=args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    items = real_items(Path(args.real))
    if len(items) <= args.val:
        raise ValueError(f"--real {args.real}: {len(items)} case(s), but --val {args.val} are held out")
    train_items, val_items = items[: len(items) - args.val], items[len(items) - args.val:]

    steps = [preprocess(args.spacing, load=True)]  # cached by CacheDataset
    if args.synthetic_ratio > 0:
        synth = SyntheticPETCTDataset.from_cache(args.synthetic, transform=preprocess(args.spacing, load=False))
        steps.append(RandSyntheticReplaced(list(KEYS), synth, prob=args.synthetic_ratio))
    steps += [SpatialPadd(list(KEYS), spatial_size=tuple(args.roi)),
              RandCropByPosNegLabeld(list(KEYS), "label", spatial_size=tuple(args.roi), pos=1, neg=1,
                                     num_samples=args.samples_per_case),
              RandFlipd(list(KEYS), prob=0.5, spatial_axis=0)]
    train_tf = Compose(steps).set_random_state(args.seed)
    train_ds = CacheDataset(train_items, transform=train_tf, progress=False, num_workers=0)
    loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                        generator=torch.Generator().manual_seed(args.seed), drop_last=False)

    model = UNet(spatial_dims=3, in_channels=2, out_channels=2, channels=tuple(args.channels),
                 strides=(2,) * (len(args.channels) - 1), num_res_units=1).to(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    losses, synthetic_share = [], []
    it, t0 = 0, time.time()
    model.train()
    while it < args.max_iters:
        for batch in loader:
            image, label = batch["image"].to(device), batch["label"].to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(image), label)
            loss.backward()
            opt.step()
            it += 1
            losses.append(loss.item())
            synthetic_share.append(float(np.mean([str(c).startswith("synth") for c in batch["case_id"]])))
            if it % args.log_every == 0 or it == args.max_iters:
                print(f"iter {it}/{args.max_iters}  loss {np.mean(losses[-args.log_every:]):.4f}  "
                      f"synthetic {np.mean(synthetic_share[-args.log_every:]):.2f}", flush=True)
            if it >= args.max_iters:
                break

    val_dice = None
    if val_items:
        model.eval()
        post_pred, post_label = AsDiscrete(argmax=True, to_onehot=2), AsDiscrete(to_onehot=2)
        metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
        val_ds = CacheDataset(val_items, transform=preprocess(args.spacing, load=True), progress=False, num_workers=0)
        with torch.no_grad():
            for batch in DataLoader(val_ds, batch_size=1, num_workers=0):
                pred = sliding_window_inference(batch["image"].to(device), tuple(args.roi), 2, model, overlap=0.25)
                metric(y_pred=[post_pred(p) for p in decollate_batch(pred)],
                       y=[post_label(y) for y in decollate_batch(batch["label"].to(device))])
        val_dice = float(metric.aggregate().item())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    metrics = {"iters": it, "seconds": round(time.time() - t0, 2), "loss_first": losses[0], "loss_last": losses[-1],
               "losses": losses, "synthetic_share": float(np.mean(synthetic_share)), "val_dice": val_dice,
               "train_cases": len(train_items), "val_cases": len(val_items),
               "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}}
    atomic_write_json(out / "metrics.json", metrics)
    print(json.dumps({k: metrics[k] for k in ("iters", "seconds", "loss_first", "loss_last", "synthetic_share",
                                              "val_dice")}))
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"train_lesion_seg: error: {err}", file=sys.stderr)
        sys.exit(2)
