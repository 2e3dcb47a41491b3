"""``synthaug phantom``: generate a phantom cohort in the AutoPET layout."""

from __future__ import annotations

import argparse

HELP = "Generate a cohort of demography-driven phantom FDG PET/CT cases (AutoPET layout, resumable)."

#: Settings file of a phantom cohort; a resumed run must match it.
SETTINGS_FILE = "phantom_settings.json"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``phantom`` options to ``parser``."""
    parser.add_argument("--n", type=int, default=None,
                        help="number of cases (default with --demographics: one per CSV row)")
    parser.add_argument("--out", required=True, help="output cohort folder")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (demographics and per-case seeds)")
    parser.add_argument("--preset", default="demo", help="grid preset: demo (128x128x256 at 4 mm) or autopet")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="custom grid shape (with --spacing)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("A", "B", "C"), help="custom voxel size in mm (with --shape)")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--demographics", metavar="CSV",
                        help="draw a cohort matched to this demographics.csv (sample_population(..., like=CSV))")
    parser.add_argument("--preview", metavar="PNG", help="also write a preview PNG of the first cases")
    parser.add_argument("--version", type=int, choices=(1, 2, 3), default=3, dest="phantom_version",
                        help="phantom anatomy version: 3 (default: version 2 sized to the volume its field of view "
                             "holds, scan to mid-thigh), 2 (arms, FDG-visible structures, the scanner model) or "
                             "1 (the cohort the demo weights' first six training phases used)")
    parser.add_argument("--scanner", default="default",
                        help="how the PET is imaged: 'default' (versions 2 and 3: the scanner model's default preset; "
                             "version 1: its own PSF and noise), a scanner preset name, or 'off' (the activity "
                             "without blur or noise, e.g. as a training target when the cascade images it)")


def case_seed(seed: int, index: int) -> int:
    """Per-case seed derived from the cohort seed and the case index."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def _work(job: tuple) -> str:
    """Make and write one case (runs in a worker process)."""
    from synthaug.core.demographics import Demographics
    from synthaug.core.grid import Grid
    from synthaug.core.io import write_case
    from synthaug.phantom.body import make_phantom

    out, case_id, demo, grid, seed, version, scanner = job
    case = make_phantom(Demographics(**demo), grid=Grid.from_dict(grid), seed=seed, version=version, scanner=scanner)
    case.meta["case_seed"] = seed
    write_case(out, case_id, case)
    return case_id


def _validate(args: argparse.Namespace) -> tuple:
    """Every option checked before any work: returns (grid, like CSV or None, n, scanner setting)."""
    from pathlib import Path

    from synthaug.core.demographics import read_demographics_csv
    from synthaug.core.grid import Grid, get_preset
    from synthaug.phantom.scanner import get_scanner

    if args.workers < 1:
        raise ValueError(f"--workers={args.workers} must be >= 1")
    if args.seed < 0:
        raise ValueError(f"--seed={args.seed} must be >= 0")
    if (args.shape is None) != (args.spacing is None):
        raise ValueError("--shape and --spacing must be given together")
    grid = Grid(tuple(args.shape), tuple(args.spacing)) if args.shape else get_preset(args.preset).output_grid
    if args.shape is None:
        get_preset(args.preset)
    like = None
    if args.demographics:
        like = Path(args.demographics)
        rows = read_demographics_csv(like)  # clear errors for a missing / bad file
        n = len(rows) if args.n is None else args.n
    else:
        if args.n is None:
            raise ValueError("--n is required (or give --demographics CSV)")
        n = args.n
    if n < 1:
        raise ValueError(f"--n={n} must be >= 1")
    scanner = str(args.scanner)
    if scanner != "default":
        get_scanner(scanner)  # one clear line for an unknown preset
        if scanner.lower() in ("off", "none"):
            scanner = "off"
    if args.preview and not str(args.preview).lower().endswith(".png"):
        raise ValueError(f"--preview {args.preview}: expected a .png path")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder")
    return grid, like, n, scanner


