"""Inserted lesions against the 51 real tumour crops, mask/image agreement, and before/after montages.

Appearance: one sarcoma-sized lesion (its volume one real crop's, its planned SUVmax drawn from the
lesion model's lognormal, median 9) is inserted per real crop into the real whole-body PET of STS_001
(same collection and scanner kind as the crops). That PET has no CT and no organ labels, so its body
outline (synthaug.evaluation.realism.body_outline) is labelled soft tissue, its hot organs (smoothed SUV
> 2.5: brain, heart, bladder, kidneys) another organ, and a flat pseudo-CT (0 HU in the body, -1000
outside) stands in for the CT; the site is "muscle". Every lesion is measured with
synthaug.evaluation.realism.lesion_measures, as the real crops are. Rows (``PAINTERS``): the real crops;
insertion with the default LesionAppearance; the lesion prior of generated cases (appearance=None) with
its default, fitted uptake; and with the phantom's uptake rule (prior_uptake="phantom"), for contrast.

Agreement: for each inserted lesion, the share of its mask voxels where the PET rose, the share of
the inserted activity inside the mask, and the activity beyond the PSF's reach (must be 0).

Roles: the crops of even case number are the development crops, the odd ones the held-out test
crops. ``--fit`` searches LesionAppearance's heterogeneity, infiltrative margin and necrosis on the
development crops only (``FIT_GRID``; the distance is ``fit_distance``) and writes every candidate;
the default run reports insertion on both roles apart, so the held-out crops show what the fit
carries over.

Montages (docs/img/): STS_001 coronal PET MIPs before / after MELANOMA-like insertion (subcutaneous and
muscle sites); the real CT example with TotalSegmentator labels, a flat PET imaged by the default
scanner, before / after (PET MIP, CT slice).

    python scripts/lesion_insertion_check.py --fit --out benchmarks/results/lesion_appearance_fit.json
    python scripts/lesion_insertion_check.py --out benchmarks/results/lesion_insertion.json
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from synthaug.core.case import Case
from synthaug.core.demographics import Demographics
from synthaug.core.geometry import spacing_of, to_ras
from synthaug.core.io import atomic_write_json, read_nifti
from synthaug.core.labels import ORGAN_IDS
from synthaug.data.totalseg import totalseg_to_synthaug
from synthaug.evaluation.realism import body_outline, lesion_measures, lesion_measures_in_ras
from synthaug.phantom.lesion_paint import LesionAppearance, psf_reach_voxels
from synthaug.phantom.lesions import add_lesions
from synthaug.phantom.scanner import DEFAULT_SCANNER, apply_scanner

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"
STS001 = Demographics(age=59, sex="M", height_cm=163, weight_kg=71)
KEYS = ("suv_max", "mean_over_max", "edge_width_mm", "volume_ml", "surround_suv", "suv_max_over_planned")
ROLES = ("development", "test")
#: What is compared with the real crops: insertion (the default appearance), the lesion prior of generated
#: cases with the fitted uptake (their default), and with the phantom's uptake rule.
PAINTERS = (("insertion", LesionAppearance(), "fitted"), ("prior_fitted", None, "fitted"),
            ("phantom_painting", None, "phantom"))
#: The appearance candidates ``--fit`` tries on the development crops (every combination).
FIT_GRID = {
    "heterogeneity_cov": (0.3, 0.45, 0.6),
    "margin_mm": ((0.0, 0.0), (4.0, 10.0), (8.0, 16.0), (12.0, 24.0)),
    "necrosis": ({}, {"necrosis_per_10mm": 0.5, "necrosis_max": 0.95, "necrotic_radius": (0.55, 0.85)}),
}


def crop_role(case: str) -> str:
    """A crop's role: ``"development"`` (even case number: the fit sees it) or ``"test"`` (odd: held out)."""
    return ROLES[int(case.rsplit("_", 1)[-1]) % 2 == 1]


def fit_distance(got: dict, real: dict) -> float:
    """How far inserted lesions are from the real ones (``_stats`` dicts): SUVmean/SUVmax quartiles in units
    of 0.05, the median 10-90 % edge width in units of 2.5 mm, and how far the lesions' median SUVmax is
    from the one planned for them (the lesion model's contract) in units of 10 %."""
    d = sum(abs(got["mean_over_max"][q] - real["mean_over_max"][q]) / 0.05 for q in ("p25", "median", "p75"))
    d += abs(got["edge_width_mm"]["median"] - real["edge_width_mm"]["median"]) / 2.5
    return float(d + abs(got["suv_max_over_planned"]["median"] - 1.0) / 0.1)


def fit(case: Case, crops: list[dict], seed: int) -> dict:
    """Every :data:`FIT_GRID` candidate inserted at the development crops' sizes; the closest is ``best``."""
    dev = [c for c in crops if crop_role(c["case"]) == "development"]
    real = _stats(dev)
    tried = []
    for cov, margin, necrosis in itertools.product(*FIT_GRID.values()):
        settings = {"heterogeneity_cov": cov, "margin_mm": margin, **necrosis}
        rows, _ = inserted(case, dev, LesionAppearance(**settings), seed)
        got = _stats(rows)
        tried.append({"settings": settings, "distance": round(fit_distance(got, real), 3), "inserted": got})
        print(settings, tried[-1]["distance"], flush=True)
    best = min(tried, key=lambda t: t["distance"])
    return {"development_crops": real, "candidates": tried, "best": best["settings"]}


