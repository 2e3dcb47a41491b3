"""``python -m benchmarks [--quick] [--only NAME ...] [--weights DIR ...]``: run the benchmarks.

Results go to ``benchmarks/results/<name>.json`` (``--quick``: ``benchmarks/results/quick/``,
so quick runs never overwrite the full ones) and ``RESULTS.md`` is regenerated from them.
Benchmarks run one after the other (never two heavy ones at once).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import BENCHMARKS
from .common import (
    QUICK_RESULTS_DIR,
    RESULTS_DIR,
    Context,
    default_weights,
    has_stage,
    load_average,
    now,
    set_threads,
    snapshot_weights,
    weights_info,
    write_result,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps, seeds and sizes (a few minutes)")
    p.add_argument("--only", nargs="+", metavar="NAME", default=None,
                   help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    p.add_argument("--weights", action="append", metavar="DIR", default=None,
                   help="weights folder(s) with global.{json,safetensors} (+ sr.*); the first is used for the cascade, "
                        "further ones add objectives to sampler_fidelity (default: synthaug/weights, else runs/demo)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results, --quick: .../results/quick)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = p.parse_args(argv)
    unknown = [n for n in args.only or [] if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    for w in args.weights or []:
        if not has_stage(Path(w), "global"):
            p.error(f"--weights {w}: no global.json + global.safetensors there")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads {args.threads} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    if args.list:
        for name, module in BENCHMARKS.items():
            print(f"{name:18s} {importlib.import_module(module).TITLE}")
        return 0
    weights = [Path(w).resolve() for w in args.weights] if args.weights else default_weights()
    # Training keeps replacing the weights: every benchmark of this run uses one copy of them.
    snapshots = tempfile.TemporaryDirectory(prefix="synthaug_bench_weights_")
    weights = [snapshot_weights(w, Path(snapshots.name) / str(i)) for i, w in enumerate(weights)]
    out_dir = Path(args.out) if args.out else (QUICK_RESULTS_DIR if args.quick else RESULTS_DIR)
    ctx = Context(quick=args.quick, weights=weights, out_dir=out_dir, threads=args.threads,
                  command=" ".join(["python -m benchmarks", *map(shlex.quote, raw)]))
    set_threads(args.threads)
    names = args.only or list(BENCHMARKS)
    print(f"benchmarks: {', '.join(names)}; weights: {[weights_info(w)['path'] for w in weights] or 'none'}; "
          f"results: {out_dir}")
    failed = []
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        started, load0, t0 = now(), load_average(), time.perf_counter()
        print(f"[{name}] {module.TITLE} (load average {load0})", flush=True)
        try:
            results = module.run(ctx)
        except Exception:  # report, go on with the others, fail at the end
            traceback.print_exc()
            failed.append(name)
            continue
        path = write_result(ctx, name, results, started=started, load_start=load0, seconds=time.perf_counter() - t0)
        print(f"[{name}] done in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    from .report import write

    print(f"wrote {write(out_dir)}")
    snapshots.cleanup()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
