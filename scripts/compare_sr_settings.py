"""Compare SR-stage sampler settings on in-distribution inputs against the truth.

The phantom of a few demographics is resampled to the global grid exactly as in
training and refined by the SR stage with each setting; the result is compared with the
same phantom on the output grid: high-frequency energy (above the global grid's
Nyquist), organ means (pp as in the benchmarks), Dice of the labels and CT MAE;
``--per-organ`` adds each organ's volume (ml), mean SUV and median HU, mean over cases
(also of the input itself on the global grid).

    python scripts/compare_sr_settings.py --weights synthaug/weights \\
        --settings euler:1 heun:2 dpmpp_2m:4 --per-organ
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package lives beside the scripts

from benchmarks.common import phantom_lowres  # noqa: E402
from benchmarks.refinement import high_frequency_energy  # noqa: E402
from benchmarks.sampler_fidelity import nanmean_quiet, organ_stats, percent_deviation  # noqa: E402
from synthaug.core.demographics import sample_population  # noqa: E402
from synthaug.model.channels import decode  # noqa: E402
from synthaug.model.diffusion import SAMPLERS  # noqa: E402
from synthaug.model.stages import UPSAMPLE_MODES, upsample  # noqa: E402
from synthaug.sampling.cascade import CascadedSampler  # noqa: E402


def _setting(text: str) -> tuple[str, int]:
    sampler, _, steps = text.partition(":")
    if sampler not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SAMPLER:STEPS with SAMPLER in {sorted(SAMPLERS)}")
    return sampler, int(steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--settings", nargs="+", type=_setting, default=[("euler", 1)])
    ap.add_argument("--cases", type=int, default=2)
    ap.add_argument("--upsample", choices=UPSAMPLE_MODES, help="SR input upsampling (default: the weights' own)")
    ap.add_argument("--per-organ", action="store_true", help="also print volume, mean SUV and median HU per organ")
    args = ap.parse_args()
    s = CascadedSampler.from_pretrained(args.weights)
    out_shape = s.sr_config.output_grid.shape
    cut = tuple(0.5 * g / o for g, o in zip(s.global_config.global_grid.shape, out_shape))
    demos = sample_population(args.cases, seed=11)
    inputs = [phantom_lowres(s.sr_config, d, 100 + i) for i, d in enumerate(demos)]
    truths = [{"ct": hi.ct, "pet": hi.pet, "organs": hi.organs} for _, hi in inputs]
    ref = np.stack([organ_stats(t) for t in truths])
    voxel_ml = float(np.prod(s.sr_config.output_grid.spacing)) / 1000
    tables = {}

    def report(name: str, outs: list[dict], seconds: float | None = None) -> None:
        hf = [np.mean([high_frequency_energy(o[ch], cut) for o in outs]) for ch in ("ct", "pet")]
        dev = nanmean_quiet(percent_deviation(np.stack([organ_stats(o) for o in outs]), ref), 0)
        dice = np.mean([np.mean([2 * np.sum((o["organs"] == c) & (t["organs"] == c))
                                 / max(1, np.sum(o["organs"] == c) + np.sum(t["organs"] == c)) for c in range(1, 12)])
                        for o, t in zip(outs, truths)])
        mae = np.mean([np.abs(o["ct"] - t["ct"]).mean() for o, t in zip(outs, truths)])
        secs = "" if seconds is None else f" | {seconds:.0f} s/case"
        print(f"{name:18s} | HF CT {hf[0]:9.0f} HU² PET {hf[1]:.4f} SUV² | organ dev SUV {np.nanmean(dev[:, 0]):5.1f} "
              f"HU {np.nanmean(dev[:, 1]):5.1f} pp | Dice {dice:.3f} | CT MAE {mae:.1f} HU{secs}", flush=True)
        tables[name] = np.nanmean(np.stack([per_organ(o, voxel_ml) for o in outs]), 0)

    report("truth", truths)
    global_ml = float(np.prod(s.global_config.global_grid.spacing)) / 1000
    tables["global grid (input)"] = np.nanmean(np.stack([per_organ(decode(lo[0]), global_ml) for lo, _ in inputs]), 0)
    for mode in UPSAMPLE_MODES:  # the SR stage's starting point, without any SR network
        report(f"upsampled {mode}", [decode(upsample(lo.float(), out_shape, mode)[0]) for lo, _ in inputs])
    if args.upsample:
        s.sr_config = replace(s.sr_config, upsample=args.upsample)
    base = s.sr_config
    for sampler, steps in args.settings:
        s.sr_config = replace(base, diffusion=replace(base.diffusion, sampler=sampler))
        s.configure(sr_steps=steps)
        t0 = time.time()
        outs = [decode(s.sample_sr(lo, [d], [100 + i])[0]) for i, ((lo, _), d) in enumerate(zip(inputs, demos))]
        report(f"{sampler} x {steps} ({base.upsample})", outs, (time.time() - t0) / len(outs))
    if args.per_organ:
        from synthaug.core.labels import ORGAN_LABELS

        print("\nper organ: volume ml / mean SUV / median HU inside each output's own labels, mean over cases")
        print(f"{'organ':16s}" + "".join(f" | {name:>24s}" for name in tables))
        for j, label in enumerate(k for k in ORGAN_LABELS if k != 0):
            print(f"{ORGAN_LABELS[label]:16s}" + "".join(f" | {t[j, 0]:8.0f} {t[j, 1]:6.2f} {t[j, 2]:7.0f}" for t in tables.values()))


def per_organ(decoded: dict, voxel_ml: float) -> np.ndarray:
    """(organs 1..11, 3): volume (ml), mean SUV and median HU inside each label (nan if absent)."""
    from synthaug.core.labels import ORGAN_LABELS

    out = np.full((len(ORGAN_LABELS) - 1, 3), np.nan)
    for j, label in enumerate(k for k in ORGAN_LABELS if k != 0):
        mask = decoded["organs"] == label
        if mask.any():
            out[j] = mask.sum() * voxel_ml, decoded["pet"][mask].mean(), np.median(decoded["ct"][mask])
    return out


if __name__ == "__main__":
    main()
