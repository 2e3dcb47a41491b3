"""One training loop for both stages and both objectives.

Features: AdamW, an EMA of the weights with warm-up, gradient clipping, condition
dropout (for classifier-free guidance and unknown demographics), AMP (bfloat16) on
GPU, a progress bar with the loss, periodic checkpoints, exact resume and
DistributedDataParallel under ``torchrun`` (gloo on CPU, NCCL on GPU).

Every random draw of step ``k`` comes from generators seeded with ``(seed, k, rank)``,
so a run resumed from its step-``k`` checkpoint continues exactly as an uninterrupted
run would (the optimizer and EMA states are checkpointed too).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..core.demographics import FIELDS, PopulationRanges, drop_fields
from ..core.io import Cohort, atomic_write_json, case_identity
from ..core.progress import progress_bar
from .balance import stratum_weights
from .channels import NUM_CHANNELS, encode
from .preprocess import GridArrays, preprocess_cohort
from .stages import (
    PVCorrection,
    StageConfig,
    build_stage_model,
    default_stage_config,
    load_stage,
    pv_correction,
    save_stage,
    sr_concat,
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the architecture lives in :class:`StageConfig`)."""

    steps: int = 20000               # total optimisation steps
    batch_size: int = 4              # per process
    lr: float = 2e-4                 # AdamW learning rate (after warm-up)
    lr_warmup: int = 200             # linear warm-up steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0           # max global grad norm
    ema_decay: float = 0.999         # final EMA decay ...
    ema_warmup: float = 10.0         # ... reached as min(decay, (1 + k) / (warmup + k))
    cond_drop_all: float = 0.1       # probability of dropping all demographics (CFG)
    cond_drop_field: float = 0.1     # probability of dropping each field on its own
    checkpoint_every: int = 250      # steps between checkpoints
    keep_checkpoints: int = 2        # training states kept on disk
    log_every: int = 25
    seed: int = 0
    balance: int = 0                 # 0: cases drawn uniformly; k: sex x k height bands drawn equally (balance.py)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# --- data -------------------------------------------------------------------------------


