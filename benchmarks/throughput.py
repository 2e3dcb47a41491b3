"""Cases per second through ``SyntheticPETCTDataset``: on the fly (phantom; the cascade when
weights exist), from a cache, and real-layout ``.nii.gz`` through ``PETCTCohortDataset``.

The raw read speeds of the cache formats and the mixing DataLoader come from
``benchmarks/bench_io.py`` (run from here; its JSON is ``results/io.json``). This module
adds the dataset-level numbers: ``len(ds)`` items built with ``ds[i]`` (MetaTensors with
the affine, labels, demographics), best of the repeats for the reads (warm page cache,
what repeated epochs see).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from .common import Context, has_stage, load_average, now, weights_info, write_result

NAME = "throughput"
TITLE = "Dataset throughput"


def _items_per_second(ds, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        best = min(best, time.perf_counter() - t0)
    return len(ds) / best


def run(ctx: Context) -> dict:
    from synthaug.core.io import write_case, write_demographics_csv
    from synthaug.data.cache import generate_cache, merge_manifest, plan_cases
    from synthaug.data.dataset import PETCTCohortDataset, SyntheticPETCTDataset
    from synthaug.sampling.generator import PhantomGenerator

    from . import bench_io

    n, repeats = (2, 1) if ctx.quick else (4, 3)
    # 1. bench_io: raw reads of the cache formats vs .nii.gz and the mixing DataLoader.
    started, load0, t0 = now(), load_average(), time.perf_counter()
    io_out = Path(ctx.out_dir) / "io.json"
    io = bench_io.main(["--n", str(n), "--repeats", str(repeats), "--out", str(io_out)])
    # reads and writes phantom cases only: no network runs, so the record names no weights
    write_result(replace(ctx, weights=[]), "io", io, started=started, load_start=load0,
                 seconds=time.perf_counter() - t0)

    # 2. SyntheticPETCTDataset on the fly with the phantom generator.
    result: dict = {"cases": n, "repeats": repeats, "io": {k: v for k, v in io.items() if k != "machine"}}
    phantom = PhantomGenerator("demo")
    ds = SyntheticPETCTDataset(n, generator=phantom, seed=0, label="both")
    result["on_the_fly_phantom"] = {"items_per_second": _items_per_second(ds, 1)}

    # 3. On the fly with the cascade (one case: minutes on CPU).
    folder = ctx.main_weights
    if ctx.quick:
        result["on_the_fly_cascade"] = {"skipped": "--quick"}
    elif has_stage(folder, "global") and has_stage(folder, "sr"):
        ds = SyntheticPETCTDataset(1, generator=str(folder), seed=0, label="both")
        result["on_the_fly_cascade"] = {"items_per_second": _items_per_second(ds, 1), "weights": weights_info(folder),
                                        "settings": ds.generator.settings}
    else:
        result["on_the_fly_cascade"] = {"skipped": "no trained weights with both stages"}

    # 4. From a cache vs the same cases as an AutoPET-layout .nii.gz cohort.
    with tempfile.TemporaryDirectory(prefix="bench_throughput_") as tmp:
        cache, real = Path(tmp) / "cache", Path(tmp) / "real"
        plan = plan_cases(n, seed=0)
        generate_cache(cache, phantom, plan, fmt="both", progress=False)
        merge_manifest(cache)
        cached = SyntheticPETCTDataset.from_cache(cache, label="both")
        demos = {}
        for i, planned in enumerate(plan):
            cid = f"patient_{i:03d}"
            write_case(real, cid, cached.load_case(i))
            demos[cid] = planned.demographics
        write_demographics_csv(real / "demographics.csv", demos)
        from_cache = _items_per_second(cached, repeats)
        nifti = _items_per_second(PETCTCohortDataset(real, label="both"), repeats)
    result["from_cache"] = {"items_per_second": from_cache, "format": "npy (cache format 'both')"}
    result["real_layout_nii_gz"] = {"items_per_second": nifti}
    result["cache_speedup_vs_nii_gz"] = from_cache / nifti
    result["grid"] = phantom.output_grid.to_dict()
    return result
