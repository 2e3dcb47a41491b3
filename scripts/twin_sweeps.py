"""Counterfactual twins on the shipped weights: do they change what was asked, and only that?

For base people drawn from the population sampler (diagnosis set to NEGATIVE, so that no lesion
enters the organ measures), three twin sweeps with one seed per person (issue 38):

- weight 60, 80, 100 kg: effectiveness (body mass vs requested weight), minimality (body extent,
  brain volume, Dice of the brain, lung and liver masks between neighbouring twins) and
  smoothness (the 60->80 and 80->100 kg changes of body volume, body-fat volume and liver
  SUVmean have the same sign);
- height 160, 185 cm: effectiveness (body extent vs requested height), minimality (body mass);
- age 35, 70 years: minimality (body extent, body mass, masks).

Each is measured for the cascade's stage 1 (the 16 mm grid, where body size and organ positions
are decided; ``--steps`` sampler steps, lesion prior off), for the no-twin baseline (the same
person at 80 kg from a second, independent seed: neighbours 60@s / 80@s' / 100@s) and for the
phantom's twins on the same grid. A smaller full-cascade check (``--full-people``, weight sweep,
the weights' own sampler settings) compares each final case with its own stage-1 output: does
the SR stage keep what stage 1 decided?

    python scripts/twin_sweeps.py --people 20 --steps 12 --part sweeps        # -> benchmarks/results/twins.json
    python scripts/twin_sweeps.py --people 20 --full-people 3 --part full    # -> benchmarks/results/twins_full.json

On shared CPUs: shards (``--shard 0/2 --records runs/twins/s0.jsonl``, ...) append one record per
person as it finishes and skip people already recorded (interrupt and rerun to resume); then
``--part sweeps --merge runs/twins/s0.jsonl runs/twins/s1.jsonl`` analyses what they hold.
    python -m benchmarks.report                                            # -> benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Context, load_average, now, set_threads, weights_info, write_result  # noqa: E402
from synthaug.core.case import Case  # noqa: E402
from synthaug.core.demographics import Demographics, sample_population  # noqa: E402
from synthaug.core.labels import ORGAN_IDS  # noqa: E402
from synthaug.evaluation.metrics import measure_case  # noqa: E402
from synthaug.model.channels import decode  # noqa: E402
from synthaug.phantom.body import PHANTOM_VERSION  # noqa: E402
from synthaug.sampling.cascade import CascadedSampler  # noqa: E402
from synthaug.sampling.generator import PhantomGenerator  # noqa: E402
from synthaug.sampling.twins import twin_demographics  # noqa: E402

WEIGHTS_KG = (60.0, 80.0, 100.0)
HEIGHTS_CM = (160.0, 185.0)
AGES = (35.0, 70.0)
SWEEPS = {"weight": WEIGHTS_KG, "height": HEIGHTS_CM, "age": AGES}
MASKS = ("brain", "lungs", "liver")
SMOOTH = ("body_volume_ml", "body_fat_ml", "liver_suv_mean")


def measure(case: Case) -> dict:
    """The numbers the sweeps compare, plus the masks for Dice (dropped before writing)."""
    m = measure_case(case)
    return {"body_volume_ml": m["body"]["body_volume_ml"], "body_extent_mm": m["body"]["body_extent_mm"],
            "body_mass_kg": m["body"]["body_mass_kg"], "brain_ml": m["brain"]["volume_ml"],
            "body_fat_ml": m["body_fat"]["volume_ml"], "liver_suv_mean": m["liver"]["suv_mean"],
            "masks": {k: case.organs == ORGAN_IDS[k] for k in MASKS}}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else math.nan


def pair_stats(a: dict, b: dict) -> dict:
    """What changed between two cases that should agree on everything but the varied field."""
    out = {"extent_mm": abs(a["body_extent_mm"] - b["body_extent_mm"]),
           "mass_pct": 100 * abs(a["body_mass_kg"] - b["body_mass_kg"]) / max(a["body_mass_kg"], 1e-6),
           "brain_pct": 100 * abs(a["brain_ml"] - b["brain_ml"]) / max(a["brain_ml"], 1e-6)}
    out.update({f"dice_{k}": dice(a["masks"][k], b["masks"][k]) for k in MASKS})
    return out


def _summary(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x == x], np.float64)
    if not v.size:
        return {"mean": None, "median": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "sd": float(v.std()), "n": int(v.size)}


def pairs_summary(pairs: list[dict]) -> dict:
    return {k: _summary([p[k] for p in pairs]) for k in pairs[0]} if pairs else {}


def effectiveness(sets: list[list[dict]], requested: list[list[float]], key: str) -> dict:
    """Requested value vs measured ``key``: within-set Pearson r and OLS slope (each set centred on
    its own mean, then pooled), the share of sets whose measure rises at every step, and the
    across-everything r (people differ in the other fields too)."""
    x = np.concatenate([np.asarray(r, float) - np.mean(r) for r in requested])
    y = np.concatenate([np.asarray([c[key] for c in s]) - np.mean([c[key] for c in s]) for s in sets])
    raw_x = np.concatenate([np.asarray(r, float) for r in requested])
    raw_y = np.asarray([c[key] for s in sets for c in s])
    rising = [all(b[key] > a[key] for a, b in zip(s, s[1:])) for s in sets]
    return {"within_set_r": float(np.corrcoef(x, y)[0, 1]), "within_set_slope": float((x @ y) / (x @ x)),
            "pooled_r": float(np.corrcoef(raw_x, raw_y)[0, 1]), "rising_pct": 100.0 * float(np.mean(rising)),
            "n_sets": len(sets)}


def smoothness(sets: list[list[dict]]) -> dict:
    """Per quantity, the share (%) of sets whose 60->80 and 80->100 kg changes have the same sign."""
    out = {}
    for key in SMOOTH:
        same = [np.sign(s[1][key] - s[0][key]) == np.sign(s[2][key] - s[1][key]) != 0 for s in sets]
        out[key] = {"same_sign_pct": 100.0 * float(np.mean(same)),
                    "mean_change_60_80": float(np.mean([s[1][key] - s[0][key] for s in sets])),
                    "mean_change_80_100": float(np.mean([s[2][key] - s[1][key] for s in sets]))}
    return out


def person_record(generator, base: Demographics, seed: int, second: int) -> dict:
    """One person's sweeps for one generator: the measures of every twin and of the no-twin 80 kg
    case (masks dropped) and the pair statistics that need the masks."""
    sets = {field: [measure(c) for c in generator.sample_twins(base, vary={field: values}, seed=seed)]
            for field, values in SWEEPS.items()}
    b80 = measure(generator.sample(replace(base, weight_kg=80.0), seed=second)[0])
    w = sets["weight"]
    pairs = {"weight": [pair_stats(w[0], w[1]), pair_stats(w[1], w[2])],
             "no_twin": [pair_stats(w[0], b80), pair_stats(b80, w[2])],  # 60@s, 80@s', 100@s
             "same_person": [pair_stats(w[1], b80)],
             "height": [pair_stats(*sets["height"])], "age": [pair_stats(*sets["age"])]}
    return {**{k: [strip(m) for m in v] for k, v in sets.items()}, "baseline_80": strip(b80), "pairs": pairs}


def run_people(kind: str, work, index: list[int], path: str | None, total: int) -> list[dict]:
    """``work(i)`` for the people in ``index``; with ``path`` (JSON lines) each record is appended as
    it is finished and people already there are skipped, so an interrupted run resumes."""
    done = {r["index"]: r for r in read_records([path], kind)} if path and Path(path).is_file() else {}
    for i in index:
        if i in done:
            continue
        t0 = time.time()
        done[i] = {"kind": kind, "index": i, **work(i), "seconds": round(time.time() - t0, 1), "finished": now()}
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as fh:
                fh.write(json.dumps(done[i]) + "\n")
        print(f"  {kind}: person {i + 1}/{total} ({time.time() - t0:.0f} s)", flush=True)
    return [done[i] for i in sorted(done)]


def read_records(paths: list[str], kind: str) -> list[dict]:
    """The records of ``kind`` in JSON-lines files, by person, the last one of a person winning."""
    out = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r["kind"] == kind:
                    out[r["index"]] = r
    return [out[i] for i in sorted(out)]


def analyse(records: list[dict]) -> dict:
    """Effectiveness, minimality and smoothness of one generator's sweeps, twins and no-twin baseline."""
    w = [r["weight"] for r in records]
    no_twin = [[r["weight"][0], r["baseline_80"], r["weight"][2]] for r in records]
    h = [r["height"] for r in records]
    weights = [list(WEIGHTS_KG)] * len(w)

    def pairs(kind: str) -> dict:
        return pairs_summary([p for r in records for p in r["pairs"][kind]])

    return {
        "weight": {"effectiveness_mass": effectiveness(w, weights, "body_mass_kg"),
                   "effectiveness_volume": effectiveness(w, weights, "body_volume_ml"),
                   "neighbours": pairs("weight"), "smoothness": smoothness(w)},
        "no_twin": {"effectiveness_mass": effectiveness(no_twin, weights, "body_mass_kg"),
                    "neighbours": pairs("no_twin"), "same_person_two_seeds": pairs("same_person"),
                    "smoothness": smoothness(no_twin)},
        "height": {"effectiveness_extent": effectiveness(h, [list(HEIGHTS_CM)] * len(h), "body_extent_mm"),
                   "neighbours": pairs("height")},
        "age": {"neighbours": pairs("age")},
    }


