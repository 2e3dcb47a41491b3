"""Where a generator's bodies fall short: body volume, case by case, against a cohort of the same people.

For a reference cohort and a synthetic cohort of the same demographics (row by row, as ``synthaug
generate --demographics`` writes it), each case's body volume in the field of view (``synthaug
evaluate``'s body mask: CT > -500 HU or any organ label, holes filled per axial slice), the ratio
synthetic / reference per person, and how that ratio goes with the person: Pearson r (95 % interval,
Fisher's z) with weight, height, BMI and age, the mean ratio per sex and per third of weight and of BMI, and a least-squares
fit ``ratio ~ 1 + weight + height + male``. A deficit that is the same for everyone points at the
body's outline as a whole; one that grows for small or light people points at how the networks follow
the conditioning. Where the volume is missing (``by_region``), per sex: axial bands by distance below the body's top
(``BANDS_CM``), the outer fifths of its left-right extent (arms and flanks) and the body's length.

    python scripts/body_volume_check.py --reference data/phantom_v3_dev --synthetic runs/eval_syn_dev \
        --out benchmarks/results/body_volume.json

With ``--stage1 WEIGHTS`` instead of ``--synthetic``, the same on the global grid, where the body's
outline is drawn: stage 1 of WEIGHTS is sampled for each reference person (seed ``--seed`` + row) and
its body measured as generated (``uncalibrated``) and with the weights' calibration (the ratios at the
top level), against the reference cohort resampled onto that grid as the stage's training cases are. A
minute and a half of CPU per ten people; it tells global-stage candidates apart without sampling the SR
stage. ``--guidance`` samples with classifier-free guidance at that scale.

``--compare BASELINE RESULT`` reads two results of this script on the same people and seeds (two sets
of weights, or two guidance scales) and reports the paired difference of their ratios with its 95 %
interval, over everyone, per sex and per third of height; it samples nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from synthaug.core.demographics import Demographics
from synthaug.core.geometry import body_mask, to_ras
from synthaug.core.io import Cohort, atomic_write_json

FACTORS = ("weight_kg", "height_cm", "bmi", "age")
#: Within this share of the reference's volume a case counts as matching (the realism target's 15 %).
TOLERANCE = 0.15


#: Where the body's volume is split: axial bands by distance below the body's top (cm; the
#: last band open-ended), then the outer fifths of its left-right extent, where the arms and flanks lie.
BANDS_CM = (0, 25, 45, 65, 85)


def body_regions_l(mask: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """A body mask's volume (litres) per axial band of :data:`BANDS_CM`, in its outer left and right fifths
    (``lateral``) and in all (``whole``), and its length (``length_cm``: top to bottom slice holding body)."""
    m, spacing = to_ras(np.asarray(mask, bool), affine)
    litres = float(np.prod(spacing)) / 1e6
    per_slice = m.sum(axis=(0, 1)) * litres  # RAS: the last axis runs towards the head
    z = np.nonzero(per_slice)[0]
    below_top_cm = (z.max() - np.arange(m.shape[2])) * spacing[2] / 10.0
    edges = [*BANDS_CM, np.inf]
    out = {f"{a}-{'' if b == np.inf else b} cm": float(per_slice[(below_top_cm >= a) & (below_top_cm < b)].sum())
           for a, b in zip(edges[:-1], edges[1:])}
    x = np.nonzero(m.any(axis=(1, 2)))[0]
    fifth = (x.max() - x.min() + 1) // 5
    out["lateral"] = float((m[: x.min() + fifth].sum() + m[x.max() + 1 - fifth:].sum()) * litres)
    out["whole"] = float(m.sum() * litres)
    out["length_cm"] = float((z.max() - z.min() + 1) * spacing[2] / 10.0)
    return out


def region_summary(demos: list[Demographics], reference: list[dict], synthetic: list[dict]) -> dict:
    """Per sex and region of :func:`body_regions_l`: the reference's mean and the mean synthetic minus
    reference (litres, cm for the length), and that difference as a share of the reference's mean."""
    out = {}
    for sex in ("F", "M"):
        rows = [i for i, d in enumerate(demos) if d.sex == sex]
        if not rows:
            continue
        out[sex] = {}
        for key in reference[0]:
            ref = np.array([reference[i][key] for i in rows])
            diff = np.array([synthetic[i][key] for i in rows]) - ref
            out[sex][key] = {"reference": float(ref.mean()), "difference": float(diff.mean()),
                             "relative": float(diff.mean() / ref.mean()) if ref.mean() > 0 else float("nan")}
    return out


