"""``synthaug train``: train the global or the SR stage on a cohort in the AutoPET layout."""

from __future__ import annotations

import argparse
import json

HELP = "train the global or the SR stage on a cohort (AutoPET layout); resumable; torchrun for DDP"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", choices=("global", "sr"), required=True, help="which stage of the cascade")
    p.add_argument("--data", required=True, help="training cohort in the AutoPET layout (e.g. from `synthaug phantom`)")
    p.add_argument("--out", required=True, help="run folder (weights, training states, log)")
    p.add_argument("--preset", default="demo", help="resolution preset (default: demo)")
    p.add_argument("--objective", choices=("edm", "flow", "x0"), default=None,
                   help="clean-sample prediction with EDM's scalings (x0, default for a new run), EDM denoiser, or "
                        "rectified flow (flow: experimental, no flow weights have been trained or compared); "
                        "a resumed run keeps its own")
    p.add_argument("--config", help="JSON file with TrainConfig fields and a 'stage' object of StageConfig overrides")
    p.add_argument("--steps", type=int, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, help="batch size per process")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    p.add_argument("--balance", type=int, metavar="K",
                   help="draw cases balanced over sex and K equal-width height bands within each sex, every group "
                        "equally often (default 0: uniformly; synthaug.model.balance)")
    p.add_argument("--init-from", metavar="WEIGHTS",
                   help="start a new run from the network weights of another run or weights folder (same network; "
                        "the objective may differ)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun: cuda = cuda:LOCAL_RANK)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="compute precision: auto = bf16 mixed precision on CUDA and on CPUs with native bf16, else fp32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from ..model.train import TrainConfig, train_stage

    overrides: dict = {}
    stage_overrides: dict = {}
    if args.config:
        with open(args.config) as fh:
            try:
                cfg = json.load(fh)
            except json.JSONDecodeError as err:
                raise ValueError(f"--config {args.config}: not valid JSON: {err}") from None
        stage_overrides = cfg.pop("stage", {})
        unknown = sorted(set(cfg) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"--config {args.config}: unknown training field(s) {', '.join(map(repr, unknown))} "
                             f"(training fields: {', '.join(TrainConfig.__dataclass_fields__)}; stage settings go "
                             f"under 'stage')")
        overrides.update(cfg)
    for name in ("steps", "batch_size", "lr", "seed", "checkpoint_every", "balance"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    for name in ("steps", "batch_size", "checkpoint_every"):
        if name in overrides and int(overrides[name]) < 1:
            raise ValueError(f"--{name.replace('_', '-')}={overrides[name]} must be >= 1")
    if int(overrides.get("balance", 0)) < 0:
        raise ValueError(f"--balance={overrides['balance']} must be 0 (uniform draws) or a number of height bins")
    if args.resume:
        _check_resume_matches(Path(args.out) / f"run_{args.stage}.json", stage_overrides, args.objective)
    objective = args.objective or "x0"
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    if stage_overrides:
        stage_overrides = _stage_overrides(stage_overrides, args.stage, args.preset, objective)
    summary = train_stage(args.stage, args.data, args.out, preset=args.preset, objective=objective,
                          train=TrainConfig.from_dict(overrides), stage_overrides=stage_overrides, resume=args.resume,
                          device=device, progress=not args.no_progress, precision=args.precision,
                          init_from=args.init_from)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _check_resume_matches(run_file, stage_overrides: dict, objective: str | None) -> None:
    """A resumed run keeps the stage configuration it was started with; refuse an explicit
    ``--objective`` or ``--config`` stage setting that says otherwise, instead of ignoring it."""
    if not run_file.is_file():
        return
    from ..model.stages import StageConfig

    # Through StageConfig, so that fields a run file predates compare as the values the run has.
    saved = StageConfig.from_dict(json.loads(run_file.read_text())["stage"]).to_dict()

    def leaves(d: dict, prefix: str = ""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    wanted = dict(leaves(stage_overrides))
    if objective is not None:
        wanted["diffusion.objective"] = objective
    have = dict(leaves(saved))
    for key, value in wanted.items():
        old = have.get(key)
        if isinstance(old, list):
            value = list(value) if isinstance(value, (list, tuple)) else value
        if key in have and old != value:
            raise ValueError(f"{run_file.parent} was started with {key}={old!r}; resuming cannot change it to "
                             f"{value!r} (start a new --out, with --init-from {run_file.parent} to keep the weights)")


def _stage_overrides(d: dict, stage: str, preset: str = "demo", objective: str = "x0") -> dict:
    """Turn JSON overrides into StageConfig field values (net / diffusion as config objects,
    merged over the defaults of this stage, preset and objective)."""
    from ..core.grid import Grid
    from ..model.diffusion import DiffusionConfig
    from ..model.nets import NetConfig
    from ..model.stages import default_stage_config

    out = dict(d)
    for key in ("global_grid", "output_grid"):
        if key in out:
            out[key] = Grid.from_dict(out[key])
    if "net" in out or "diffusion" in out:
        base = default_stage_config(stage, preset, objective)
        if "net" in out:
            out["net"] = NetConfig.from_dict({**base.net.to_dict(), **out["net"]})
        if "diffusion" in out:
            out["diffusion"] = DiffusionConfig.from_dict({**base.diffusion.to_dict(), **out["diffusion"]})
    return out