def real_crops(real: Path) -> list[dict]:
    rows = []
    folders = sorted((real / "ibsi_sts_lesions").glob("STS_*"))
    if not folders:
        raise SystemExit(f"no real tumour crops under {real / 'ibsi_sts_lesions'}")
    for folder in folders:
        pet, aff = read_nifti(folder / "PET_image.nii.gz", np.float32)
        mask, _ = read_nifti(folder / "PET_mask.nii.gz")
        rows += [{**r, "case": folder.name} for r in lesion_measures_in_ras(pet, mask, aff)]
    return rows


def sts001_case(real: Path) -> Case:
    """The real whole-body PET with a soft-tissue label map from its outline and a flat pseudo-CT."""
    pet, aff = read_nifti(real / "sts001_wholebody" / "PET_SUV.nii.gz", np.float32)
    pet, sp = to_ras(pet, aff)
    affine = np.diag([*sp, 1.0])
    body = body_outline(pet, sp)
    organs = np.where(body, ORGAN_IDS["soft_tissue"], 0).astype(np.uint8)
    hot = ndimage.gaussian_filter(pet, 1.0) > 2.5
    organs[body & hot] = ORGAN_IDS["heart"]  # any label a muscle lesion may not cover
    ct = np.where(body, 0.0, -1000.0).astype(np.float32)
    return Case(ct=ct, pet=pet, organs=organs, lesions=None, affine=affine, demographics=STS001)