def body_volume_l(root: str | Path) -> tuple[list[Demographics], list[float], list[dict]]:
    """Every case's demographics, body volume (litres) and :func:`body_regions_l`, in the cohort's
    demographics order."""
    cohort = Cohort(root)
    demos, volumes, regions = [], [], []
    for case_id in cohort:
        case = cohort.load(case_id)
        if case.ct is None:
            raise SystemExit(f"{root}/{case_id}: no CT")
        demo = cohort.demographics[case_id]
        if demo.age is None or demo.bmi is None or demo.sex not in ("F", "M"):
            raise SystemExit(f"{root}/{case_id}: age, sex, height and weight must be known")
        mask = body_mask(case.ct, case.organs, case.affine)
        if not mask.any():
            raise SystemExit(f"{root}/{case_id}: no body (no CT voxel above -500 HU and no organ label)")
        volumes.append(int(mask.sum()) * case.voxel_volume_ml / 1000.0)
        regions.append(body_regions_l(mask, case.affine))
        demos.append(demo)
    return demos, volumes, regions


def stage1_body_volumes_l(root: str | Path, weights: str | Path, seed: int,
                          guidance: float | None = None) -> tuple[list[Demographics], dict, str]:
    """Every reference person's demographics and body volumes (litres) on the global grid of ``weights``
    (``{"reference", "uncalibrated", "calibrated"}`` lists, in the cohort's demographics order; the
    reference's and the calibrated samples' :func:`body_regions_l` as ``regions_reference`` and
    ``regions_calibrated``), and the digest of the stage sampled. ``guidance``: the classifier-free
    guidance scale (default: the weights')."""
    from synthaug.model.channels import decode
    from synthaug.model.preprocess import to_grid
    from synthaug.sampling.cascade import CascadedSampler

    sampler = CascadedSampler.from_pretrained(weights, stages="global")
    sampler.guidance = guidance
    cfg = sampler.global_config
    grid, voxel_l = cfg.global_grid, float(np.prod(cfg.global_grid.spacing)) / 1e6
    cohort = Cohort(root)
    demos, out = [], {key: [] for key in ("reference", "uncalibrated", "calibrated", "regions_reference",
                                          "regions_calibrated")}
    for row, case_id in enumerate(cohort):
        demo = cohort.demographics[case_id]
        ref = to_grid(cohort.load(case_id), grid, **cfg.resampling(grid))
        x = sampler.sample_global([demo], [seed + row], soft_labels=True)
        masks = {"reference": (body_mask(ref.ct, ref.organs, ref.affine), ref.affine)}
        for key, channels in (("uncalibrated", x), ("calibrated", cfg.calibration.apply(x.clone()))):
            d = decode(channels[0])
            masks[key] = (body_mask(d["ct"], d["organs"], grid.affine), grid.affine)
        for key, (mask, _) in masks.items():
            out[key].append(int(mask.sum()) * voxel_l)
        for key in ("reference", "calibrated"):
            out[f"regions_{key}"].append(body_regions_l(*masks[key]))
        demos.append(demo)
    return demos, out, sampler.sha256


