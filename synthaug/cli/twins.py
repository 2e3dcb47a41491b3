"""``synthaug sample --vary FIELD=V1,V2,...``: counterfactual twins (one case per setting, one seed).

Not a command of its own: :mod:`synthaug.cli.sample` hands over to :func:`run_twins` when
``--vary`` (or ``--phantom``) is given.
"""

from __future__ import annotations

import argparse

from .arguments import refuse_existing


def add_twin_arguments(p: argparse.ArgumentParser) -> None:
    """``--vary`` and ``--phantom`` for ``synthaug sample``."""
    p.add_argument("--vary", action="append", metavar="FIELD=V1,V2,...",
                   help="counterfactual twins: the same person (same --seed, same noise) once per value, e.g. "
                        "--vary weight=60,80,100; FIELD is age, height, weight, sex or diagnosis; repeat for a "
                        "grid (the last --vary varies fastest). Writes one case per setting, twins.png (montage) "
                        "and twins.md / twins.json (per-organ volume and SUVmean)")
    p.add_argument("--phantom", action="store_true",
                   help="with --vary: twins of the parametric phantom instead of the cascade (demo grid), for "
                        "comparison; a phantom cohort is `synthaug phantom`")


def case_ids(settings: list[dict]) -> list[str]:
    """Folder names of the twins: ``twin_<index>_<field><value>...`` (e.g. ``twin_01_weight_kg80``)."""
    def text(v: object) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    return [f"twin_{i:02d}_" + "_".join(f"{k}{text(v)}" for k, v in s.items()) for i, s in enumerate(settings)]


def run_twins(args: argparse.Namespace, base) -> int:
    """Sample, write and report the twins of ``base`` for ``args.vary``; returns the exit code."""
    from pathlib import Path

    from ..sampling.twins import parse_vary, twin_label, twin_settings

    if not args.vary:
        raise ValueError("--phantom needs --vary (a phantom cohort: synthaug phantom)")
    if args.n != 1:
        raise ValueError(f"--n={args.n}: twins are one case per --vary setting; leave --n out")
    if args.seed < 0:
        raise ValueError(f"--seed={args.seed} must be >= 0")
    vary = parse_vary(args.vary)
    settings = twin_settings(base, vary)
    out = Path(args.out)
    ids = case_ids(settings)
    refuse_existing([*(out / c for c in ids), out / "twins.png"], args.force)

    from ..core.io import write_case, write_demographics_csv
    from ..evaluation.twin_report import write_twin_report

    if args.phantom:
        from ..sampling.generator import PhantomGenerator

        generator = PhantomGenerator()
    else:
        from ..sampling.cascade import CascadedSampler

        generator = CascadedSampler.from_pretrained(args.weights, device=args.device, stages=args.stage)
        generator.configure(steps=args.steps, sr_steps=args.sr_steps, guidance=args.guidance,
                            patch_size=args.patch_size, overlap=args.overlap, sigma_min=args.sigma_min,
                            patch_batch=args.patch_batch, lesions=args.lesions,
                            clean_labels=args.clean_labels)
    cases = generator.sample_twins(base, vary=vary, seed=args.seed, progress=True)
    for cid, case in zip(ids, cases):
        write_case(out, cid, case, overwrite=args.force)
    write_demographics_csv(out / "demographics.csv", {cid: case.demographics for cid, case in zip(ids, cases)})
    paths = write_twin_report(cases, out, case_ids=ids)
    source = "phantom" if args.phantom else "cascade"
    print(f"wrote {len(cases)} {source} twin(s) of seed {args.seed} to {out.resolve()}")
    for cid, setting in zip(ids, settings):
        print(f"  {cid}: {twin_label(setting)}")
    print(f"  montage: {paths['montage'].resolve()}")
    print(f"  table: {paths['markdown'].resolve()} (and {paths['json'].name})")
    return 0
