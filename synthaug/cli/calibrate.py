"""``synthaug calibrate``: fit a stage's label offsets so that its labels match the training cohort's volumes,
its per-organ CT shift and PET gain so that the organs inside them match its median HU and mean SUV, and
the per-organ scale that narrows the organs' HU spread from case to case to the cohort's."""

from __future__ import annotations

import argparse

HELP = ("fit per-class label offsets, CT shifts and PET gains of trained weights against the training "
        "cohort's label volumes and organ means")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="weights folder (global.json / sr.json + .safetensors)")
    p.add_argument("--stage", choices=("global", "sr"), required=True,
                   help="the stage to calibrate: global first, then sr (sampled on the calibrated global stage)")
    p.add_argument("--data", required=True, help="the training cohort the weights were trained on")
    p.add_argument("--work", required=True,
                   help="folder for the reduced samples (resumable; one per stage and weights: it records what "
                        "made its samples and refuses other weights, settings or cohorts)")
    p.add_argument("--cases", type=int, default=40, help="samples, for training cases 0..N-1 (default 40)")
    p.add_argument("--intensity-cases", type=int,
                   help="training cases 0..M-1 whose organ median HU and mean SUV are the targets (default: all)")
    p.add_argument("--volume-cases", type=int,
                   help="training cases 0..V-1 (V >= N) over which the volumes expected for the sampled cases' "
                        "demographics are estimated by a linear fit (default: all)")
    p.add_argument("--max-abs", type=float, default=0.5, help="largest offset; label channels span -1..1 (default 0.5)")
    p.add_argument("--shard", metavar="i/N", help="only sample cases with index %% N == i, and do not fit")
    p.add_argument("--fit-lesion", action="store_true", help="also fit the lesion channel's offset")
    p.add_argument("--cache", help="preprocessing cache of the whole cohort to use or build (e.g. the training run's); default: resample the cases it reads, write no cache")
    p.add_argument("--no-intensities", action="store_true",
                   help="fit the label offsets only, not the per-organ CT shift and PET gain")
    p.add_argument("--spread-only", action="store_true",
                   help="keep the stage's label offsets, CT shift and PET gain; fit only the per-organ scale "
                        "that narrows the organs' HU spread from case to case")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--clean-labels", dest="clean_labels", action="store_true", default=None,
                        help="fit on organ maps with their stray pieces relabelled, as the sampler outputs them "
                             "(default for the SR stage, and for a global stage without one)")
    labels.add_argument("--raw-labels", dest="clean_labels", action="store_false",
                        help="fit on the organ maps as the network draws them (default for a global stage "
                             "followed by an SR stage, whose labels go to it as drawn)")
    p.add_argument("--keep-body", action="store_true",
                   help="fit each organ's share of the body the samples draw, not its absolute volume: offsets "
                        "then move borders between organs, not the body's outline")
    p.add_argument("--write", action="store_true", help="store the offsets in WEIGHTS/STAGE.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.cache import parse_shard
    from ..sampling.calibration import calibrate

    shard = parse_shard(args.shard) if args.shard else (0, 1)
    result = calibrate(args.weights, args.stage, args.data, args.work, cases=args.cases, max_abs=args.max_abs,
                       shard=shard, fit_lesion=args.fit_lesion, write=args.write, cache=args.cache,
                       progress=not args.no_progress, intensities=not args.no_intensities,
                       intensity_cases=args.intensity_cases, volume_cases=args.volume_cases,
                       spread_only=args.spread_only, clean_labels=args.clean_labels, keep_body=args.keep_body)
    if result is None:
        print(f"shard {shard[0]}/{shard[1]}: samples in {args.work}; run once more without --shard to fit")
        return 0
    if "label_calibration" in result:
        _print_labels(result)
    if "intensity_calibration" in result:
        _print_intensities(result)
    if result.get("level_spread"):
        _print_spread(result)
    print(f"wrote the calibration into {args.weights}/{args.stage}.json" if args.write else "not written (pass --write)")
    return 0


def _print_labels(result: dict) -> None:
    cleaned = result["label_calibration"].get("clean_labels")
    print("organ maps with stray pieces relabelled, as the sampler outputs them" if cleaned
          else "organ maps as the network draws them")
    if "body_scale" in result["label_calibration"]:
        print(f"organ targets scaled to the body drawn: x {result['label_calibration']['body_scale']:.4f}")
    print(f"{'class':16s} {'training':>10s} {'uncalibrated':>13s} {'calibrated':>11s} {'offset':>8s}  (mean voxels per case)")
    rows = result["label_calibration"]["mean_voxels"]
    for (name, row), offset in zip(rows.items(), result["label_bias"]):
        print(f"{name:16s} {row['training']:10.1f} {row['uncalibrated']:13.1f} {row['calibrated']:11.1f} {offset:8.3f}")
    by_sex = result["label_calibration"]["by_sex"]
    if by_sex:
        heads = " ".join(f"{sex + ' (' + str(t['cases']) + ' cases)':>17s}" for sex, t in by_sex.items())
        print(f"\n{'class':16s} {heads}  (calibrated vs training, % per sex; uncalibrated in brackets)")
        for name in rows:
            print(f"{name:16s} " + " ".join(_dev(t["mean_voxels"][name]) for t in by_sex.values()))


def _print_intensities(result: dict) -> None:
    print(f"\n{'class':16s} {'HU train':>9s} {'generated':>10s} {'shift':>7s} {'SUV train':>10s} {'generated':>10s} {'gain':>6s}")
    table = result["intensity_calibration"]
    for (name, hu), suv, shift, gain in zip(table["median_hu"].items(), table["mean_suv"].values(),
                                            result["ct_shift"], result["pet_gain"]):
        print(f"{name:16s} {_num(hu['training'], 9, 1)} {_num(hu['generated'], 10, 1)} {shift:7.1f} "
              f"{_num(suv['training'], 10, 3)} {_num(suv['generated'], 10, 3)} {gain:6.3f}")


def _print_spread(result: dict) -> None:
    print(f"\n{'class':16s} {'training sd':>11s} {'generated sd':>12s} {'scale':>6s} {'centre':>7s}  (per-case median HU)")
    for (name, row), scale, centre in zip(result["level_spread"].items(), result["ct_level_scale"], result["ct_level"]):
        print(f"{name:16s} {_num(row['training_sd'], 11, 1)} {_num(row['generated_sd'], 12, 1)} "
              f"{scale:6.3f} {centre:7.1f}")


def _dev(row: dict) -> str:
    """``calibrated (uncalibrated)`` as % deviations from the training target, 17 characters."""
    if not row["training"]:
        return f"{'-':>17s}"
    pct = [100 * (row[k] / row["training"] - 1) for k in ("calibrated", "uncalibrated")]
    return f"{pct[0]:+7.1f} ({pct[1]:+6.1f})"


def _num(v: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}s}" if v is None else f"{v:{width}.{digits}f}"
