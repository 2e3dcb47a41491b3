"""How close the lesion prior (synthaug.phantom.lesions) comes to the phantom's own lesions, on the same bodies.

For the first ``--cases`` cases with lesions of a phantom cohort, the phantom is made again
for the same demographics and seed with the diagnosis NEGATIVE (the same anatomy, no
lesions), and the lesion prior adds lesions for the case's diagnosis from the same seed.
Per diagnosis it prints the mean lesion count (connected components), total lesion volume,
the case's lesion SUVmax and SUVmean, and where the lesion volume lies (organ label under
it), for the phantom's lesions and the prior's; and, per node chain, how far the phantom's
node lesions lie from the chain the prior finds on the labels (the phantom scatters its
node centres by 6 mm about its own chains). With ``--same-plan`` the prior draws from the
phantom's own lesion stream (``synthaug.phantom.body.lesion_rng``), so it plans the same lesions
(count, sizes, uptake, sites) as the phantom did for that case and only places and draws
them its own way: differences are then the prior's, not the plans' (cases whose diagnosis
the phantom drew itself are left out).

    python scripts/lesion_prior_check.py --data data/phantom_train --cases 100 [--same-plan]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import replace

import numpy as np

from synthaug.core.io import Cohort
from synthaug.core.labels import ORGAN_LABELS
from synthaug.evaluation.metrics import lesion_measurements
from synthaug.phantom.body import lesion_rng, make_phantom
from synthaug.phantom.lesions import PRIOR_UPTAKES, CaseAnatomy, add_lesions
from synthaug.phantom.node_chains import split_node_site


def _stats(case) -> dict:
    mask = case.lesions > 0
    ml, n = lesion_measurements(case.lesions, case.voxel_volume_ml)
    where = defaultdict(float)
    for label in np.unique(case.organs[mask]):
        where[ORGAN_LABELS[int(label)]] = float((case.organs[mask] == label).mean())
    return {"count": n, "ml": ml, "suvmax": float(case.pet[mask].max()) if n else np.nan,
            "suvmean": float(case.pet[mask].mean()) if n else np.nan, "where": where}


def _chain_offset(body: CaseAnatomy, site: str, centre) -> tuple[str, float, float, float]:
    """A node lesion's chain, its distance (mm) to the prior's chain, and its offset from the
    nearest chain point across (towards the body's side) and front to back, as fractions of the
    body's width and depth at that height."""
    chain, side = split_node_site(site)
    p = body.nearest_on_chain(site, centre)
    c = np.asarray(centre, dtype=float)
    ix, iy = np.nonzero(body.body[:, :, body.index(p)[2]])
    width, depth = body.vol.x[ix.max()] - body.vol.x[ix.min()], body.vol.y[iy.max()] - body.vol.y[iy.min()]
    return chain, float(np.linalg.norm(c - p)), float(side * (c - p)[0] / width), float((c - p)[1] / depth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a phantom cohort (its meta.json holds each case's seed)")
    ap.add_argument("--cases", type=int, default=100, help="cases with lesions to compare")
    ap.add_argument("--same-plan", action="store_true", help="the prior follows the phantom's lesion plan")
    ap.add_argument("--prior-uptake", choices=PRIOR_UPTAKES, default="phantom",
                    help="the prior's uptake profile (default: the phantom's rule, so that the comparison is of "
                         "placement; 'fitted' is what generated cases get)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    cohort = Cohort(args.data)
    rows: dict[str, dict[str, list]] = defaultdict(lambda: {"phantom": [], "prior": []})
    offsets: dict[str, list[list[float]]] = defaultdict(list)
    done = 0
    for case_id in cohort.case_ids:
        if done >= args.cases:
            break
        meta = json.loads((cohort.root / case_id / "meta.json").read_text())
        if meta.get("source") != "phantom" or not meta.get("lesions") or (args.same_plan and meta.get("diagnosis_drawn")):
            continue
        case = cohort.load(case_id)
        demo = replace(cohort.demographics[case_id], diagnosis=meta["diagnosis"])
        clean = make_phantom(replace(demo, diagnosis="NEGATIVE"), grid=_grid_of(case), seed=int(meta["seed"]),
                             version=int(float(meta.get("phantom_version", "1.0"))))
        same = float((clean.organs == case.organs)[case.lesions == 0].mean())
        if same < 0.999:
            raise SystemExit(f"{case_id}: the phantom remade without lesions has other anatomy ({same:.4f} of labels "
                             "agree): was the cohort made by another phantom version?")
        clean = replace(clean, demographics=demo)
        prior = add_lesions(clean, seed=int(meta["seed"]), rng=lesion_rng(int(meta["seed"])) if args.same_plan else None,
                            prior_uptake=args.prior_uptake)
        rows[demo.diagnosis]["phantom"].append(_stats(case))
        rows[demo.diagnosis]["prior"].append(_stats(prior))
        body = CaseAnatomy(clean, demo.height_cm)
        for les in meta["lesions"]:
            if les["site"].startswith("node:"):
                chain, *d = _chain_offset(body, les["site"], les["centre_mm"])
                offsets[chain].append(d)
        done += 1
    out = {"cases": done, "diagnoses": {}, "node_chain_offset_mm": {}}
    print(f"{done} cases with lesions from {args.data}" + (", the prior on the phantom's plan" if args.same_plan else "") + "\n")
    print("| diagnosis | cases | source | lesions per case | volume (ml) | SUVmax (median) | SUVmean (median) | lesion volume by label |")
    print("|---|---|---|---|---|---|---|---|")
    for dx, by in sorted(rows.items()):
        out["diagnoses"][dx] = {}
        for source in ("phantom", "prior"):
            s = by[source]
            where = defaultdict(float)
            for r in s:
                for k, v in r["where"].items():
                    where[k] += v / len(s)
            summary = {"cases": len(s), "count": float(np.mean([r["count"] for r in s])),
                       "ml": float(np.mean([r["ml"] for r in s])),
                       "suvmax": float(np.nanmedian([r["suvmax"] for r in s])),
                       "suvmean": float(np.nanmedian([r["suvmean"] for r in s])), "where": dict(where)}
            out["diagnoses"][dx][source] = summary
            top = ", ".join(f"{k} {100 * v:.0f} %" for k, v in sorted(where.items(), key=lambda kv: -kv[1])[:4])
            print(f"| {dx} | {len(s)} | {source} | {summary['count']:.1f} | {summary['ml']:.1f} | {summary['suvmax']:.1f} "
                  f"| {summary['suvmean']:.1f} | {top} |")
    print("\n| node chain | phantom node lesions | distance to the prior's chain, median / 90th percentile (mm) "
          "| mean offset across / front to back (fraction of width / depth) |")
    print("|---|---|---|---|")
    for chain, rows_ in sorted(offsets.items()):
        d, across, ap = np.array(rows_).T
        out["node_chain_offset_mm"][chain] = {"n": len(d), "median": float(np.median(d)), "p90": float(np.percentile(d, 90)),
                                              "mean_across_fraction": float(across.mean()), "mean_ap_fraction": float(ap.mean())}
        print(f"| {chain} | {len(d)} | {np.median(d):.1f} / {np.percentile(d, 90):.1f} | {across.mean():+.3f} / {ap.mean():+.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def _grid_of(case):
    from synthaug.core.grid import Grid

    return Grid(case.shape, case.spacing)


if __name__ == "__main__":
    main()