def _stats(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for k in KEYS:
        v = np.array([r[k] for r in rows if r.get(k) is not None], float)
        out[k] = None if v.size == 0 else {"median": float(np.median(v)), "p25": float(np.percentile(v, 25)),
                                           "p75": float(np.percentile(v, 75)), "min": float(v.min()),
                                           "max": float(v.max()), "n": int(v.size)}
    return out


def _agreement(before: Case, after: Case, appearance: LesionAppearance | None) -> dict:
    new = (after.lesions > 0) & (before.lesions == 0 if before.lesions is not None else True)
    rise = after.pet.astype(np.float64) - before.pet
    reach = psf_reach_voxels(appearance or LesionAppearance(), before.spacing)
    near = ndimage.maximum_filter(new.astype(np.uint8), size=2 * reach + 1, mode="constant") > 0
    total = float(np.abs(rise).sum())
    return {"mask_voxels": int(new.sum()), "mask_rise_share": float((rise[new] > 0).mean()) if new.any() else None,
            "activity_in_mask": float(rise[new].sum() / rise.sum()) if rise.sum() > 0 else None,
            "activity_beyond_reach": float(np.abs(rise[~near]).sum()) / total if total else 0.0}


def inserted(case: Case, crops: list[dict], appearance: LesionAppearance | None, seed: int,
             prior_uptake: str = "fitted") -> tuple[list, list]:
    rows, agree = [], []
    for i, crop in enumerate(crops):
        rng = np.random.default_rng([seed, i])
        diameter = min((6.0 * crop["volume_ml"] * 1000.0 / math.pi) ** (1 / 3), 150.0)
        suvmax = float(np.clip(np.exp(rng.normal(math.log(9.0), 0.45)), 3.0, 25.0))
        out = add_lesions(case, seed=seed * 1000 + i, plan=[("muscle", diameter, suvmax)], appearance=appearance,
                          prior_uptake=prior_uptake)
        if not out.meta["lesion_prior"]["lesions"]:
            continue
        rows += [{**r, "case": crop["case"], "planned_suvmax": suvmax, "diameter_mm": diameter,
                  "suv_max_over_planned": r["suv_max"] / suvmax}
                 for r in lesion_measures(out.pet, out.lesions, case.spacing)]
        agree.append(_agreement(case, out, appearance))
    return rows, agree


def _mip(pet: np.ndarray) -> np.ndarray:
    return np.rot90(pet.max(axis=1))  # coronal MIP, head up


def montages(case: Case, img_dir: Path, seed: int, shared: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    plan = [("subcutaneous", 18.0, 8.0), ("subcutaneous", 12.0, 6.0), ("muscle", 35.0, 12.0), ("muscle", 25.0, 9.0),
            ("muscle", 60.0, 10.0), ("subcutaneous", 15.0, 7.0)]
    after = add_lesions(case, seed=seed, plan=plan, appearance=LesionAppearance())
    fig, ax = plt.subplots(1, 3, figsize=(9, 6))
    for a, img, title in ((ax[0], case.pet, "STS_001 (real PET)"), (ax[1], after.pet, "+ inserted lesions")):
        a.imshow(_mip(img), cmap="gray_r", vmin=0, vmax=8, aspect=case.spacing[2] / case.spacing[0])
        a.set_title(title)
    ax[2].imshow(_mip(after.lesions.astype(float)), cmap="Reds", aspect=case.spacing[2] / case.spacing[0])
    ax[2].set_title("inserted mask (MIP)")
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(img_dir / "lesion_insertion_sts001.png", dpi=80)
    plt.close(fig)
    result = {"sts001": after.meta["lesion_prior"]}
    ts = shared / "totalseg_example"
    if (ts / "example_ct_sm.nii.gz").is_file():
        result["totalseg_example"] = _ct_montage(ts, img_dir, seed, plt)
    return result


def _ct_montage(ts: Path, img_dir: Path, seed: int, plt) -> dict:
    ct, aff = read_nifti(ts / "example_ct_sm.nii.gz", np.float32)
    seg, _ = read_nifti(ts / "example_seg.nii.gz")
    organs = totalseg_to_synthaug(seg, ct)
    flat = np.where(organs > 0, 1.0, 0.0).astype(np.float32)
    flat[organs == ORGAN_IDS["liver"]] = 2.0
    spacing = spacing_of(aff)
    pet = apply_scanner(flat, spacing, DEFAULT_SCANNER, 74.0, seed=seed)
    case = Case(ct=ct, pet=pet, organs=organs, lesions=None, affine=aff,
                demographics=Demographics(age=58, sex="M", height_cm=171, weight_kg=74))
    plan = [("liver", 25.0, 8.0), ("liver", 15.0, 6.0), ("bone", 20.0, 7.0), ("muscle", 25.0, 9.0),
            ("spleen", 15.0, 6.0), ("lung", 12.0, 5.0)]
    after = add_lesions(case, seed=seed, plan=plan, appearance=LesionAppearance())
    k = int(np.argmax((after.lesions > 0).sum(axis=(0, 1))))
    fig, ax = plt.subplots(2, 2, figsize=(8, 8))
    for col, c, title in ((0, case, "real CT + flat PET"), (1, after, "+ inserted lesions")):
        ax[0, col].imshow(np.rot90(c.pet.max(axis=2)), cmap="gray_r", vmin=0, vmax=6)
        ax[0, col].set_title(f"{title}: PET axial MIP")
        ax[1, col].imshow(np.rot90(c.ct[:, :, k]), cmap="gray", vmin=-200, vmax=300)
        ax[1, col].contour(np.rot90(after.lesions[:, :, k]), levels=[0.5], colors="r", linewidths=0.6) if col else None
        ax[1, col].set_title(f"CT slice {k}" + (" (mask outlined)" if col else ""))
    for a in ax.ravel():
        a.axis("off")
    fig.tight_layout()
    fig.savefig(img_dir / "lesion_insertion_totalseg_ct.png", dpi=80)
    plt.close(fig)
    return {**after.meta["lesion_prior"], "agreement": _agreement(case, after, LesionAppearance())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/lesion_insertion.json")
    ap.add_argument("--img-dir", default="docs/img")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", type=Path, default=SHARED, help="shared/reference (real_pet, totalseg_example)")
    ap.add_argument("--fit", action="store_true", help="search the appearance on the development crops instead")
    args = ap.parse_args()
    t0 = time.time()
    crops = real_crops(args.reference / "real_pet")
    case = sts001_case(args.reference / "real_pet")
    if args.fit:
        result = {**fit(case, crops, args.seed), "seconds": round(time.time() - t0, 1)}
        atomic_write_json(args.out, result)
        print("best", result["best"])
        return
    result: dict = {"real_crops": _stats(crops), "by_role": {role: {"real_crops": _stats(
        [c for c in crops if crop_role(c["case"]) == role])} for role in ROLES}}
    for name, appearance, uptake in PAINTERS:
        rows, agree = inserted(case, crops, appearance, args.seed, uptake)
        result[name] = _stats(rows)
        for role in ROLES:
            result["by_role"][role][name] = _stats([r for r in rows if crop_role(r["case"]) == role])
        result[name]["agreement"] = {k: _stats_of([a[k] for a in agree if a[k] is not None])
                                     for k in ("mask_rise_share", "activity_in_mask", "activity_beyond_reach")}
        print(name, result[name]["n"], "lesions", f"{time.time() - t0:.0f} s")
    result["montages"] = montages(case, Path(args.img_dir), args.seed, args.reference)
    result["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(args.out, result)
    for name in ("real_crops", *(p[0] for p in PAINTERS)):
        r = result[name]
        print(name, {k: (None if r[k] is None else round(r[k]["median"], 3)) for k in KEYS})
    for role in ROLES:
        print(role, {name: round(r["mean_over_max"]["median"], 3) for name, r in result["by_role"][role].items()})
    print("agreement", result["insertion"]["agreement"])


def _stats_of(values: list[float]) -> dict | None:
    if not values:
        return None
    v = np.asarray(values, float)
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max()), "n": int(v.size)}


if __name__ == "__main__":
    main()
