#!/usr/bin/env python
"""How fast training reads synthetic cases: the cache formats vs ``.nii.gz``, and a mixing DataLoader.

    python benchmarks/bench_io.py                 # demo grid (128 x 128 x 256), 4 cases
    python benchmarks/bench_io.py --n 8 --repeats 5

Writes ``benchmarks/results/io.json``: cases per second read from the cache (``.npy``,
uncompressed ``.npz``) and from the same cases as AutoPET-layout ``.nii.gz``, bytes per
case, write time, and cases per second of a ``DataLoader`` that mixes real cases (in
memory) with synthetic ones read from the cache or from ``.nii.gz`` (``RandSyntheticReplaced``,
then 64^3 patches). Reads are timed with a warm
page cache (best of ``--repeats``), which is what repeated training epochs see.

The cases come from the parametric phantom when it is installed, otherwise from a
structured stand-in (body ellipsoid with noisy tissue, organs, lesions) of the same size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthaug.core.case import Case  # noqa: E402
from synthaug.core.grid import Grid, get_preset  # noqa: E402


class StandIn:
    """A CaseGenerator making phantom-like volumes quickly (for when the phantom is unavailable)."""

    def __init__(self, grid: Grid) -> None:
        self.output_grid = grid

    @property
    def settings(self) -> dict:
        return {"generator": "bench-stand-in", "grid": self.output_grid.to_dict()}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()

    def sample(self, demographics, *, seed, progress: bool = False) -> list[Case]:
        from synthaug.sampling.generator import as_list, per_case_seeds

        demos = as_list(demographics)
        out = []
        for d, s in zip(demos, per_case_seeds(len(demos), seed)):
            rng = np.random.default_rng(s)
            X, Y, Z = self.output_grid.shape
            x, y, z = np.meshgrid(np.linspace(-1, 1, X), np.linspace(-1, 1, Y), np.linspace(-1, 1, Z), indexing="ij")
            body = ((x / 0.7) ** 2 + (y / 0.45) ** 2 < 1) & (np.abs(z) < 0.92)
            organs = np.where(body, 2, 0).astype(np.uint8)
            organs[body & ((x / 0.5) ** 2 + (y / 0.3) ** 2 + ((z - 0.3) / 0.2) ** 2 < 1)] = 5
            organs[body & (((x - 0.2) / 0.25) ** 2 + (y / 0.2) ** 2 + ((z - 0.05) / 0.12) ** 2 < 1)] = 7
            ct = np.where(body, rng.normal(40, 15, body.shape), -1000).astype(np.float32)
            ct[organs == 5] = rng.normal(-800, 30, int((organs == 5).sum()))
            pet = np.where(body, rng.gamma(4.0, 0.25, body.shape), 0).astype(np.float32)
            lesions = (((x + 0.3) ** 2 + y ** 2 + (z + 0.2) ** 2) < 0.004).astype(np.uint8)
            pet[lesions > 0] += 6.0
            out.append(Case(ct, pet, organs, lesions, self.output_grid.affine, d, {"source": "synthetic", "seed": s}))
        return out


def _best(fn, repeats: int) -> float:
    fn()  # warm the page cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _dir_bytes(path: Path, suffixes: tuple[str, ...]) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4, help="cases (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the best counts (default 3)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--stand-in", action="store_true", help="use the quick stand-in even if the phantom exists")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "io.json"))
    args = p.parse_args(argv)

    import torch
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, RandCropByPosNegLabeld

    from synthaug.core.io import Cohort, atomic_write_json, read_case, write_case, write_demographics_csv
    from synthaug.data.cache import generate_cache, merge_manifest, plan_cases, read_cache_case
    from synthaug.data.dataset import PETCTCohortDataset, SyntheticPETCTDataset
    from synthaug.data.transforms import RandSyntheticReplaced

    grid = get_preset(args.preset).output_grid
    generator = None
    if not args.stand_in:
        try:
            import synthaug.phantom.body  # noqa: F401
            from synthaug.sampling.generator import PhantomGenerator

            generator = PhantomGenerator(args.preset)
        except ImportError:
            generator = None
    source = "phantom" if generator is not None else "stand-in"
    generator = generator or StandIn(grid)
    plan = plan_cases(args.n, seed=0)
    t0 = time.perf_counter()
    cases = generator.sample([c.demographics for c in plan], seed=[c.seed for c in plan])
    gen_seconds = time.perf_counter() - t0

    class Replay:  # hand the generated cases to each cache without generating them again
        output_grid, settings, sha256 = generator.output_grid, generator.settings, generator.sha256

        def sample(self, demographics, *, seed, progress=False):
            return [cases[s - plan[0].seed] for s in seed]

    result: dict = {"cases": args.n, "grid": grid.to_dict(), "source": source, "repeats": args.repeats,
                    "generate_seconds_per_case": gen_seconds / args.n,
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                                "numpy": np.__version__}}
    with tempfile.TemporaryDirectory(prefix="bench_io_") as tmp:
        tmp = Path(tmp)
        roots = {}
        for fmt in ("both", "npz"):
            roots[fmt] = tmp / fmt
            t0 = time.perf_counter()
            generate_cache(roots[fmt], Replay(), plan, fmt=fmt, progress=False)
            result[f"write_seconds_per_case_{fmt}"] = (time.perf_counter() - t0) / args.n
            merge_manifest(roots[fmt])
        entries = {fmt: json.loads((roots[fmt] / "manifest.json").read_text())["cases"] for fmt in roots}
        cohort = Cohort(roots["both"])
        timings = {
            "npy": lambda: [read_cache_case(roots["both"], e, prefer=("npy",)) for e in entries["both"]],
            "npz": lambda: [read_cache_case(roots["npz"], e, prefer=("npz",)) for e in entries["npz"]],
            "nii.gz": lambda: [read_case(cohort.path(c)) for c in cohort.case_ids],
        }
        read = {k: args.n / _best(fn, args.repeats) for k, fn in timings.items()}
        result["read_cases_per_second"] = read
        result["read_speedup_vs_nii_gz"] = {k: v / read["nii.gz"] for k, v in read.items() if k != "nii.gz"}
        result["bytes_per_case"] = {"npy": _dir_bytes(roots["both"], (".npy",)) // args.n,
                                    "npz": _dir_bytes(roots["npz"], (".npz",)) // args.n,
                                    "nii.gz": _dir_bytes(roots["both"], (".nii.gz",)) // args.n}

        # A training loader as in integrations/monai: real cases held in memory (what a CacheDataset
        # does), half of them replaced by synthetic cases read from disk, then 64^3 patches. The
        # synthetic cases are read from the cache (.npy) or, for comparison, from the same cases as
        # .nii.gz (an AutoPET-layout copy).
        nifti_root = tmp / "as_nifti"
        for cid in cohort.case_ids:
            write_case(nifti_root, cid, cohort.load(cid))
        write_demographics_csv(nifti_root / "demographics.csv", cohort.demographics)
        sources = {"cache_npy": SyntheticPETCTDataset.from_cache(roots["both"]),
                   "nii_gz": PETCTCohortDataset(nifti_root)}
        real_items = [sources["nii_gz"][i] for i in range(args.n)]

        def loader_rate(source: str | None, workers: int, epochs: int = 3) -> float:
            steps = [RandSyntheticReplaced(["image", "label"], sources[source], prob=0.5)] if source else []
            steps.append(RandCropByPosNegLabeld(["image", "label"], "label", spatial_size=(64, 64, 64),
                                                num_samples=2))
            ds = Dataset(real_items, transform=Compose(steps).set_random_state(0))
            loader = DataLoader(ds, batch_size=2, num_workers=workers, persistent_workers=workers > 0)
            for _ in loader:  # warm-up epoch: worker start, page cache
                pass
            t0 = time.perf_counter()
            for _ in range(epochs):
                for _ in loader:
                    pass
            return epochs * len(ds) / (time.perf_counter() - t0)

        result["dataloader_cases_per_second"] = {
            f"workers_{w}": {"real_in_memory_only": loader_rate(None, w),
                             "half_synthetic_from_cache_npy": loader_rate("cache_npy", w),
                             "half_synthetic_from_nii_gz": loader_rate("nii_gz", w)}
            for w in sorted({0, args.workers})}
    out = Path(args.out)
    atomic_write_json(out, result)
    print(json.dumps({k: result[k] for k in ("source", "read_cases_per_second", "read_speedup_vs_nii_gz",
                                             "bytes_per_case", "dataloader_cases_per_second")}, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
