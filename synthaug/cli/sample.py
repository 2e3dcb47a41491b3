"""``synthaug sample``: generate one (or a few) cases from demographics."""

from __future__ import annotations

import argparse

from .arguments import add_clean_labels_argument, add_lesions_argument, add_scanner_argument, refuse_existing
from .twins import add_twin_arguments, run_twins

HELP = "generate a case from demographics with the cascade (default: the shipped demo weights)"
#: Library parameters whose flag is not ``--`` + their name (see ``synthaug.cli.cli_message``).
PARAMETER_FLAGS = {"stages": "--stage"}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="weights folder with global.* and sr.* (default: shipped demo weights)")
    p.add_argument("--stage", choices=("cascade", "global"), default="cascade",
                   help="cascade (default) or global (stage 1 only, on the coarse grid)")
    p.add_argument("--age", type=float, help="years (0-120)")
    p.add_argument("--sex", help="M or F")
    p.add_argument("--height", type=float, help="cm (50-250)")
    p.add_argument("--weight", type=float, help="kg (2-400)")
    p.add_argument("--diagnosis", help="NEGATIVE, LYMPHOMA, MELANOMA or LUNG_CANCER")
    p.add_argument("--n", type=int, default=1, help="number of cases (seeds seed, seed+1, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="stage-1 sampler steps (default: from the weights)")
    p.add_argument("--sr-steps", type=int, help="stage-2 sampler steps (default: from the weights)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = off)")
    add_lesions_argument(p)
    add_scanner_argument(p)
    add_clean_labels_argument(p)
    p.add_argument("--sigma-min", type=float, help="stage-1 noise level the sampler ends at (default: from the weights)")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="SR sampling patch size")
    p.add_argument("--overlap", type=int, help="SR sampling patch overlap (voxels)")
    p.add_argument("--patch-batch", type=int, help="SR patches per network call (default 4; 1 needs ~3 GB less memory)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output folder (AutoPET layout: <case>/CTres.nii.gz, ...)")
    p.add_argument("--preview", action="store_true", help="also write preview.png (coronal CT, PET MIP, labels)")
    p.add_argument("--force", action="store_true", help="overwrite existing case folders")
    add_twin_arguments(p)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from ..core.demographics import Demographics

    demo = Demographics(age=args.age, sex=args.sex.upper() if args.sex else None, height_cm=args.height,
                        weight_kg=args.weight, diagnosis=args.diagnosis.upper() if args.diagnosis else None)
    if args.vary or args.phantom:
        return run_twins(args, demo)
    if args.n < 1:
        raise ValueError(f"--n={args.n} must be >= 1")
    out = Path(args.out)
    ids = [f"sample_{args.seed + i:05d}" for i in range(args.n)]
    refuse_existing([out / c for c in ids], args.force)

    from ..core.io import write_case, write_demographics_csv
    from ..evaluation.preview import preview_png
    from ..sampling.cascade import CascadedSampler

    sampler = CascadedSampler.from_pretrained(args.weights, device=args.device, stages=args.stage)
    sampler.configure(steps=args.steps, sr_steps=args.sr_steps, guidance=args.guidance, patch_size=args.patch_size,
                      overlap=args.overlap, sigma_min=args.sigma_min, patch_batch=args.patch_batch,
                      lesions=args.lesions, scanner=args.scanner,
                      clean_labels=args.clean_labels)
    t0 = time.time()
    cases = sampler.sample([demo] * args.n, seed=args.seed, progress=True)
    seconds = time.time() - t0
    for cid, case in zip(ids, cases):
        write_case(out, cid, case, overwrite=args.force)
    write_demographics_csv(out / "demographics.csv", dict(zip(ids, [demo] * args.n)))
    print(f"wrote {len(cases)} case(s) to {out.resolve()} in {seconds:.1f} s "
          f"({cases[0].shape[0]}x{cases[0].shape[1]}x{cases[0].shape[2]} at {cases[0].spacing[0]:g} mm)")
    for cid, case in zip(ids, cases):
        prior = case.meta.get("lesion_prior")
        lesions = (f"{len(prior['lesions'])} lesion(s) from the lesion prior ({prior['diagnosis']})" if prior
                   else f"{int(case.lesions.sum())} lesion voxel(s) drawn by the networks")
        print(f"  {(out / cid).resolve()}/{{CTres,SUV,SEG,ORGANS}}.nii.gz: {lesions}")
    if args.preview:
        png = preview_png(cases, out / "preview.png")
        print(f"  preview: {png.resolve()}")
    return 0