def full_record(sampler: CascadedSampler, base: Demographics, seed: int) -> dict:
    """One person's weight twins through the whole cascade: each final case's measures, its own
    stage-1 output's, and how the two agree."""
    g_grid, o_grid = sampler.global_config.global_grid, sampler.sr_config.output_grid
    factor = tuple(o // g for o, g in zip(o_grid.shape, g_grid.shape))
    stage1, final, agree = [], [], []
    for d in twin_demographics(base, {"weight": WEIGHTS_KG}):
        x1 = sampler.sample_global([d], [seed])
        xs = sampler.sample_sr(x1, [d], [seed])
        low, high = decode(x1[0]), decode(xs[0])
        m1 = measure(Case(low["ct"], low["pet"], low["organs"], low["lesions"], g_grid.affine, d))
        mf = measure(Case(high["ct"], high["pet"], high["organs"], high["lesions"], o_grid.affine, d))
        up = {k: np.kron(m1["masks"][k], np.ones(factor, bool)) for k in MASKS}  # stage 1 on the output grid
        agree.append({f"dice_{k}": dice(up[k], mf["masks"][k]) for k in MASKS}
                     | {q: mf[q] / m1[q] if m1[q] else math.nan for q in ("body_volume_ml", "body_extent_mm",
                                                                           "body_mass_kg", "brain_ml")})
        stage1.append(m1)
        final.append(mf)
    pairs = [pair_stats(final[j], final[j + 1]) for j in (0, 1)]
    return {"stage1": [strip(m) for m in stage1], "final": [strip(m) for m in final], "agree": agree, "pairs": pairs}


def full_summary(records: list[dict], settings: dict) -> dict:
    """Does the SR stage keep what stage 1 decided: effectiveness before and after, agreement, smoothness."""
    stage1, final = [r["stage1"] for r in records], [r["final"] for r in records]
    weights_ = [list(WEIGHTS_KG)] * len(final)
    same_sign = {q: 100.0 * float(np.mean([np.sign(f[j + 1][q] - f[j][q]) == np.sign(s[j + 1][q] - s[j][q])
                                            for f, s in zip(final, stage1) for j in (0, 1)]))
                 for q in ("body_volume_ml", "body_mass_kg", "body_fat_ml", "liver_suv_mean")}
    return {"people": len(records), "people_measured": [r["index"] for r in records], "settings": settings,
            "stage1_mass": effectiveness(stage1, weights_, "body_mass_kg"),
            "final_mass": effectiveness(final, weights_, "body_mass_kg"),
            "final_neighbours": pairs_summary([p for r in records for p in r["pairs"]]),
            "final_smoothness": smoothness(final),
            "final_vs_stage1": pairs_summary([a for r in records for a in r["agree"]]), "change_same_sign_pct": same_sign}


def strip(m: dict) -> dict:
    """A case's numbers without its masks, for the JSON."""
    return {k: round(v, 3) for k, v in m.items() if k != "masks"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="weights folder (default: the shipped demo weights)")
    p.add_argument("--people", type=int, default=20, help="base people from the population sampler")
    p.add_argument("--seed", type=int, default=38, help="population seed; person i gets seed 1000 + i (second: 5000 + i)")
    p.add_argument("--steps", type=int, default=12, help="stage-1 sampler steps for the sweeps (default 12)")
    p.add_argument("--full-people", type=int, default=4, help="people for the full-cascade weight check (0: none)")
    p.add_argument("--part", choices=("all", "sweeps", "full"), default="all",
                   help="sweeps -> twins.json, full (the full-cascade check) -> twins_full.json, all: both into twins.json")
    p.add_argument("--shard", metavar="K/N", help="only people i with i %% N == K, into --records (no result file)")
    p.add_argument("--records", help="JSON-lines file of per-person records: appended as people finish, and "
                                     "people already there are skipped (resume)")
    p.add_argument("--merge", nargs="+", metavar="JSONL", help="analyse these records (of shards, of resumed or "
                                                               "interrupted runs) into the result file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "results"))
    args = p.parse_args(argv)
    set_threads(args.threads)
    warnings.simplefilter("ignore")  # out-of-distribution warnings: 100 kg at 150 cm is asked for on purpose
    started, load_start, t0 = now(), load_average(), time.time()
    command = ("python scripts/twin_sweeps.py " + shlex.join(argv if argv is not None else sys.argv[1:])).strip()
    people = [replace(d, diagnosis="NEGATIVE") for d in sample_population(args.people, args.seed)]
    seeds = [1000 + i for i in range(args.people)]
    second = [5000 + i for i in range(args.people)]
    stage1 = CascadedSampler.from_pretrained(args.weights, stages="global").configure(steps=args.steps, lesions="model")
    results = {
        "design": {"people": [d.to_dict() for d in people], "seeds": seeds, "second_seeds": second,
                   "sweeps": {k: list(v) for k, v in SWEEPS.items()}, "population_seed": args.seed,
                   "stage1_settings": stage1.settings, "grid": stage1.global_config.global_grid.to_dict()},
        "weights": weights_info(Path(args.weights) if args.weights else Path(__file__).resolve().parents[1]
                                / "synthaug" / "weights"),
        "generator_sha256": stage1.sha256, "phantom_version": PHANTOM_VERSION,
    }
    if args.merge:  # the records of earlier (sharded, resumed) runs
        both = read_records(args.merge, "sweeps")
        full = read_records(args.merge, "full")
        seconds = [r.get("seconds") for r in both + full]
        started = None  # the records' own run, not this analysis (seconds: the people's sampling, summed)
        t0 = time.time() - (sum(seconds) if None not in seconds else 0.0)
        if args.part != "full":  # the phantom is cheap: its twins again, from the phantom as it is now
            phantom = PhantomGenerator(grid=stage1.global_config.global_grid)
            for r in both:
                r["phantom"] = person_record(phantom, people[r["index"]], seeds[r["index"]], second[r["index"]])
    else:
        k, n = (int(v) for v in args.shard.split("/")) if args.shard else (0, 1)
        index = [i for i in range(args.people) if i % n == k]
        both, full = [], []
        if args.part != "full":
            phantom = PhantomGenerator(grid=stage1.global_config.global_grid)
            both = run_people("sweeps", lambda i: {g: person_record(gen, people[i], seeds[i], second[i])
                                                   for g, gen in (("stage1", stage1), ("phantom", phantom))},
                              index, args.records, args.people)
        if args.part != "sweeps" and args.full_people:
            sampler = CascadedSampler.from_pretrained(args.weights).configure(lesions="model")
            full = run_people("full", lambda i: full_record(sampler, people[i], seeds[i]),
                              [i for i in index if i < args.full_people], args.records, args.people)
        if args.shard:
            print(f"records in {args.records}; analyse them with --merge")
            return 0
    if args.part != "full":
        measured = [r["index"] for r in both]
        if not measured:
            raise SystemExit("no sweep records to analyse")
        sweeps = {g: [{"index": r["index"], **r[g]} for r in both] for g in ("stage1", "phantom")}
        results["design"]["people_measured"] = measured
        results.update({"stage1": analyse(sweeps["stage1"]), "phantom": analyse(sweeps["phantom"]),
                        "per_person": sweeps})
    if args.part != "sweeps" and full:
        results["full_cascade"] = full_summary(full, CascadedSampler.from_pretrained(args.weights)
                                               .configure(lesions="model").settings)
    name = "twins_full" if args.part == "full" else "twins"
    weights_dir = Path(args.weights) if args.weights else Path(__file__).resolve().parents[1] / "synthaug" / "weights"
    path = write_result(Context(out_dir=Path(args.out), command=command, weights=[weights_dir], threads=args.threads),
                        name, results,
                        started=started, load_start=load_start, seconds=time.time() - t0)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
