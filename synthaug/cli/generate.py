"""``synthaug generate``: pre-generate a cache of synthetic cases (sharded, resumable)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass

from .arguments import add_clean_labels_argument, add_lesions_argument, add_scanner_argument

HELP = "pre-generate a resumable, checksummed cache of synthetic cases for training"
#: Library parameters whose flag is not ``--`` + their name (see ``synthaug.cli.cli_message``).
PARAMETER_FLAGS = {"root": "--out"}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", "--num-cases", dest="n", type=int,
                   help="number of cases (default with --demographics: one per row); under torchrun write "
                        "--num-cases, because torchrun takes --n for its own --nnodes/--nproc-per-node")
    p.add_argument("--out", required=True, help="cache folder (created; re-run to resume)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="cascade weights folder (default: the shipped demo weights)")
    src.add_argument("--phantom", action="store_true", help="use the parametric phantom instead of the cascade")
    src.add_argument("--generator", metavar="MODULE:FACTORY",
                     help="your own CaseGenerator: an importable zero-argument factory, e.g. mypkg.gen:make")
    p.add_argument("--preset", help="resolution preset (phantom: default demo; cascade: must match the weights)")
    demo = p.add_mutually_exclusive_group()
    demo.add_argument("--demographics", metavar="CSV", help="demographics.csv: one case per row, in order (cycled if --n is larger)")
    demo.add_argument("--like", metavar="CSV", help="draw a population matched to this demographics.csv")
    demo.add_argument("--population", action="store_true",
                      help="draw an AutoPET-like adult population (the default)")
    p.add_argument("--seed", type=int, default=0, help="case i uses seed SEED+i (default 0)")
    p.add_argument("--shard", metavar="i/N", help="generate only cases with index %% N == i (independent jobs)")
    p.add_argument("--format", dest="fmt", choices=("npy", "npz", "nifti", "both"), default="both",
                   help="npy (fastest reads), npz, nifti (AutoPET layout) or both = npy + nifti (default)")
    p.add_argument("--batch-size", type=int, default=1, help="cases per generator call (default 1)")
    p.add_argument("--stage", choices=("cascade", "global"), default="cascade", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help="stage-1 sampler steps (default: from the weights)")
    p.add_argument("--sr-steps", type=int, help="stage-2 sampler steps (default: from the weights)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    add_lesions_argument(p)
    add_scanner_argument(p)
    add_clean_labels_argument(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")
    # For tests and quick looks: the phantom on a coarser grid with the preset's field of view.
    p.add_argument("--grid", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _phantom_grid(preset: str, text: str | None):
    from ..core.grid import Grid, get_preset

    base = get_preset(preset).output_grid
    if text is None:
        return base
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)", text.strip())
    if not m:
        raise ValueError(f"--grid {text!r}: expected XxYxZ, e.g. 16x16x32")
    shape = tuple(int(v) for v in m.groups())
    return Grid(shape, tuple(f / s for f, s in zip(base.fov_mm, shape)))


def _load_factory(spec: str):
    from importlib import import_module

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--generator {spec!r}: expected MODULE:FACTORY, e.g. mypkg.gen:make_generator")
    try:
        factory = getattr(import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--generator {spec!r}: cannot import it ({err})") from None
    if not callable(factory):
        raise ValueError(f"--generator {spec!r}: {attr} is not callable")
    return factory


def _rank_world() -> tuple[int, int]:
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError("RANK/WORLD_SIZE must be integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent")
    return rank, world


def _init_distributed(world: int) -> bool:
    """Join torchrun's process group (gloo) when there is one; True if a barrier is available."""
    import datetime

    import torch.distributed as dist

    if world <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if "MASTER_ADDR" not in os.environ:
        return False
    try:
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=6))
    except (RuntimeError, ValueError) as err:
        print(f"synthaug: warning: no process group ({err}); each rank writes its cases, "
              "merge with `synthaug cache merge`", file=sys.stderr)
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    share = _validate(args)
    plan, source = _plan(args)
    generator, preset = _make_generator(args)
    out = Path(args.out)
    barrier = _init_distributed(share.world)
    result, merged = _generate_and_merge(args, out, generator, plan, preset, source, share, barrier)
    return _report(out, share, barrier, result, merged)


@dataclass(frozen=True)
class _Share:
    """This process's part of the work: torchrun ``rank`` of ``world`` inside ``--shard``; it owns
    the cases with index % ``parts`` == ``part``."""

    rank: int
    world: int
    part: int
    parts: int


