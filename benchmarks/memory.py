"""Peak memory of SR sampling vs output volume size at a fixed patch size.

Each measurement runs in a fresh subprocess (``python -m benchmarks.memory --worker ...``)
so that peaks do not carry over: it builds a random-weight SR model with
``default_stage_config("sr", output_grid=..., global_grid=...)`` (global grid = output / 4
per axis, the demo ratio), samples with 1 sampler step at patch 128 x 128 x 64, overlap
8, 4 patches per network call, and reports the peak RSS (``VmHWM``) after each phase:

* ``idle``   imports + model built (the floor every process pays),
* ``net``    one network call on a batch of patches (activations at this patch size), at
             the sampling patch batch (4) and at one patch per call,
* ``sample`` ``CascadedSampler.sample_sr`` over the whole volume, then ``decode``.

and, with a GPU, ``torch.cuda.max_memory_allocated``. The issue-6 acceptance is a peak
growth below 25 % for twice the voxels. The JSON also splits the growth per voxel into
"full-volume 15-channel float32 copies" (60 bytes per voxel each), which is how the
sampler state (noise, x, denoised, derivative, blending accumulators, upsampled low-res)
scales, against the per-patch activations that do not grow with the volume.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from .common import REPO, Context, peak_rss_mib, rss_mib

NAME = "memory"
TITLE = "Peak memory of SR sampling vs volume size"
PATCH = (128, 128, 64)
OVERLAP = 8
PATCH_BATCH = 4
#: (label, output shape): 1x = the demo output grid.
SIZES = (("1x", (128, 128, 256)), ("2x", (128, 128, 512)), ("4x", (256, 256, 256)))
SPACING_MM = 4.0
BYTES_PER_STATE_VOXEL = 15 * 4  # 15 channels float32


def _configs(shape):
    from synthaug.core.grid import Grid
    from synthaug.model.stages import default_stage_config

    out = Grid(tuple(shape), (SPACING_MM,) * 3)
    glob = Grid(tuple(max(4, s // 4) for s in shape), tuple(SPACING_MM * s / max(4, s // 4) for s in shape))
    overrides = {"output_grid": out, "global_grid": glob}
    return default_stage_config("global", **overrides), default_stage_config("sr", **overrides)


def worker(shape, probe: str, device: str = "cpu", threads: int | None = None, patch_batch: int = PATCH_BATCH) -> dict:
    """Measure one size in this (fresh) process; see the module docstring for ``probe``."""
    import torch

    from synthaug.core.demographics import Demographics
    from synthaug.model.channels import NUM_CHANNELS, decode
    from synthaug.model.stages import build_stage_model, sr_concat
    from synthaug.sampling.cascade import CascadedSampler

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    g_cfg, s_cfg = _configs(shape)
    model = build_stage_model(s_cfg).eval().to(device)
    out: dict = {"shape": list(shape), "probe": probe, "device": device, "voxels": int(torch.tensor(shape).prod()),
                 "patch_batch": patch_batch,
                 "rss_after_build_mib": rss_mib(), "peak_after_build_mib": peak_rss_mib()}
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    lowres = torch.randn(1, NUM_CHANNELS, *g_cfg.global_grid.shape, generator=torch.Generator().manual_seed(0)).to(device)
    demo = Demographics(60, "M", 178, 82)
    t0 = time.perf_counter()
    if probe == "net":
        region = tuple(slice(0, p) for p in PATCH)
        x = torch.randn(patch_batch, NUM_CHANNELS, *PATCH, device=device)
        concat = sr_concat(lowres, shape, region, s_cfg.upsample).expand(patch_batch, -1, -1, -1, -1)
        cond = torch.from_numpy(demo.to_vector()).float()[None].expand(patch_batch, -1).to(device)
        with torch.no_grad():
            model(x, torch.full((patch_batch,), 1.0, device=device), cond, concat)
        out["peak_after_net_mib"] = peak_rss_mib()
    elif probe == "sample":
        sampler = CascadedSampler(None, g_cfg, model, s_cfg, sha256="random", device=device)
        sampler.configure(sr_steps=1, patch_size=PATCH, overlap=OVERLAP, patch_batch=patch_batch)
        x = sampler.sample_sr(lowres, [demo], [0])
        out["peak_after_sample_mib"] = peak_rss_mib()
        if cuda:
            out["cuda_peak_sample_mib"] = torch.cuda.max_memory_allocated() / 2**20
        decode(x[0])
        out["peak_after_decode_mib"] = peak_rss_mib()
        out["patches"] = len(_regions(shape))
    elif probe != "idle":
        raise ValueError(f"probe={probe!r}; choose idle, net or sample")
    out["seconds"] = time.perf_counter() - t0
    out["peak_mib"] = peak_rss_mib()
    if cuda:
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _regions(shape):
    import itertools

    from synthaug.model.stages import patch_starts

    return list(itertools.product(*[patch_starts(n, p, OVERLAP) for n, p in zip(shape, PATCH)]))


def measure(shape, probe: str, device: str = "cpu", threads: int | None = None, patch_batch: int = PATCH_BATCH,
            timeout: float = 3600) -> dict:
    """Run :func:`worker` in a fresh Python process and return its JSON."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--worker", "--probe", probe, "--device", device,
           "--patch-batch", str(patch_batch), "--shape", *map(str, shape)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {shape} {probe} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def analyse(rows: list[dict], idle: dict, net: dict, net_one: dict | None = None) -> dict:
    """Growth ratios and where the memory goes (see the module docstring); ``net`` is the
    network probe at the sampling patch batch, ``net_one`` (optional) at one patch per call."""
    base = rows[0]
    out: dict = {"idle_peak_mib": idle["peak_mib"], "net_probe_peak_mib": net["peak_mib"],
                 "activations_mib": net["peak_mib"] - idle["peak_mib"], "sizes": {}}
    if net_one is not None:
        out["activations_one_patch_mib"] = net_one["peak_mib"] - idle["peak_mib"]
    for r in rows:
        vox_ratio = r["voxels"] / base["voxels"]
        state_copy = r["voxels"] * BYTES_PER_STATE_VOXEL / 2**20
        out["sizes"][r["label"]] = {
            "voxel_ratio": vox_ratio, "peak_mib": r["peak_mib"], "peak_ratio": r["peak_mib"] / base["peak_mib"],
            "growth_percent": 100 * (r["peak_mib"] / base["peak_mib"] - 1),
            "one_state_copy_mib": state_copy,
            "above_idle_mib": r["peak_after_sample_mib"] - idle["peak_mib"],
            "above_net_probe_in_state_copies": (r["peak_after_sample_mib"] - net["peak_mib"]) / state_copy,
        }
    two = next((r for r in rows if r["label"] == "2x"), None)
    if two is not None:
        growth = 100 * (two["peak_mib"] / base["peak_mib"] - 1)
        out["acceptance"] = {"criterion": "peak grows < 25 % for 2x voxels", "growth_percent": growth,
                             "passed": bool(growth < 25.0)}
    if len(rows) >= 2:
        last = rows[-1]
        slope = (last["peak_after_sample_mib"] - base["peak_after_sample_mib"]) * 2**20 / (last["voxels"] - base["voxels"])
        out["bytes_per_voxel"] = slope
        out["state_copies_per_voxel"] = slope / BYTES_PER_STATE_VOXEL
        autopet = 400 * 400 * 326
        out["autopet_output_state_gib"] = slope * autopet / 2**30  # volume-proportional part at 400 x 400 x 326
    return out


