"""Seconds per case on CPU at the demo preset: the global stage, the SR stage and the whole
cascade, and the share of time spent outside the network.

The networks' ``forward`` is wrapped with a timer (a forward pre-hook and a forward
hook on the U-Net inside each stage's preconditioner); everything else (sampler
arithmetic in float64, patch extraction and blending, conditioning, decoding) is
"outside the network". With trained weights the cascade is loaded from them; without,
random weights of the same architecture are used (the cost does not depend on the values).

A second measurement compares the global network's forward time per sample at batch
sizes 1, 2 and 4, with oneDNN forced for the convolutions (the shipped path) and with
PyTorch's own kernel choice, side by side (ratios matter on a shared machine). A third runs the SR stage
on stage-1 samples with the shipped patching and with overlapping z-patches of a quarter of
the volume (overlap 16, four per network call: the demo default before it became one
whole-volume patch), one after the other on each sample, and compares their seconds and
outputs, organ by organ.
"""

from __future__ import annotations

import time

import numpy as np

from .common import Context, NetTimer, has_stage, load_average, weights_info

NAME = "speed"
TITLE = "Seconds per case (CPU, demo preset)"


def random_cascade(preset: str = "demo", seed: int = 0):
    """A :class:`CascadedSampler` with random weights of the production architecture."""
    import torch

    from synthaug.model.stages import build_stage_model, default_stage_config
    from synthaug.sampling.cascade import CascadedSampler

    torch.manual_seed(seed)
    g_cfg, s_cfg = default_stage_config("global", preset), default_stage_config("sr", preset)
    return CascadedSampler(build_stage_model(g_cfg).eval(), g_cfg, build_stage_model(s_cfg).eval(), s_cfg,
                           sha256="random-weights")


def load_cascade(ctx: Context):
    """The cascade of ``ctx.main_weights`` (both stages) or a random one; plus a description."""
    from synthaug.sampling.cascade import CascadedSampler

    folder = ctx.main_weights
    if has_stage(folder, "global") and has_stage(folder, "sr"):
        return CascadedSampler.from_pretrained(folder), {"weights": weights_info(folder), "random_weights": False}
    note = "no trained weights with both stages; random weights of the production architecture"
    return random_cascade(), {"weights": weights_info(folder), "random_weights": True, "note": note}


def time_cascade(sampler, n_cases: int, seed: int = 0) -> dict:
    """Per-case seconds of each stage and the whole cascade, with network time per stage."""
    from synthaug.core.demographics import sample_population

    demos = sample_population(n_cases, seed=seed)
    stage_seconds = {"global": 0.0, "sr": 0.0}
    original = {"global": sampler.sample_global, "sr": sampler.sample_sr}

    def timed(name):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original[name](*args, **kwargs)
            finally:
                stage_seconds[name] += time.perf_counter() - t0
        return wrapper

    sampler.sample_global, sampler.sample_sr = timed("global"), timed("sr")
    try:
        with NetTimer(sampler.global_model.net) as g_net, NetTimer(sampler.sr_model.net) as s_net:
            t0 = time.perf_counter()
            sampler.sample(demos, seed=[seed + i for i in range(n_cases)])
            total = time.perf_counter() - t0
    finally:
        del sampler.sample_global, sampler.sample_sr  # back to the class methods
    net = {"global": g_net.seconds, "sr": s_net.seconds}
    calls = {"global": g_net.calls, "sr": s_net.calls}
    out = {}
    for name in ("global", "sr"):
        secs = stage_seconds[name]
        out[name] = {"seconds_per_case": secs / n_cases, "network_seconds_per_case": net[name] / n_cases,
                     "network_calls_per_case": calls[name] / n_cases,
                     "outside_network_share": (secs - net[name]) / secs if secs > 0 else None}
    net_total = net["global"] + net["sr"]
    out["cascade"] = {"seconds_per_case": total / n_cases, "network_seconds_per_case": net_total / n_cases,
                      "outside_network_share": (total - net_total) / total,
                      "decode_and_other_seconds_per_case": (total - stage_seconds["global"] - stage_seconds["sr"]) / n_cases}
    return out


def global_batch_scaling(model, grid_shape, channels: int, batches=(1, 2, 4), repeats: int = 3) -> dict:
    """Forward seconds per sample of a global-stage network at several batch sizes, with oneDNN
    forced for the convolutions (the shipped path, ``synthaug.model.nets``) and with PyTorch's own
    kernel choice, all interleaved."""
    import torch

    from synthaug.core.demographics import COND_DIM
    from synthaug.model.nets import onednn_convolutions

    inputs = {b: (torch.randn(b, channels, *grid_shape), torch.full((b,), 1.0), torch.zeros(b, COND_DIM))
              for b in batches}
    paths = {"onednn": True, "pytorch_choice": False}
    times: dict[tuple[str, int], list[float]] = {(p, b): [] for p in paths for b in batches}
    with torch.no_grad():
        for path, b in times:  # warm-up
            with onednn_convolutions(paths[path]):
                model(*inputs[b])
        for _ in range(repeats):
            for path, b in times:  # interleaved, so that load changes hit all alike
                with onednn_convolutions(paths[path]):
                    t0 = time.perf_counter()
                    model(*inputs[b])
                    times[(path, b)].append(time.perf_counter() - t0)
    per_sample = {p: {str(b): float(np.median(times[(p, b)])) / b for b in batches} for p in paths}
    one = per_sample["onednn"][str(batches[0])]
    out = {"seconds_per_sample": per_sample["onednn"],
           "pytorch_choice_seconds_per_sample": per_sample["pytorch_choice"],
           "ratio_to_batch_1": {k: v / one for k, v in per_sample["onednn"].items()}}
    if 1 in batches and 2 in batches:
        # the sampler before oneDNN was forced: one case evaluated as a batch of two, PyTorch's choice
        out["previous_single_case_over_shipped"] = 2 * per_sample["pytorch_choice"]["2"] / per_sample["onednn"]["1"]
    return out


