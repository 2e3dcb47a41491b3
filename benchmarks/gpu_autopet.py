#!/usr/bin/env python
"""Time and memory per case of the cascade at the ``autopet`` preset size (for a GPU).

    python benchmarks/gpu_autopet.py                    # full size on cuda if present
    python benchmarks/gpu_autopet.py --scale 0.25       # reduced size, e.g. a CPU check
    python -m benchmarks --only gpu_autopet             # the same through the entry point

Runs the global stage (64 x 64 x 128) and the patch-wise SR stage (400 x 400 x 326) with
random (untrained) weights of the production architecture, i.e.
``default_stage_config(stage, "autopet")``, at the stages' default sampler settings, and
records seconds per case for each stage, the peak of ``torch.cuda.max_memory_allocated``
(GPU) and the peak RSS, with the device name. ``--scale`` shrinks both grids (and the
sampling patch where it would not fit) keeping the field of view, so the script can be
checked on a CPU in seconds. Writes ``benchmarks/results/gpu_autopet.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS_DIR, Context, load_average, machine, now, peak_rss_mib  # noqa: E402

NAME = "gpu_autopet"
TITLE = "Cascade at the autopet size (GPU sizing)"


def _round_to(n: float, multiple: int) -> int:
    return max(multiple, int(round(n / multiple)) * multiple)


def scaled_configs(scale: float = 1.0):
    """Global and SR stage configs of the autopet preset with grids scaled by ``scale``."""
    from synthaug.core.grid import Grid, get_preset
    from synthaug.model.stages import default_stage_config

    if not 0 < scale <= 1:
        raise ValueError(f"--scale {scale} must be in (0, 1]")
    p = get_preset("autopet")
    g0, s0 = default_stage_config("global", "autopet"), default_stage_config("sr", "autopet")
    if scale == 1:
        return g0, s0
    g_mult, s_mult = g0.net.downsample_factor, s0.net.downsample_factor

    def shrink(grid: Grid, multiple: int) -> Grid:
        shape = tuple(_round_to(n * scale, multiple) for n in grid.shape)
        return Grid(shape, tuple(f / n for f, n in zip(grid.fov_mm, shape)))  # same field of view

    glob = shrink(p.global_grid, g_mult)  # the global network runs on the whole grid
    out = shrink(p.output_grid, s_mult)   # multiples of the SR network's factor: patches tile it without slivers
    patch = tuple(min(ps, (n // s_mult) * s_mult) for ps, n in zip(s0.sample_patch_size, out.shape))
    overlap = min(s0.sample_overlap, min(patch) // 2)
    kw = {"global_grid": glob, "output_grid": out, "sample_patch_size": patch, "sample_overlap": overlap}
    return default_stage_config("global", "autopet", **kw), default_stage_config("sr", "autopet", **kw)


def measure(scale: float = 1.0, device: str | None = None, steps: int | None = None, sr_steps: int | None = None,
            cases: int = 1, patch_batch: int = 4, seed: int = 0) -> dict:
    """Sample ``cases`` cases with random weights; return per-stage seconds and peak memory."""
    import torch

    from synthaug.core.demographics import sample_population
    from synthaug.model.nets import count_parameters
    from synthaug.model.stages import build_stage_model
    from synthaug.sampling.cascade import CascadedSampler

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    g_cfg, s_cfg = scaled_configs(scale)
    torch.manual_seed(seed)
    g_model, s_model = build_stage_model(g_cfg).eval().to(dev), build_stage_model(s_cfg).eval().to(dev)
    sampler = CascadedSampler(g_model, g_cfg, s_model, s_cfg, sha256="random-weights", device=dev)
    sampler.configure(steps=steps, sr_steps=sr_steps, patch_batch=patch_batch)
    demos = sample_population(cases, seed=seed)

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    # Warm-up on the global stage (cuDNN autotuning, lazy init) so that timings are per case.
    sampler.configure(steps=1)
    sampler.sample_global(demos[:1], [seed])
    sampler.configure(steps=steps or g_cfg.diffusion.steps)
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    secs = {"global": 0.0, "sr": 0.0}
    cuda_peak = {}
    for i, d in enumerate(demos):
        sync()
        t0 = time.perf_counter()
        low = sampler.sample_global([d], [seed + i])
        sync()
        t1 = time.perf_counter()
        if cuda:
            cuda_peak["global"] = max(cuda_peak.get("global", 0), torch.cuda.max_memory_allocated(dev) / 2**20)
            torch.cuda.reset_peak_memory_stats(dev)
        sampler.sample_sr(low, [d], [seed + i]).cpu()
        sync()
        secs["global"] += t1 - t0
        secs["sr"] += time.perf_counter() - t1
        if cuda:
            cuda_peak["sr"] = max(cuda_peak.get("sr", 0), torch.cuda.max_memory_allocated(dev) / 2**20)
    return {
        "scale": scale, "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if cuda else machine()["cpu"],
        "cases": cases, "settings": sampler.settings, "patch_batch": patch_batch,
        "global_grid": g_cfg.global_grid.to_dict(), "output_grid": s_cfg.output_grid.to_dict(),
        "parameters": {"global": count_parameters(g_model), "sr": count_parameters(s_model)},
        "seconds_per_case": {"global": secs["global"] / cases, "sr": secs["sr"] / cases,
                             "cascade": (secs["global"] + secs["sr"]) / cases},
        "cuda_max_memory_allocated_mib": cuda_peak or None,
        "peak_rss_mib": peak_rss_mib(),
        "random_weights": True,
    }


def run(ctx: Context) -> dict:
    """Entry-point hook: full size on a GPU; on a CPU-only machine a reduced-size check."""
    import torch

    if torch.cuda.is_available():
        return measure(1.0, "cuda")
    out = measure(0.25, "cpu", sr_steps=1)
    out["note"] = "no GPU on this machine: reduced-size CPU check (scale 0.25, 1 SR step), not the GPU measurement"
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import write_result

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="grid scale in (0, 1] (default 1 = the autopet size)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--steps", type=int, default=None, help="global-stage sampler steps (default: the config's)")
    p.add_argument("--sr-steps", type=int, default=None, help="SR-stage sampler steps (default: the config's)")
    p.add_argument("--cases", type=int, default=1, help="cases to time (default 1)")
    p.add_argument("--patch-batch", type=int, default=4, help="SR patches per network call (default 4)")
    p.add_argument("--out", default=str(RESULTS_DIR), help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    if args.cases < 1:
        p.error(f"--cases {args.cases} must be >= 1")
    if not 0 < args.scale <= 1:
        p.error(f"--scale {args.scale} must be in (0, 1]")
    ctx = Context(out_dir=Path(args.out), command=" ".join(["python", "benchmarks/gpu_autopet.py", *(argv or sys.argv[1:])]))
    started, load0, t0 = now(), load_average(), time.perf_counter()
    result = measure(args.scale, args.device, args.steps, args.sr_steps, args.cases, args.patch_batch)
    path = write_result(ctx, NAME, result, started=started, load_start=load0, seconds=time.perf_counter() - t0)
    print(f"{result['device_name']}: {result['seconds_per_case']['cascade']:.1f} s per case "
          f"(global {result['seconds_per_case']['global']:.1f} s, SR {result['seconds_per_case']['sr']:.1f} s), "
          f"CUDA peak {result['cuda_max_memory_allocated_mib']} MiB, peak RSS {result['peak_rss_mib']:.0f} MiB")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
