"""Realism side by side: the real whole-body PET, the phantom and the shipped cascade, with and without
the scanner model (synthaug.phantom.scanner), for the real patient's demographics; and the real tumour
crops' lesion measures against the phantom's lesions.

Columns (two cases each for the synthetic ones, shown as "min - max"):
  real             ../shared/reference/real_pet/sts001_wholebody/PET_SUV.nii.gz (M, 59 y, 163 cm, 71 kg)
  phantom v1       make_phantom(version=1): the anatomy of the demo weights' first six phases, its own 6 mm PSF and noise
  phantom v1+scan  make_phantom(version=1, scanner=DEFAULT_SCANNER): the same anatomy through the scanner model
  phantom v2       make_phantom(version=2): arms, more structures, the default scanner
  phantom v3       make_phantom() (version 3: version 2 sized to the mass and lung air its field of view holds,
                   the scan to mid-thigh)
  cascade          CascadedSampler.from_pretrained(--weights) (default: the shipped demo weights) with
                   the scanner off: what the networks and calibration produce
  cascade+scan     the same cases with the default scanner applied (what weights that name the default
                   scanner give by default); its lesion rows are the sampler's own output with that
                   scanner on (the lesion prior then paints activity the scanner images once)
Every image is measured as the real one is (body and liver from the PET alone); the liver VOI from the
organ labels is stored too. Lesion rows pool the 51 real tumour crops and the lesions of phantoms and of
cascade cases (their lesion prior, by default with the uptake fitted to real tumours) drawn with a
lesion-bearing diagnosis (``LESION_DIAGNOSES``, seeds 100 on).

    python scripts/realism_table.py --out benchmarks/results/realism.json
    python scripts/realism_table.py --no-cascade --cases 4 --out runs/realism_phantom.json   # phantom only, ~1 min
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from synthaug.core.demographics import Demographics
from synthaug.core.io import atomic_write_json, atomic_write_text, read_nifti
from synthaug.evaluation.realism import LESION_KEYS, TABLE_ROWS, lesion_measures_in_ras, measure
from synthaug.phantom.body import make_phantom
from synthaug.phantom.scanner import DEFAULT_SCANNER, apply_scanner

REAL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "real_pet"
DEMO = Demographics(age=59, sex="M", height_cm=163, weight_kg=71)
GROUPS = ("real", "phantom v1", "phantom v1+scan", "phantom v2", "phantom v3", "cascade", "cascade+scan")
#: The diagnoses of the cases drawn for the lesion rows (one case each, seeds 100, 101, ...).
LESION_DIAGNOSES = ("LYMPHOMA", "MELANOMA", "LUNG_CANCER", "LYMPHOMA")
#: How each phantom column is made: make_phantom's (version, scanner).
PHANTOMS = {"phantom v1": (1, "default"), "phantom v1+scan": (1, DEFAULT_SCANNER), "phantom v2": (2, "default"),
            "phantom v3": (3, "default")}


def _measure_case(case, pet=None) -> dict:
    pet = case.pet if pet is None else pet
    res = measure(pet, case.affine, lesions=case.lesions)
    res["liver_from_labels"] = measure(pet, case.affine, organs=case.organs)["liver"]
    return res


def _phantom(seed: int, column: str, diagnosis: str | None = None):
    version, scanner = PHANTOMS[column]
    demo = Demographics(age=59, sex="M", height_cm=163, weight_kg=71, diagnosis=diagnosis)
    return make_phantom(demo, seed=seed, version=version, scanner=scanner)


def _scan(case, seed: int) -> np.ndarray:
    return apply_scanner(case.pet, case.spacing, DEFAULT_SCANNER, DEMO.weight_kg, rng=np.random.default_rng([seed, 99]))


def _range(values: list) -> object:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if isinstance(vals[0], str):
        return "/".join(sorted(set(vals)))
    if isinstance(vals[0], list):
        return [_range([v[i] for v in vals]) for i in range(len(vals[0]))]
    return [min(vals), max(vals)]


def _fmt(value: object, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], list):
        return "/".join(_fmt(v, "{:.1f}") for v in value)
    if isinstance(value, list):
        lo, hi = (fmt.format(v) for v in value)
        return lo if lo == hi else f"{lo} - {hi}"
    return fmt.format(value)


def _lookup(d: object, path) -> object:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def table(groups: dict[str, list[dict]], lesions: dict[str, dict]) -> str:
    names = [g for g in GROUPS if groups.get(g)]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, path, fmt in TABLE_ROWS:
        if path[0] == "lesions":
            continue
        cells = [_fmt(_range([_lookup(r, path) for r in groups[g]]), fmt) for g in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = [_fmt(_range([_lookup(r, ("liver_from_labels", "suv_mean")) for r in groups[g]]), "{:.2f}") for g in names]
    lines.append("| liver VOI SUVmean, from labels | " + " | ".join(cells) + " |")
    cells = [_fmt(_range([_lookup(r, ("liver_from_labels", "cov")) for r in groups[g]]), "{:.3f}") for g in names]
    lines.append("| liver VOI CoV, from labels | " + " | ".join(cells) + " |")
    cells = [_fmt(_range([r.get("arms") for r in groups[g]]), "{}") for g in names]
    lines.append("| arms | " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n\nLesions (median [IQR] over all lesions):\n\n"
    lines = ["| | " + " | ".join(lesions) + " |", "|---|" + "---|" * len(lesions)]
    lines.append("| lesions (n) | " + " | ".join(str(s["n"]) for s in lesions.values()) + " |")
    for key in LESION_KEYS:
        cells = []
        for s in lesions.values():
            v = s.get(key)
            cells.append("-" if v is None else f"{v['median']:.2f} [{v['p25']:.2f} - {v['p75']:.2f}]")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return out + "\n".join(lines) + "\n"


def _lesion_summary(rows: list[dict]) -> dict:
    out: dict = {"n": len(rows)}
    for k in LESION_KEYS:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = ({"median": float(np.median(vals)), "p25": float(np.percentile(vals, 25)),
                   "p75": float(np.percentile(vals, 75))} if vals else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/realism.json")
    ap.add_argument("--cases", type=int, default=2, help="synthetic cases per column")
    ap.add_argument("--lesion-phantoms", type=int, default=4,
                    help="phantoms (and cascade cases) drawn for the lesion rows, at most 4")
    ap.add_argument("--no-cascade", action="store_true")
    ap.add_argument("--weights", default=None, help="weights folder of the cascade columns (default: the shipped)")
    args = ap.parse_args()
    t0 = time.time()
    groups: dict[str, list[dict]] = {g: [] for g in GROUPS}
    pet, affine = read_nifti(REAL / "sts001_wholebody" / "PET_SUV.nii.gz", np.float32)
    groups["real"].append(measure(pet, affine))
    lesion_rows: dict[str, list[dict]] = {"real tumour crops (51)": [], **{c: [] for c in PHANTOMS}}
    for folder in sorted((REAL / "ibsi_sts_lesions").glob("STS_*")):
        img, aff = read_nifti(folder / "PET_image.nii.gz", np.float32)
        mask, _ = read_nifti(folder / "PET_mask.nii.gz")
        lesion_rows["real tumour crops (51)"] += lesion_measures_in_ras(img, mask, aff)
    for seed in range(args.cases):
        for column in PHANTOMS:
            case = _phantom(seed, column)
            groups[column].append(_measure_case(case))
            if "arms" in case.meta["body"]:
                groups[column][-1]["arms"] = case.meta["body"]["arms"]["pose"]
        print(f"phantom seed {seed} done ({time.time() - t0:.0f} s)", flush=True)
    for i, diagnosis in enumerate(LESION_DIAGNOSES[: args.lesion_phantoms]):
        for column in PHANTOMS:
            case = _phantom(100 + i, column, diagnosis)
            lesion_rows[column] += lesion_measures_in_ras(case.pet, case.lesions, case.affine)
    print(f"lesion phantoms done ({time.time() - t0:.0f} s)", flush=True)
    sha = None
    if not args.no_cascade:
        from synthaug.sampling.cascade import CascadedSampler

        sampler = CascadedSampler.from_pretrained(args.weights).configure(scanner="off")
        sha = sampler.sha256
        for seed in range(args.cases):
            case = sampler.sample(DEMO, seed=seed)[0]
            groups["cascade"].append(_measure_case(case))
            groups["cascade+scan"].append(_measure_case(case, _scan(case, seed)))
            print(f"cascade seed {seed} done ({time.time() - t0:.0f} s)", flush=True)
        # Lesion rows: "cascade+scan" is the sampler's own output with the default scanner on, whose lesion
        # prior paints activity for the scanner to image once (not the scanner-off case imaged afterwards).
        for column, scanner in (("cascade", "off"), ("cascade+scan", DEFAULT_SCANNER)):
            sampler.configure(scanner=scanner)
            lesion_rows[column] = []
            for i, diagnosis in enumerate(LESION_DIAGNOSES[: args.lesion_phantoms]):
                case = sampler.sample(replace(DEMO, diagnosis=diagnosis), seed=100 + i)[0]
                lesion_rows[column] += lesion_measures_in_ras(case.pet, case.lesions, case.affine)
        print(f"lesion cascade cases done ({time.time() - t0:.0f} s)", flush=True)
    lesions = {k: _lesion_summary(v) for k, v in lesion_rows.items()}
    md = table(groups, lesions)
    result = {"command": "python scripts/realism_table.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in ("cases", "weights") and v)
                  + (" --no-cascade" if args.no_cascade else ""),
              "demographics": DEMO.to_dict(), "scanner": DEFAULT_SCANNER.to_dict(), "weights_sha256": sha,
              "groups": groups, "lesions": lesions, "seconds": round(time.time() - t0, 1), "table_md": md}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)
    print(json.dumps({"seconds": result["seconds"]}))


if __name__ == "__main__":
    main()