#: The patching the shipped one is compared with: z-patches of a quarter of the volume, overlap 16, 4 per call.
SPLIT_OVERLAP, SPLIT_BATCH = 16, 4


def sr_patching(sampler, n_samples: int = 2, seed: int = 0) -> dict:
    """The SR stage on ``n_samples`` stage-1 samples with the shipped patching and with split
    z-patches: seconds per case (the two interleaved), how far the split outputs are from the
    shipped ones (mean |CT| and |PET| difference, share of voxels with the same organ and
    lesion label), and per organ the split run's mean volume and SUVmean relative to the
    shipped run's (the SR stage's calibration was fitted with one of them)."""
    from synthaug.core.demographics import sample_population
    from synthaug.core.labels import ORGAN_LABELS
    from synthaug.model.channels import decode

    shape = sampler.sr_config.output_grid.shape
    shipped = {"patch_size": tuple(sampler.patch_size), "overlap": sampler.overlap, "patch_batch": sampler.patch_batch}
    split = {"patch_size": (*shape[:2], shape[2] // 4), "overlap": SPLIT_OVERLAP, "patch_batch": SPLIT_BATCH}
    times: dict[str, list[float]] = {"shipped": [], "split": []}
    diffs: dict[str, list[float]] = {"ct": [], "pet": [], "organs": [], "lesions": []}
    organs = {name: {"volume": {"shipped": 0.0, "split": 0.0}, "suv": {"shipped": 0.0, "split": 0.0}}
              for i, name in ORGAN_LABELS.items() if i}
    for i, demo in enumerate(sample_population(n_samples, seed=seed)):
        lowres = sampler.sample_global([demo], [seed + i])
        out = {}
        for name, cfg in (("shipped", shipped), ("split", split)):
            sampler.configure(**cfg)
            t0 = time.perf_counter()
            x = sampler.sample_sr(lowres, [demo], [seed + i])
            times[name].append(time.perf_counter() - t0)
            out[name] = decode(x[0])
            for label, organ in ORGAN_LABELS.items():
                if label:
                    inside = out[name]["organs"] == label
                    organs[organ]["volume"][name] += float(inside.sum())
                    organs[organ]["suv"][name] += float(out[name]["pet"][inside].mean()) if inside.any() else 0.0
        a, b = out["shipped"], out["split"]
        diffs["ct"].append(float(np.abs(a["ct"] - b["ct"]).mean()))
        diffs["pet"].append(float(np.abs(a["pet"] - b["pet"]).mean()))
        diffs["organs"].append(float((a["organs"] == b["organs"]).mean()))
        diffs["lesions"].append(float((a["lesions"] == b["lesions"]).mean()))
    sampler.configure(**shipped)
    sec = {k: float(np.mean(v)) for k, v in times.items()}

    def pct(d):
        return 100.0 * (d["split"] / d["shipped"] - 1.0) if d["shipped"] else None

    return {"samples": n_samples,
            "shipped": {k: list(v) if isinstance(v, tuple) else v for k, v in shipped.items()},
            "split": {k: list(v) if isinstance(v, tuple) else v for k, v in split.items()},
            "seconds": sec, "split_over_shipped": sec["split"] / sec["shipped"],
            "ct_mean_abs_difference_hu": float(np.mean(diffs["ct"])),
            "pet_mean_abs_difference_suv": float(np.mean(diffs["pet"])),
            "organ_label_agreement": float(np.mean(diffs["organs"])),
            "lesion_label_agreement": float(np.mean(diffs["lesions"])),
            "split_vs_shipped_pct": {o: {"volume": pct(v["volume"]), "suv_mean": pct(v["suv"])} for o, v in organs.items()}}


def run(ctx: Context) -> dict:
    sampler, info = load_cascade(ctx)
    n_cases = 1 if ctx.quick else 2
    if ctx.quick:
        sampler.configure(sr_steps=1)
    settings = sampler.settings
    load = {"before": load_average()}
    timing = time_cascade(sampler, n_cases)
    load["after_cascade"] = load_average()
    g_cfg = sampler.global_config
    batch = global_batch_scaling(sampler.global_model, g_cfg.global_grid.shape, g_cfg.net.in_channels,
                                 repeats=2 if ctx.quick else 3)
    load["after_batch_scaling"] = load_average()
    patching = sr_patching(sampler, n_samples=1 if ctx.quick else 4)
    load["after_sr_patching"] = load_average()
    return {**info, "cases": n_cases, "settings": settings, "preset": g_cfg.preset,
            "global_grid": g_cfg.global_grid.to_dict(), "output_grid": sampler.output_grid.to_dict(),
            "timing": timing, "global_forward_batch_scaling": batch, "sr_patching": patching, "load_average": load}