def _r_with_interval(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson r with its 95 % interval (Fisher's z; NaN for fewer than four cases)."""
    r = float(np.corrcoef(x, y)[0, 1])
    half = 1.96 / np.sqrt(x.size - 3) if x.size > 3 else float("nan")
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    return {"r": r, "low": float(np.tanh(z - half)), "high": float(np.tanh(z + half))}


def _thirds(x: np.ndarray, ratio: np.ndarray) -> list[dict]:
    """Mean ratio in each third of ``x`` (by its 1/3 and 2/3 quantiles)."""
    edges = np.quantile(x, [0.0, 1 / 3, 2 / 3, 1.0])
    out = []
    for k in range(3):
        sel = (x >= edges[k]) & ((x <= edges[k + 1]) if k == 2 else (x < edges[k + 1]))
        out.append({"from": float(edges[k]), "to": float(edges[k + 1]), "n": int(sel.sum()),
                    "mean_ratio": float(ratio[sel].mean()) if sel.any() else float("nan")})
    return out


def _mean_with_interval(d: np.ndarray) -> dict:
    """Mean of paired differences with its 95 % interval (normal approximation)."""
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else float("nan")
    return {"n": int(d.size), "mean": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half)}


def paired_difference(result: dict, baseline: dict) -> dict:
    """How ``result``'s per-person ratio differs from ``baseline``'s (two results of this script on the same
    people, row by row, e.g. two sets of weights at the same seeds): the mean difference with its 95 %
    interval over everyone, per sex and per third of height."""
    rows, base = result["cases"], baseline["cases"]
    if len(rows) != len(base) or any(a["demographics"] != b["demographics"] for a, b in zip(rows, base)):
        raise SystemExit("--baseline: its people are not this run's row by row")
    if (result.get("seed"), result.get("grid")) != (baseline.get("seed"), baseline.get("grid")):
        raise SystemExit("--baseline: measured on another grid or with other seeds")
    d = np.array([a["synthetic_l"] / a["reference_l"] - b["synthetic_l"] / b["reference_l"]
                  for a, b in zip(rows, base)])
    sex = np.array([a["demographics"]["sex"] for a in rows])
    height = np.array([float(a["demographics"]["height_cm"]) for a in rows])
    edges = np.quantile(height, [1 / 3, 2 / 3])
    third = np.searchsorted(edges, height, side="left")
    return {"all": _mean_with_interval(d),
            "by_sex": {s: _mean_with_interval(d[sex == s]) for s in ("F", "M") if (sex == s).any()},
            "by_height_third": [{"to_cm": float(edges[k]) if k < 2 else float(height.max()),
                                 **_mean_with_interval(d[third == k])} for k in range(3) if (third == k).any()]}


def analyse(demos: list[Demographics], reference: list[float], synthetic: list[float]) -> dict:
    """The per-person ratios and how they go with the demographics (see the module docstring)."""
    ref, syn = np.asarray(reference), np.asarray(synthetic)
    ratio = syn / ref
    factors = {name: np.array([float(getattr(d, name)) for d in demos]) for name in FACTORS}
    male = np.array([d.sex == "M" for d in demos], dtype=float)
    design = np.column_stack([np.ones_like(ratio), factors["weight_kg"], factors["height_cm"], male])
    coef = np.linalg.lstsq(design, ratio, rcond=None)[0]
    return {
        "n": int(ratio.size),
        "reference_l": {"mean": float(ref.mean()), "min": float(ref.min()), "max": float(ref.max())},
        "synthetic_l": {"mean": float(syn.mean()), "min": float(syn.min()), "max": float(syn.max())},
        "ratio": {"mean": float(ratio.mean()), "median": float(np.median(ratio)),
                  "p10": float(np.quantile(ratio, 0.1)), "p90": float(np.quantile(ratio, 0.9)),
                  "within_tolerance": float(np.mean(np.abs(ratio - 1.0) <= TOLERANCE)), "tolerance": TOLERANCE},
        "pearson_r": {name: _r_with_interval(x, ratio) for name, x in factors.items()},
        "by_sex": {s: {"n": int((male == (s == "M")).sum()), "mean_ratio": float(ratio[male == (s == "M")].mean())}
                   for s in ("F", "M") if (male == (s == "M")).any()},
        "by_weight_third": _thirds(factors["weight_kg"], ratio),
        "by_bmi_third": _thirds(factors["bmi"], ratio),
        "fit": {"intercept": float(coef[0]), "per_10_kg": float(10 * coef[1]), "per_10_cm": float(10 * coef[2]),
                "male": float(coef[3])},
        "cases": [{"demographics": d.to_dict(), "reference_l": float(r), "synthetic_l": float(s)}
                  for d, r, s in zip(demos, ref, syn)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", help="a cohort with CT (not with --compare)")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", help="a cohort of the same demographics, row by row")
    source.add_argument("--stage1", metavar="WEIGHTS", help="sample stage 1 of these weights for the reference's "
                                                            "people and compare on the global grid")
    source.add_argument("--compare", nargs=2, metavar=("BASELINE", "RESULT"),
                        help="two results of this script on the same people and seeds (e.g. two weights): the "
                             "paired difference of their ratios, RESULT minus BASELINE; samples nothing")
    ap.add_argument("--seed", type=int, default=0, help="--stage1: the first row's seed (row i: seed + i)")
    ap.add_argument("--guidance", type=float, help="--stage1: classifier-free guidance scale (default: the weights')")
    ap.add_argument("--out", help="write the result as JSON")
    args = ap.parse_args(argv)
    if args.guidance is not None and not args.stage1:
        ap.error("--guidance is a setting of --stage1's sampling")
    if args.compare:
        return _main_compare(args, argv)
    if not args.reference:
        ap.error("--synthetic and --stage1 need --reference")
    if args.stage1:
        return _main_stage1(args, argv)
    ref_d, ref_v, ref_r = body_volume_l(args.reference)
    syn_d, syn_v, syn_r = body_volume_l(args.synthetic)
    if len(ref_d) != len(syn_d) or any(abs(a.weight_kg - b.weight_kg) > 0.05 or abs(a.height_cm - b.height_cm) > 0.05
                                       or a.sex != b.sex for a, b in zip(ref_d, syn_d)):
        raise SystemExit(f"{args.synthetic}: its people are not {args.reference}'s row by row")
    manifest = Path(args.synthetic) / "manifest.json"
    result = {"command": "python scripts/body_volume_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "reference": args.reference, "synthetic": args.synthetic,
              "generator_sha256": json.loads(manifest.read_text()).get("generator_sha256") if manifest.is_file() else None,
              **analyse(ref_d, ref_v, syn_v), "by_region": region_summary(ref_d, ref_r, syn_r)}
    _print_regions(result["by_region"])
    _print_and_write(result, args.out)
    return 0


def _main_compare(args: argparse.Namespace, argv: list[str] | None) -> int:
    files = {}
    for role, path in zip(("baseline", "result"), args.compare):
        try:
            files[role] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise SystemExit(f"--compare {path}: not a result of this script ({err})") from None
        if not isinstance(files[role], dict) or "cases" not in files[role]:
            raise SystemExit(f"--compare {path}: not a result of this script (no cases)")
    diff = paired_difference(files["result"], files["baseline"])
    result = {"command": "python scripts/body_volume_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
              **{role: {"file": path, **{k: files[role].get(k) for k in
                                         ("command", "generator_sha256", "global_sha256", "guidance", "ratio",
                                          "by_weight_third", "by_sex", "pearson_r")}}
                 for role, path in zip(("baseline", "result"), args.compare)}, **diff}
    print("ratio minus the baseline's, paired: " + ", ".join(
        f"{name} {x['mean']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}] ({x['n']})"
        for name, x in [("all", diff["all"]), *diff["by_sex"].items(),
                        *((f"height to {t['to_cm']:.0f} cm", t) for t in diff["by_height_third"])]))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


def _main_stage1(args: argparse.Namespace, argv: list[str] | None) -> int:
    if args.guidance is not None and not args.guidance > 0:
        raise SystemExit(f"--guidance={args.guidance} must be > 0")
    demos, volumes, sha = stage1_body_volumes_l(args.reference, args.stage1, args.seed, args.guidance)
    raw = analyse(demos, volumes["reference"], volumes["uncalibrated"])
    result = {"command": "python scripts/body_volume_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "reference": args.reference, "stage1": args.stage1, "grid": "global", "seed": args.seed,
              "guidance": args.guidance,
              "generator_sha256": sha,
              "global_sha256": json.loads((Path(args.stage1) / "global.json").read_text())["sha256"],
              "uncalibrated": {k: raw[k] for k in ("synthetic_l", "ratio", "pearson_r", "by_sex", "fit")},
              **analyse(demos, volumes["reference"], volumes["calibrated"]),
              "by_region": region_summary(demos, volumes["regions_reference"], volumes["regions_calibrated"])}
    _print_regions(result["by_region"])
    u = result["uncalibrated"]["ratio"]
    print(f"stage 1 as generated: mean ratio {u['mean']:.3f}, by sex "
          + ", ".join(f"{s} {v['mean_ratio']:.3f}" for s, v in result["uncalibrated"]["by_sex"].items()))
    _print_and_write(result, args.out)
    return 0


def _print_regions(by_region: dict) -> None:
    for sex, regions in by_region.items():
        print(f"synthetic minus reference, {sex}: " + ", ".join(
            f"{key} {v['difference']:+.2f} ({100 * v['relative']:+.1f} %)" for key, v in regions.items()))


def _print_and_write(result: dict, out: str | None) -> None:
    r = result["ratio"]
    print(f"body volume, synthetic / reference over {result['n']} people: mean {r['mean']:.3f}, median "
          f"{r['median']:.3f} (10-90 %: {r['p10']:.3f}-{r['p90']:.3f}), within {100 * TOLERANCE:.0f} %: "
          f"{100 * r['within_tolerance']:.0f} %")
    print("Pearson r of the ratio with " + ", ".join(f"{k} {v['r']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]"
                                                     for k, v in result["pearson_r"].items()))
    print("mean ratio by sex: " + ", ".join(f"{s} {v['mean_ratio']:.3f} ({v['n']})" for s, v in result["by_sex"].items()))
    for key in ("by_weight_third", "by_bmi_third"):
        print(f"mean ratio {key.replace('_', ' ')}: " + ", ".join(
            f"{t['from']:.1f}-{t['to']:.1f}: {t['mean_ratio']:.3f} ({t['n']})" for t in result[key]))
    f = result["fit"]
    print(f"fit: ratio = {f['intercept']:.3f} {f['per_10_kg']:+.3f} per 10 kg {f['per_10_cm']:+.3f} per 10 cm "
          f"{f['male']:+.3f} if male")
    if out:
        atomic_write_json(out, result)


if __name__ == "__main__":
    raise SystemExit(main())
