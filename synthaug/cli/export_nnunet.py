"""``synthaug export-nnunet``: an nnU-Net v2 raw dataset of real + synthetic cases."""

from __future__ import annotations

import argparse
import os

HELP = "Write an nnU-Net v2 dataset (imagesTr/labelsTr/dataset.json + splits) of real and synthetic PET/CT cases."
#: Library parameters whose flag is not ``--`` + their name (see ``synthaug.cli.cli_message``).
PARAMETER_FLAGS = {"out_root": "--out", "generator": "--phantom or --weights"}

EPILOG = """\
layout written:
  $nnUNet_raw/DatasetXXX_NAME/imagesTr/{case}_0000.nii.gz   CT (HU), channel name "CT"
  $nnUNet_raw/DatasetXXX_NAME/imagesTr/{case}_0001.nii.gz   SUV, channel name from --pet-norm
  $nnUNet_raw/DatasetXXX_NAME/labelsTr/{case}.nii.gz        lesions {0,1} or the synthaug organ map
  dataset.json (nnunetv2's generate_dataset_json), splits_final.json (validation = real cases only),
  synthaug_cases.json (which case is real/synthetic, demographics, generator sha256, seeds, citations).
  Synthetic cases are named synth_00001, synth_00002, ...

resampling (--resample):
  auto    resample synthetic cases whose voxel spacing differs by more than 1 % from the real
          cases' median spacing (or --spacing): trilinear for CT/SUV, nearest for labels
  always  resample every synthetic case to that spacing
  never   keep synthetic cases on their own grid (nnU-Net resamples during preprocessing)
  Real cases are never resampled or modified: their images are symlinked (--copy to copy).

PET normalisation (--pet-norm):
  CT      default; what nnU-Net's own AutoPET converter (Dataset221_AutoPETII_2023) uses for SUV:
          clip to the 0.5-99.5 percentiles of foreground SUV, then one global z-score
  zscore  per-case z-score (nnU-Net's default for non-CT channels)
  noNorm  feed SUV unchanged (it is already a normalised unit)
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--real", metavar="AUTOPET_DIR", help="real cohort in the AutoPET layout (read only)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--synthetic", metavar="DIR",
                     help="folder of synthetic cases in the AutoPET layout (e.g. a `synthaug generate` cache)")
    src.add_argument("--n-synthetic", type=int, metavar="N", help="generate N synthetic cases")
    parser.add_argument("--ratio", type=float, metavar="R",
                        help="synthetic cases per real case: generate round(R x real) cases, "
                             "or subsample --synthetic to that many")
    gen = parser.add_mutually_exclusive_group()
    gen.add_argument("--weights", metavar="W", help="generator weights for generation (default: shipped demo weights)")
    gen.add_argument("--phantom", action="store_true", help="generate with the parametric phantom instead")
    parser.add_argument("--preset", default="demo", help="grid preset of the phantom generator (default: demo)")
    parser.add_argument("--dataset-id", type=int, required=True, metavar="ID", help="nnU-Net dataset id, 1-999")
    parser.add_argument("--name", required=True, help="dataset name: folder DatasetXXX_NAME")
    parser.add_argument("--labels", choices=("lesions", "organs"), default="lesions",
                        help="lesions: {background 0, lesion 1}; organs: the synthaug organ map (default: lesions)")
    parser.add_argument("--pet-norm", choices=("CT", "zscore", "noNorm"), default="CT",
                        help="nnU-Net channel name (= normalisation) of the SUV channel (default: CT, see below)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--preprocessed", metavar="DIR", default=None,
                        help="nnU-Net preprocessed folder for splits_final.json (default: $nnUNet_preprocessed)")
    parser.add_argument("--resample", choices=("auto", "always", "never"), default="auto",
                        help="resample synthetic cases to the real spacing (default: auto, see below)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                        help="target spacing in mm for resampling (default: median spacing of --real)")
    parser.add_argument("--copy", action="store_true", help="copy real images instead of symlinking them")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset folder and its splits")
    parser.add_argument("--seed", type=int, default=0, help="seed for demographics, generation and folds (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.nnunet import dataset_folder_name, export_nnunet

    out = args.out or os.environ.get("nnUNet_raw")
    if not out:
        raise ValueError("no output folder: pass --out DIR or set the nnUNet_raw environment variable")
    preprocessed = args.preprocessed or os.environ.get("nnUNet_preprocessed")
    generate = args.synthetic is None and (args.n_synthetic is not None or (args.ratio or 0) > 0)
    if (args.weights or args.phantom) and not generate:
        raise ValueError("--weights/--phantom only apply when generating (--n-synthetic N, or --ratio R without --synthetic)")
    generator = None
    if generate:
        generator = _generator_factory(args)
    folder = dataset_folder_name(args.dataset_id, args.name)

    result = export_nnunet(
        out, args.dataset_id, args.name, real=args.real, synthetic=args.synthetic, generator=generator,
        n_synthetic=args.n_synthetic, ratio=args.ratio, labels=args.labels, pet_norm=args.pet_norm,
        resample=args.resample, spacing=args.spacing, copy=args.copy, force=args.force, seed=args.seed,
        preprocessed=preprocessed, progress=not args.no_progress,
    )
    print(f"wrote {result.path}: {result.num_real} real + {result.num_synthetic} synthetic cases")
    print(f"splits_final.json: {', '.join(str(p) for p in result.splits_paths)}")
    print("next:")
    if preprocessed is None:
        print("  export nnUNet_preprocessed=/path/to/nnUNet_preprocessed   # and nnUNet_results")
    print(f"  nnUNetv2_plan_and_preprocess -d {args.dataset_id} --verify_dataset_integrity")
    if preprocessed is None:
        print(f"  cp {result.path / 'splits_final.json'} $nnUNet_preprocessed/{folder}/   "
              "# validation folds = real cases only")
    print(f"  nnUNetv2_train {args.dataset_id} 3d_fullres 0      # folds 0-4")
    return 0


def _generator_factory(args: argparse.Namespace):
    """A zero-argument callable that loads the generator (only after the inputs are checked)."""
    if args.phantom:
        def make():
            from ..sampling.generator import PhantomGenerator

            return PhantomGenerator(args.preset)
        from ..core.grid import get_preset

        get_preset(args.preset)  # bad preset: error now
        return make

    def load():
        try:
            from ..sampling.cascade import CascadedSampler
        except ImportError as err:
            raise RuntimeError(f"the diffusion cascade is not available ({err}); use --phantom") from None
        return CascadedSampler.from_pretrained(args.weights)

    if args.weights is not None and not os.path.exists(args.weights):
        raise FileNotFoundError(f"--weights: not found: {args.weights}")
    return load