def run(ctx: Context) -> dict:
    import torch

    from synthaug.core.progress import progress_bar

    sizes = SIZES[:2] if ctx.quick else SIZES
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    result: dict = {"patch": list(PATCH), "overlap": OVERLAP, "patch_batch": PATCH_BATCH, "sampler_steps": 1,
                    "spacing_mm": SPACING_MM, "devices": {}}
    for device in devices:
        jobs = [("idle", "idle", SIZES[0][1], PATCH_BATCH), ("net", "net", SIZES[0][1], PATCH_BATCH)]
        if not ctx.quick:
            jobs.append(("net", "net_one", SIZES[0][1], 1))
        jobs += [("sample", lbl, s, PATCH_BATCH) for lbl, s in sizes]
        got: dict = {}
        rows = []
        for probe, label, shape, pb in progress_bar(jobs, desc=f"memory {device}"):
            r = measure(shape, probe, device, ctx.threads, pb)
            if probe == "sample":
                rows.append({"label": label, **r})
            else:
                got[label] = r
        result["devices"][device] = {"rows": rows, **got,
                                     "analysis": analyse(rows, got["idle"], got["net"], got.get("net_one"))}
    return result


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one memory measurement in this process (used by the memory benchmark)")
    p.add_argument("--worker", action="store_true", required=True)
    p.add_argument("--shape", type=int, nargs=3, required=True)
    p.add_argument("--probe", default="sample", choices=("idle", "net", "sample"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--patch-batch", type=int, default=PATCH_BATCH)
    args = p.parse_args(argv)
    print(json.dumps(worker(tuple(args.shape), args.probe, args.device, args.threads, args.patch_batch)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