def _check_resume(out, settings: dict, cohort: dict) -> None:
    """Refuse, before anything is written, a folder that holds another cohort or other files; a
    resumed (or grown) cohort must have the same settings and start with the same people."""
    import json

    from synthaug.core.demographics import demographics_rows, read_demographics_csv
    from synthaug.core.io import DEMOGRAPHICS_FILE

    n = settings["n"]
    settings_path = out / SETTINGS_FILE
    demo_path = out / DEMOGRAPHICS_FILE
    if settings_path.is_file():
        old = json.loads(settings_path.read_text())
        old.setdefault("scanner", "default")  # cohorts written before the option existed
        keys = ("phantom_version", "seed", "grid", "demographics_like", "scanner")
        diff = [k for k in keys if old.get(k) != settings.get(k)]
        if diff:
            raise ValueError(f"{out} holds a phantom cohort made with different settings ({', '.join(diff)}); "
                             "use a new --out or the same options to resume")
        if int(old.get("n", 0)) > n:
            raise ValueError(f"{out} already holds {old['n']} cases; --n={n} cannot shrink it (use a new --out)")
    elif demo_path.is_file() or any(p.is_dir() and not p.name.startswith(".") for p in out.iterdir()):
        raise FileExistsError(f"{out} is not empty and is not a phantom cohort; choose a new --out")
    if demo_path.is_file():
        # A resumed (or grown) cohort must start with the same people: the sampler is sequential.
        old_rows = demographics_rows(read_demographics_csv(demo_path))
        if old_rows != demographics_rows(cohort)[: len(old_rows)]:
            raise ValueError(f"{demo_path} does not match this run's demographics; use a new --out")


def _run_jobs(jobs: list, workers: int, *, total: int, done: int, progress: bool = True) -> None:
    """Make and write the cases of ``jobs``, in ``workers`` processes, with a progress bar when ``progress``."""
    from synthaug.core.progress import progress_bar

    bar = progress_bar(total=total, initial=done, desc="phantom", unit="case", disable=not progress)
    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                _work(job)
                bar.update(1)
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for _ in pool.imap_unordered(_work, jobs):
                    bar.update(1)
    finally:
        bar.close()


def run(args: argparse.Namespace) -> int:
    """Generate (or resume) the cohort; returns the exit code."""
    from pathlib import Path

    from synthaug import __version__
    from synthaug.core.demographics import sample_population
    from synthaug.core.io import (
        CT_FILE,
        DEMOGRAPHICS_FILE,
        atomic_write_json,
        remove_stale_temporaries,
        write_demographics_csv,
    )
    from synthaug.evaluation.preview import preview_png
    from synthaug.phantom.body import PHANTOM_VERSIONS, impute_demographics

    grid, like, n, scanner = _validate(args)
    out = Path(args.out)
    demos = sample_population(n, args.seed, like=like)
    ids = [f"phantom_{i:05d}" for i in range(n)]
    seeds = [case_seed(args.seed, i) for i in range(n)]
    imputed = 0
    for i, d in enumerate(demos):
        if not d.is_complete:
            demos[i] = impute_demographics(d, seeds[i])
            imputed += 1
    cohort = dict(zip(ids, demos))
    settings = {"generator": "phantom", "phantom_version": PHANTOM_VERSIONS[args.phantom_version],
                "synthaug_version": __version__, "seed": args.seed, "n": n, "grid": grid.to_dict(),
                "demographics_like": str(like) if like else None, "scanner": scanner}

    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, settings, cohort)
    removed = remove_stale_temporaries(out)
    atomic_write_json(out / SETTINGS_FILE, settings)
    write_demographics_csv(out / DEMOGRAPHICS_FILE, cohort)

    todo = [i for i, cid in enumerate(ids) if not (out / cid / CT_FILE).is_file()]
    done = n - len(todo)
    if removed:
        print(f"removed {len(removed)} stale temporary file(s) from an interrupted run")
    if imputed:
        print(f"imputed missing age/sex/height/weight for {imputed} case(s) (see demographics.csv)")
    jobs = [(str(out), ids[i], demos[i].to_dict(), grid.to_dict(), seeds[i], args.phantom_version, scanner)
            for i in todo]
    _run_jobs(jobs, args.workers, total=n, done=done, progress=not args.no_progress)
    print(f"{out}: {len(jobs)} case(s) written, {done} already finished, {n} in the cohort")

    if args.preview:
        from synthaug.core.io import Cohort

        c = Cohort(out)
        picks = ids[: min(n, 6)]
        path = preview_png([c.load(cid) for cid in picks], args.preview)
        print(f"preview: {path}")
    return 0
