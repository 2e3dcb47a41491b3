"""Copy a run's EMA weights into the package as the shipped demo weights.

Sets the sampling defaults recorded in each stage's JSON (chosen by the sampler
benchmark), checks every checksum, and writes ``SHA256SUMS``. A run's configs carry no
label offsets: calibrate the shipped copy afterwards (``synthaug calibrate``, global stage
first; docs/training.md "Label calibration").

    python scripts/ship_weights.py --global-run runs/demo_x0 --sr-run runs/demo --dest synthaug/weights \
        --global-sampler dpmpp_2m --global-steps 32 --sr-sampler euler --sr-steps 1 --sr-overlap 16 --sr-patch-size 128 128 256
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from synthaug.core.checkpoint import load_checkpoint, sha256_file
from synthaug.core.io import atomic_path, atomic_write_json, atomic_write_text
from synthaug.model.diffusion import SAMPLERS
from synthaug.model.stages import load_stage
from synthaug.phantom.scanner import get_scanner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="run folder holding both stages")
    ap.add_argument("--dest", required=True)
    for stage in ("global", "sr"):
        ap.add_argument(f"--{stage}-run", help=f"run folder of the {stage} stage (default: --run)")
        ap.add_argument(f"--{stage}-sampler", choices=sorted(SAMPLERS))
        ap.add_argument(f"--{stage}-steps", type=int)
        ap.add_argument(f"--{stage}-sigma-min", type=float)
        ap.add_argument(f"--{stage}-guidance", type=float)
    ap.add_argument("--sr-overlap", type=int, help="SR sampling patch overlap in voxels (chosen by the seams benchmark)")
    ap.add_argument("--sr-patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                    help="SR sampling patch size in voxels (the whole output grid: one patch, no blending)")
    ap.add_argument("--scanner", help="scanner preset ('default' or a synthaug.phantom.scanner preset name) that "
                    "images the cascade's PET by default: for stages trained on the activity (synthaug phantom "
                    "--scanner off); recorded in both stages' JSON")
    args = ap.parse_args()
    scanner = get_scanner(args.scanner) if args.scanner else None
    runs = {stage: getattr(args, f"{stage}_run") or args.run for stage in ("global", "sr")}
    missing = [stage for stage, run in runs.items() if run is None]
    if missing:
        ap.error(f"no run folder for {', '.join(missing)}: pass --run or --{missing[0]}-run")
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    sums = []
    for stage in ("global", "sr"):
        run = Path(runs[stage])
        load_checkpoint(run / stage)  # verifies the checksum before anything is copied
        config = json.loads((run / f"{stage}.json").read_text())
        diff = config["diffusion"]
        sampler, steps = getattr(args, f"{stage}_sampler"), getattr(args, f"{stage}_steps")
        if sampler:
            diff["sampler"] = sampler
        if steps:
            diff["steps"] = steps
        sigma_min = getattr(args, f"{stage}_sigma_min")
        if sigma_min:
            diff["sigma_min"] = sigma_min
        if stage == "sr" and args.sr_overlap is not None:
            config["sample_overlap"] = args.sr_overlap
        if stage == "sr" and args.sr_patch_size is not None:
            config["sample_patch_size"] = args.sr_patch_size
        if scanner is not None:
            config["scanner"] = scanner.to_dict()
        guidance = getattr(args, f"{stage}_guidance")
        if guidance is not None:
            diff["guidance"] = guidance
        with atomic_path(dest / f"{stage}.safetensors") as tmp:
            shutil.copyfile(run / f"{stage}.safetensors", tmp)
        atomic_write_json(dest / f"{stage}.json", config)
        load_stage(dest / stage)  # the shipped copy loads
        sums.append(f"{sha256_file(dest / f'{stage}.safetensors')}  {stage}.safetensors")
        print(f"{stage}: step {config.get('info', {}).get('step')}, sampler {diff['sampler']} x {diff['steps']}, "
              f"guidance {diff.get('guidance', 1.0)}")
    atomic_write_text(dest / "SHA256SUMS", "\n".join(sums) + "\n")


if __name__ == "__main__":
    main()
