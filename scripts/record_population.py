"""Record the demographics a weights folder's training cohort spans in both stages' JSON.

``CascadedSampler.sample`` warns for demographics outside these ranges. Only the JSON's
``training_population`` entry changes: the weights files, their sha256 and ``SHA256SUMS`` do
not, and neither does the generator's identity (``generator_digest``: weights + calibration).

Cohorts drawn by ``synthaug phantom --n 300 --seed 0`` (either version) have the demographics
``sample_population(300, seed=0)``; this regenerates them (no phantom is drawn):

    python scripts/record_population.py --weights runs/mine --n 300 --seed 0

or reads a cohort's own ``demographics.csv``:

    python scripts/record_population.py --weights runs/mine --demographics data/phantom_train/demographics.csv

or reads the cohort folder itself and also records its case ids (``info.training_data``, as
``synthaug train`` now writes them), for weights whose run predates that:

    python scripts/record_population.py --weights runs/w_v2 --cohort data/phantom_v2_train

``--stages sr`` records one stage only, for a snapshot whose stages trained on different cohorts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from synthaug.core.checkpoint import read_config
from synthaug.core.demographics import PopulationRanges, read_demographics_csv, sample_population
from synthaug.core.io import atomic_write_json
from synthaug.model.train import TrainingCohort


def population(n: int | None, seed: int, demographics: str | None) -> PopulationRanges:
    """The ranges of the training cohort, from its CSV or regenerated from the population sampler."""
    if demographics is not None:
        demos = list(read_demographics_csv(demographics).values())
        return PopulationRanges.of(demos, source=f"{demographics} ({len(demos)} cases)")
    if n is None:
        raise ValueError("n is required unless demographics (a demographics.csv) is given")
    return PopulationRanges.of(sample_population(n, seed=seed),
                               source=f"sample_population({n}, seed={seed}): the demographics of "
                                      f"`synthaug phantom --n {n} --seed {seed}`, the training cohort")


def record(weights: str | Path, ranges: PopulationRanges, training_data: dict | None = None,
           stages: tuple[str, ...] = ("global", "sr")) -> list[Path]:
    """Write ``ranges`` into the JSON of each of ``stages`` in ``weights`` as ``training_population`` (and
    ``training_data``, a :class:`TrainingCohort` record, into its ``info``); returns the files."""
    written = []
    for stage in stages:
        path = Path(weights) / f"{stage}.json"
        if path.is_file():
            config = read_config(path)
            config["training_population"] = ranges.to_dict()
            if training_data is not None:
                config.setdefault("info", {})["training_data"] = training_data
            atomic_write_json(path, config)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="weights folder holding global.json and sr.json")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--n", type=int, help="cohort size given to `synthaug phantom --n`")
    src.add_argument("--demographics", help="the training cohort's demographics.csv")
    src.add_argument("--cohort", help="the training cohort's folder: its demographics and case ids")
    ap.add_argument("--seed", type=int, default=0, help="cohort seed given to `synthaug phantom --seed`")
    ap.add_argument("--stages", nargs="+", choices=("global", "sr"), default=("global", "sr"),
                    help="the stages this cohort trained (default: both; a snapshot whose stages trained on "
                         "different cohorts records each with its own)")
    args = ap.parse_args(argv)
    if args.cohort is not None:
        cohort = TrainingCohort.of(args.cohort)
        ranges, training_data = cohort.population, cohort.to_dict()
    else:
        ranges, training_data = population(args.n, args.seed, args.demographics), None
    for path in record(args.weights, ranges, training_data, tuple(args.stages)):
        print(f"{path}: training_population {ranges.to_dict()}")


if __name__ == "__main__":
    main()