class StageData:
    """Draws training batches for a stage from cached grid arrays."""

    def __init__(self, stage: StageConfig, global_arrays: GridArrays, output_arrays: GridArrays | None,
                 balance: int = 0) -> None:
        self.stage = stage
        self.draw_p = stratum_weights(global_arrays.cond, balance)  # None: uniform
        self.g = global_arrays
        self.o = output_arrays
        if stage.stage == "sr" and output_arrays is None:
            raise ValueError("the SR stage needs the cohort on the output grid")
        if output_arrays is not None and output_arrays.case_ids != global_arrays.case_ids:
            raise ValueError("global and output arrays hold different cases")
        self._pvc: dict[int, PVCorrection] = {}

    def __len__(self) -> int:
        return len(self.g)

    def _encode(self, arrays: GridArrays, i: int, region=None) -> np.ndarray:
        sl = (i,) if region is None else (i, *region)
        organs = arrays.organs[sl] if arrays.has_organs[i] else None
        return encode(np.asarray(arrays.ct[sl], np.float32), np.asarray(arrays.pet[sl], np.float32), organs, arrays.lesions[sl])

    def _pv_correction(self, idx, lowres: torch.Tensor) -> PVCorrection:
        """The partial-volume correction of each drawn case's clean low-res volume, computed
        once per case (it needs the whole volume; the augmentation noise leaves it nearly
        unchanged)."""
        for j, i in enumerate(idx):
            if int(i) not in self._pvc:
                self._pvc[int(i)] = pv_correction(lowres[j:j + 1], self.stage.output_grid.shape)
        parts = [self._pvc[int(i)] for i in idx]
        return PVCorrection(means=torch.cat([p.means for p in parts]), mixed=torch.cat([p.mixed for p in parts]))

    def batch(self, rng: np.random.Generator, gen: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        uniform = self.draw_p is None
        idx = rng.integers(len(self), size=batch_size) if uniform else rng.choice(len(self), batch_size, p=self.draw_p)
        cond = torch.from_numpy(np.stack([self.g.cond[i] for i in idx]))
        lowres = torch.from_numpy(np.stack([self._encode(self.g, i) for i in idx]))
        if self.stage.stage == "global":
            return {"x0": lowres, "cond": cond, "concat": None}
        out_shape = self.stage.output_grid.shape
        patch = self.stage.patch_size
        starts = [int(rng.integers(0, n - p + 1)) for n, p in zip(out_shape, patch)]
        region = tuple(slice(s, s + p) for s, p in zip(starts, patch))
        hr = torch.from_numpy(np.stack([self._encode(self.o, i, region) for i in idx]))
        # Conditioning augmentation: the low-res input is perturbed so that imperfect
        # stage-1 outputs are refined, not amplified.
        aug = torch.rand(batch_size, generator=gen) * self.stage.cond_aug_max
        pvc = self._pv_correction(idx, lowres) if self.stage.upsample == "label_pvc" else None
        lowres = lowres + aug.view(-1, 1, 1, 1, 1) * torch.randn(lowres.shape, generator=gen)
        concat = sr_concat(lowres, out_shape, region, self.stage.upsample, pvc)
        residual = hr - concat[:, :NUM_CHANNELS]  # the upsampled low-res channels
        return {"x0": residual, "cond": cond, "concat": concat}


@dataclass(frozen=True)
class TrainingCohort:
    """What a run trains on, recorded in the weights it exports (JSON ``info.training_data``, and the
    demographics it spans as ``training_population``), so shipped weights name their training cases."""

    path: str
    case_ids: tuple[str, ...]
    population: PopulationRanges
    #: each case's :func:`~synthaug.core.io.case_identity` (a phantom's seed), so that a test cohort whose
    #: ids repeat these (phantom cohorts all count from ``phantom_00000``) is not taken for them
    case_identities: tuple[str, ...] = ()

    @classmethod
    def of(cls, data: str | Path) -> TrainingCohort:
        cohort = Cohort(data)  # as training reads it: its demographics.csv lists every case
        demos = list(cohort.demographics.values())
        return cls(str(data), tuple(cohort.case_ids), PopulationRanges.of(demos, source=f"{data} ({len(demos)} cases)"),
                   tuple(case_identity(cohort, c) for c in cohort.case_ids))

    def to_dict(self) -> dict:
        ids = "\n".join(self.case_ids).encode()
        return {"path": self.path, "cases": len(self.case_ids), "case_ids": list(self.case_ids),
                "case_ids_sha256": hashlib.sha256(ids).hexdigest(), "case_identities": list(self.case_identities)}


def load_stage_data(stage: StageConfig, data: str | Path, cache_root: str | Path, balance: int = 0) -> StageData:
    """Preprocess (once, cached) a cohort onto the grids a stage needs; ``balance`` as :class:`TrainConfig`'s."""
    g = preprocess_cohort(data, stage.global_grid, cache_root, **stage.resampling(stage.global_grid))
    o = preprocess_cohort(data, stage.output_grid, cache_root, **stage.resampling(stage.output_grid)) if stage.stage == "sr" else None
    return StageData(stage, g, o, balance)


# --- the loop ---------------------------------------------------------------------------


class _LossModule(nn.Module):
    """Puts the loss inside ``forward`` so DistributedDataParallel can sync gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x0, cond, concat, generator):
        return self.model.loss(x0, cond, concat, generator=generator).mean()


PRECISIONS = ("auto", "bf16", "fp32")


def compute_dtype(device: str | torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype the forward and backward passes autocast to, or None for plain fp32.

    ``auto`` picks bf16 where the hardware computes it natively: CUDA, and CPUs whose
    oneDNN has bf16 kernels (AVX512-BF16 or AMX), where a demo training step is markedly
    faster than in fp32 (benchmarks/RESULTS.md, "Training step time", from ``python -m benchmarks
    --only train_speed``).
    Weights, optimiser state and the loss stay fp32 (mixed precision).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} must be one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu":
        try:
            return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
        except (AttributeError, RuntimeError):
            return None
    return None


#: Largest relative gradient error accepted from mixed precision (bf16 rounding gives 0.01-0.02 on the demo networks).
MIXED_PRECISION_TOLERANCE = 0.1


def mixed_precision_error(model: nn.Module, batch: dict[str, torch.Tensor], dtype: torch.dtype,
                          device: torch.device) -> tuple[float, str]:
    """Worst relative error of ``dtype``-autocast gradients vs fp32 ones, and where.

    Some CPU bf16 convolution kernels return wrong weight gradients for small volumes
    (seen with torch 2.13 for a 2x2x8 volume: relative errors of 1e12, finite or not),
    so a run checks its own network and shapes once before trusting mixed precision.
    The check runs on a copy whose zero-initialised layers get small random weights,
    so that gradients reach every layer.
    """
    import copy

    probe = copy.deepcopy(model).to(device).train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in probe.parameters():
            if not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=gen).to(p))
    concat = batch.get("concat")
    grads = {}
    for low in (False, True):
        probe.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=low):
            loss = probe.loss(batch["x0"].to(device), batch["cond"].to(device),
                              None if concat is None else concat.to(device),
                              generator=torch.Generator().manual_seed(1)).mean()
        loss.backward()
        grads[low] = {n: p.grad.detach().clone() for n, p in probe.named_parameters() if p.grad is not None}
    norms = {name: float(ref.norm()) for name, ref in grads[False].items()}
    # Errors relative to each gradient, floored at 1 % of a typical gradient's size: some gradients are
    # zero up to rounding (e.g. attention key biases), and fp32 rounding is no reference for them.
    floor = 0.01 * math.sqrt(sum(v * v for v in norms.values()) / max(1, len(norms)))
    worst, where = 0.0, ""
    for name, ref in grads[False].items():
        err = float((grads[True][name] - ref).norm()) / (norms[name] + floor)
        if not math.isfinite(err) or err > worst:
            worst, where = (math.inf if not math.isfinite(err) else err), name
            if worst == math.inf:
                break
    return worst, where


def _dist_info() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def init_distributed(device: str) -> tuple[int, int]:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return _dist_info()


def _step_generators(seed: int, step: int, rank: int) -> tuple[np.random.Generator, torch.Generator]:
    rng = np.random.default_rng([seed, step, rank])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, gen


def _cond_dropout(cond: torch.Tensor, rng: np.random.Generator, cfg: TrainConfig) -> torch.Tensor:
    n = cond.shape[0]
    drop = rng.random((n, len(FIELDS))) < cfg.cond_drop_field
    drop |= (rng.random(n) < cfg.cond_drop_all)[:, None]
    return drop_fields(cond, torch.from_numpy(drop.astype(np.uint8)))


class Trainer:
    """Trains one stage into a run folder.

    Run folder layout (both stages may share one folder, which is then directly a
    weights folder for :class:`~synthaug.sampling.cascade.CascadedSampler`): ``<stage>.safetensors``
    + ``<stage>.json`` (the EMA weights, ready to sample with), ``state_<stage>/``
    (resumable training states), ``log_<stage>.jsonl``, ``run_<stage>.json``, ``cache/``.
    """

    def __init__(self, stage: StageConfig, train: TrainConfig, data: StageData, out: str | Path,
                 device: str = "cpu", precision: str = "auto", cohort: TrainingCohort | None = None) -> None:
        self.stage, self.cfg, self.data, self.cohort = stage, train, data, cohort
        self.out = Path(out)
        self.device = torch.device(device)
        self.autocast = compute_dtype(self.device, precision)
        self.rank, self.world = _dist_info()
        torch.manual_seed(train.seed)  # identical initial weights on every rank
        self.model = build_stage_model(stage).to(self.device)
        if self.autocast is not None:
            self._check_mixed_precision(explicit=precision != "auto")
        self.ema = build_stage_model(stage).to(self.device)
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        self.loss_module: nn.Module = _LossModule(self.model)
        if self.world > 1:
            self.loss_module = nn.parallel.DistributedDataParallel(self.loss_module)
        self.step = 0

    # -- state --
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        t = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        t.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        for i, st in self.opt.state_dict()["state"].items():
            for k, v in st.items():
                t[f"opt.{i}.{k}"] = torch.as_tensor(v)
        return t

    def save(self) -> None:
        """Write the resumable state and the EMA weights (rank 0 only)."""
        if self.rank != 0:
            return
        state_dir = self.out / f"state_{self.stage.stage}"
        name = f"state_{self.step:08d}"
        save_checkpoint(state_dir / name, self._state_tensors(),
                        {"step": self.step, "stage": self.stage.to_dict(), "train": asdict(self.cfg)})
        # The EMA weights before latest.json: a run stopped in between resumes from the previous state
        # (bit for bit) instead of reporting a step its exported weights have not reached.
        exported, extra = self.stage, {"step": self.step, "train": asdict(self.cfg), "world_size": self.world}
        if self.cohort is not None:
            extra["training_data"] = self.cohort.to_dict()
            exported = replace(self.stage, population=self.cohort.population)
        save_stage(self.out / self.stage.stage, self.ema, exported, extra=extra)
        atomic_write_json(state_dir / "latest.json", {"step": self.step, "file": name})
        for old in sorted(state_dir.glob("state_*.json"))[: -self.cfg.keep_checkpoints]:
            old.with_suffix(".safetensors").unlink(missing_ok=True)
            old.unlink(missing_ok=True)

    def resume(self) -> None:
        """Load the latest training state of the run folder."""
        latest = self.out / f"state_{self.stage.stage}" / "latest.json"
        if not latest.is_file():
            raise FileNotFoundError(f"nothing to resume in {self.out} (no state/latest.json)")
        name = json.loads(latest.read_text())["file"]
        tensors, config = load_checkpoint(latest.parent / name)
        if StageConfig.from_dict(config["stage"]).to_dict() != self.stage.to_dict():
            raise CheckpointError(f"{self.out}: the run was started with a different stage config; start a new run folder")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        opt_state = self.opt.state_dict()
        for i in opt_state["param_groups"][0]["params"]:
            entries = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
            if entries:
                opt_state["state"][i] = entries
        self.opt.load_state_dict(opt_state)
        self.step = int(config["step"])

    def _check_mixed_precision(self, explicit: bool) -> None:
        """Fall back to fp32 (``auto``) or stop (``bf16``) when mixed-precision gradients are wrong here."""
        # The first batch, at the training batch size (kernels are chosen by shape); training's streams are untouched.
        rng, gen = _step_generators(self.cfg.seed, 0, self.rank)
        batch = self.data.batch(rng, gen, self.cfg.batch_size)
        err, where = mixed_precision_error(self.model, batch, self.autocast, self.device)
        if err <= MIXED_PRECISION_TOLERANCE:
            return
        message = (f"bf16 gradients on this {self.device.type} are wrong for this network "
                   f"(relative error {err:.3g} in {where})")
        if explicit:
            raise RuntimeError(f"{message}; train with `precision` fp32")
        warnings.warn(f"{message}; training in fp32", RuntimeWarning, stacklevel=2)
        self.autocast = None

    def init_net(self, state: dict[str, torch.Tensor]) -> None:
        """Start the network (and its EMA) from given weights instead of the random initialisation."""
        self.model.net.load_state_dict(state)
        self.ema.net.load_state_dict(state)

    # -- loop --
    def _lr(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.lr_warmup))

    @torch.no_grad()
    def _update_ema(self) -> None:
        k = self.step
        decay = min(self.cfg.ema_decay, (1 + k) / (self.cfg.ema_warmup + k))
        for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
            pe.lerp_(pm.detach(), 1 - decay)
        for be, bm in zip(self.ema.buffers(), self.model.buffers()):
            be.copy_(bm)

    def train_step(self) -> float:
        rng, gen = _step_generators(self.cfg.seed, self.step, self.rank)
        batch = self.data.batch(rng, gen, self.cfg.batch_size)
        cond = _cond_dropout(batch["cond"], rng, self.cfg).to(self.device)
        x0 = batch["x0"].to(self.device)
        concat = None if batch["concat"] is None else batch["concat"].to(self.device)
        for g in self.opt.param_groups:
            g["lr"] = self._lr(self.step)
        self.model.train()
        with torch.autocast(device_type=self.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            loss = self.loss_module(x0, cond, concat, gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        self._update_ema()
        return float(loss.detach())

    def fit(self, progress: bool = True) -> dict:
        """Train until ``cfg.steps``; returns a summary."""
        start_step, t0 = self.step, time.time()
        log = self.out / f"log_{self.stage.stage}.jsonl"
        losses: list[float] = []
        bar = progress_bar(total=self.cfg.steps, initial=self.step, desc=f"train {self.stage.stage}",
                   disable=not progress or self.rank != 0)
        while self.step < self.cfg.steps:
            loss = self.train_step()
            if not math.isfinite(loss):
                raise RuntimeError(f"loss became {loss} at step {self.step}; lower the learning rate")
            losses.append(loss)
            bar.update(1)
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                mean = float(np.mean(losses[-self.cfg.log_every:]))
                bar.set_postfix(loss=f"{mean:.4f}")
                if self.rank == 0:
                    with log.open("a") as fh:
                        fh.write(json.dumps({"step": self.step, "loss": mean, "time": time.time(),
                                             "precision": "bf16" if self.autocast is not None else "fp32"}) + "\n")
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.save()
        bar.close()
        return {"steps": self.step - start_step, "seconds": time.time() - t0,
                "final_loss": float(np.mean(losses[-50:])) if losses else None}


def init_weights(path: str | Path, stage_cfg: StageConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """The network weights of another run (or of shipped weights) to start a new run from.

    ``path`` is a weights folder (its ``<stage>.*`` is used) or a stage file without
    suffix. Only the network must match: a run may start from weights trained with
    another objective, on another cohort or grid. Returns the network's state dict and
    a description for the run file.
    """
    p = Path(path)
    if p.is_dir():
        p = p / stage_cfg.stage
    model, cfg, raw = load_stage(p)
    if cfg.stage != stage_cfg.stage:
        raise ValueError(f"`init_from` {path}: holds {cfg.stage}-stage weights, this run trains the {stage_cfg.stage} stage")
    if cfg.net.to_dict() != stage_cfg.net.to_dict():
        raise ValueError(f"`init_from` {path}: its network {cfg.net.to_dict()} differs from this run's {stage_cfg.net.to_dict()}")
    info = {"path": str(p), "sha256": raw.get("sha256"), "objective": cfg.diffusion.objective,
            "step": (raw.get("info") or {}).get("step")}
    return model.net.state_dict(), info


def train_stage(stage: str, data: str | Path, out: str | Path, *, preset: str = "demo", objective: str = "x0",
                train: TrainConfig | None = None, stage_overrides: dict | None = None, resume: bool = False,
                device: str = "cpu", progress: bool = True, precision: str = "auto",
                init_from: str | Path | None = None) -> dict:
    """Train a stage on a cohort in the AutoPET layout; see ``synthaug train --help``.

    ``init_from`` starts a new run from another run's network weights (ignored when a
    training state is resumed).
    """
    out = Path(out)
    train = train or TrainConfig()
    rank, _ = init_distributed(device)
    run_file = out / f"run_{stage}.json"
    if rank == 0 and run_file.exists() and not resume:
        raise FileExistsError(f"{out} already holds a {stage}-stage run; pass `resume` to continue it or choose a new `out`")
    if resume and run_file.is_file():
        saved = json.loads(run_file.read_text())
        stage_cfg = StageConfig.from_dict(saved["stage"])
        train = TrainConfig.from_dict({**saved["train"], "steps": train.steps})
    else:
        stage_cfg = default_stage_config(stage, preset, objective, **(stage_overrides or {}))
    resuming = resume and (out / f"state_{stage}" / "latest.json").is_file()
    # Checked before anything is written: a bad --init-from leaves no run folder behind.
    start = init_weights(init_from, stage_cfg) if init_from is not None and not resuming else None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    data_obj = load_stage_data(stage_cfg, data, Path(out) / "cache", train.balance) if rank == 0 else None
    if dist.is_initialized():
        dist.barrier()  # rank 0 built the cache; the others now read it
        if rank != 0:
            data_obj = load_stage_data(stage_cfg, data, Path(out) / "cache", train.balance)
    trainer = Trainer(stage_cfg, train, data_obj, out, device=device, precision=precision,
                      cohort=TrainingCohort.of(data) if rank == 0 else None)
    # Written once the trainer stands (its precision check may stop the run), so a refused start leaves no run file.
    if rank == 0 and not (resume and run_file.is_file()):
        atomic_write_json(run_file, {"stage": stage_cfg.to_dict(), "train": asdict(train), "data": str(data),
                                     **({"init_from": start[1]} if start else {})})
    if resuming:
        trainer.resume()
    elif start is not None:
        trainer.init_net(start[0])
    summary = trainer.fit(progress=progress)
    if dist.is_initialized():
        dist.barrier()
    return {**summary, "step": trainer.step, "weights": str(out / f"{stage_cfg.stage}.safetensors"),
            "channels": NUM_CHANNELS}
