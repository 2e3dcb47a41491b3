"""Training step time on the CPU in fp32 and in bf16 mixed precision, side by side.

Both stages at the demo preset, trained on a small phantom cohort written for the
benchmark, with the production batch sizes (global 4, SR 2). For each stage two
trainers start from the same initial weights, one in fp32 and one with bf16 autocast
(``synthaug train --precision``); their steps are timed interleaved (fp32, bf16, fp32,
...) so that load changes on a shared machine hit both alike, and the ratio is what
counts. The same steps see the same batches and noise in both trainers, so the losses
side by side show whether bf16 changes what is learnt over the first steps.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .common import Context

NAME = "train_speed"
TITLE = "Training step time: fp32 vs bf16 (CPU, demo preset)"
BATCH = {"global": 4, "sr": 2}


def _cohort(root: Path, n: int) -> Path:
    """A small demo-preset phantom cohort in the AutoPET layout."""
    from synthaug.core.demographics import sample_population
    from synthaug.core.io import DEMOGRAPHICS_FILE, write_case, write_demographics_csv
    from synthaug.phantom.body import make_phantom

    demos = {f"bench_{i:03d}": d for i, d in enumerate(sample_population(n, seed=5))}
    for i, (case_id, demo) in enumerate(demos.items()):
        write_case(root, case_id, make_phantom(demo, preset="demo", seed=500 + i))
    write_demographics_csv(root / DEMOGRAPHICS_FILE, demos)
    return root


def _trainers(stage: str, data_dir: Path, out: Path):
    import torch

    from synthaug.model.stages import default_stage_config
    from synthaug.model.train import TrainConfig, Trainer, load_stage_data

    cfg = default_stage_config(stage, "demo")
    data = load_stage_data(cfg, data_dir, out / "cache")
    train = TrainConfig(batch_size=BATCH[stage], lr=3e-4, lr_warmup=1)
    trainers = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        trainers[precision] = Trainer(cfg, train, data, out / precision, device="cpu", precision=precision)
    return trainers


def run(ctx: Context) -> dict:
    from synthaug.model.train import compute_dtype

    native = compute_dtype("cpu", "auto") is not None
    steps = 3 if ctx.quick else 12
    out: dict = {"bf16_native": native, "auto_precision": "bf16" if native else "fp32", "stages": {}}
    with tempfile.TemporaryDirectory(prefix="synthaug-train-speed-") as tmp:
        tmp = Path(tmp)
        data_dir = _cohort(tmp / "cohort", 4)
        for stage in ("global", "sr"):
            trainers = _trainers(stage, data_dir, tmp / stage)
            times: dict[str, list[float]] = {p: [] for p in trainers}
            losses: dict[str, list[float]] = {p: [] for p in trainers}
            for p, t in trainers.items():  # warm-up (oneDNN picks its kernels on the first call)
                losses[p].append(t.train_step())
            for _ in range(steps):
                for p, t in trainers.items():
                    t0 = time.perf_counter()
                    losses[p].append(t.train_step())
                    times[p].append(time.perf_counter() - t0)
            med = {p: float(np.median(v)) for p, v in times.items()}
            out["stages"][stage] = {
                "batch_size": BATCH[stage], "steps_timed": steps, "seconds_per_step": med,
                "speedup_bf16": med["fp32"] / med["bf16"],
                "losses": losses,
                "mean_abs_loss_difference": float(np.mean(np.abs(np.subtract(losses["fp32"], losses["bf16"])))),
                "mean_loss": {p: float(np.mean(v)) for p, v in losses.items()},
            }
    return out