def _validate(args: argparse.Namespace) -> _Share:
    """Every check that needs nothing loaded, before any work."""
    from ..data.cache import parse_shard

    if args.n is not None and args.n < 1:
        raise ValueError(f"--n={args.n} must be >= 1")
    if args.seed < 0:
        raise ValueError(f"--seed={args.seed} must be >= 0")
    if args.demographics is None and args.n is None:
        raise ValueError("--n is required (unless --demographics CSV gives one case per row)")
    if args.grid is not None and not args.phantom:
        raise ValueError("--grid applies to --phantom only")
    shard_i, shard_n = parse_shard(args.shard) if args.shard else (0, 1)
    rank, world = _rank_world()
    # torchrun ranks inside a shard: index % (shards * world) == shard * world + rank
    return _Share(rank, world, shard_i * world + rank, shard_n * world)


def _plan(args: argparse.Namespace) -> tuple[list, str]:
    """The planned cases and where their demographics come from (the cache header's ``demographics_source``)."""
    from pathlib import Path

    from ..data.cache import plan_cases

    if args.demographics:
        return plan_cases(args.n, args.seed, demographics=args.demographics), f"csv:{Path(args.demographics).name}"
    if args.like:
        return plan_cases(args.n, args.seed, like=args.like), f"like:{Path(args.like).name}"
    return plan_cases(args.n, args.seed), "population"


def _make_generator(args: argparse.Namespace):
    """``(generator, preset)``: your own factory's, the phantom, or the cascade from ``--weights``."""
    from ..sampling.generator import CaseGenerator

    if args.generator:
        generator = _load_factory(args.generator)()
        preset = args.preset or generator.settings.get("preset")
    elif args.phantom:
        from ..sampling.generator import PhantomGenerator

        preset = args.preset or "demo"
        generator = PhantomGenerator(preset, grid=_phantom_grid(preset, args.grid))
    else:
        import torch

        from ..sampling.cascade import CascadedSampler

        device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu")
        generator = CascadedSampler.from_pretrained(args.weights, device=device, stages=args.stage)
        generator.configure(steps=args.steps, sr_steps=args.sr_steps, guidance=args.guidance, lesions=args.lesions,
                            scanner=args.scanner, clean_labels=args.clean_labels)
        preset = generator.settings.get("preset")
        if args.preset is not None and args.preset != preset:
            raise ValueError(f"--preset {args.preset}: the weights are for preset {preset!r}")
    if not isinstance(generator, CaseGenerator):
        raise ValueError(f"the generator ({type(generator).__name__}) lacks the CaseGenerator interface "
                         "(output_grid, sha256, settings, sample)")
    return generator, preset


def _generate_and_merge(args: argparse.Namespace, out, generator, plan: list, preset, source: str, share: _Share,
                        barrier: bool):
    """Generate this share, then merge the manifest where this process can tell every case is done:
    rank 0 after the barrier, or the independent shard that finds them all. ``(result, merged or None)``."""
    from ..data.cache import generate_cache, merge_manifest

    try:
        result = generate_cache(out, generator, plan, fmt=args.fmt, preset=preset, seed=args.seed,
                                demographics_source=source, rank=share.part, world=share.parts,
                                batch_size=args.batch_size,
                                progress=not args.no_progress and (share.rank == 0 or not barrier))
        if barrier:
            import torch.distributed as dist

            dist.barrier()
        merged = None
        if share.rank == 0 and (barrier or share.parts == 1):
            merged = merge_manifest(out, n=len(plan))
        elif share.parts > 1 and not barrier:
            # independent shards: the shard that finds every case done writes the manifest
            done = sum(1 for p in plan if (out / p.case_id / "meta.json").is_file())
            if done == len(plan):
                merged = merge_manifest(out, n=len(plan))
    finally:
        if barrier:
            import torch.distributed as dist

            dist.destroy_process_group()
    return result, merged


def _report(out, share: _Share, barrier: bool, result, merged: dict | None) -> int:
    """Print what this process did and the manifest's state; the exit code (1: merged but incomplete)."""
    who = f"shard {share.part}/{share.parts}: " if share.parts > 1 else ""
    print(f"{who}{len(result.generated)} generated, {len(result.repaired)} repaired, "
          f"{result.already_done} already done ({result.owned} cases in this share) -> {out.resolve()}")
    if merged is not None:
        state = "complete" if merged["complete"] else "INCOMPLETE"
        print(f"manifest: {len(merged['cases'])}/{merged['n']} cases, {state} ({out.resolve() / 'manifest.json'})")
        return 0 if merged["complete"] else 1
    if share.rank == 0 or not barrier:
        print(f"manifest not merged yet: run `synthaug cache merge {out}` when all shards are done")
    return 0
