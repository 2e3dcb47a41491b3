"""Train nnU-Net v2 for a few iterations on an export (a smoke run of the downstream recipe, CPU or GPU).

    export nnUNet_raw=... nnUNet_preprocessed=... nnUNet_results=...
    python integrations/nnunet/short_train.py 501 --plan --iterations 2 --device cpu

``--plan`` first runs nnU-Net's own fingerprint extraction (with ``verify_dataset_integrity``),
planning and preprocessing. The trainer is nnU-Net's ``nnUNetTrainer`` with one epoch of
``--iterations`` training iterations and one validation iteration (:class:`nnUNetTrainerShort`);
then nnU-Net's final validation (``perform_actual_validation``) on the fold's (real) validation cases, as
``nnUNetv2_train`` does.
For the full recipe use ``nnUNetv2_train`` (``docs/downstream.md``). nnU-Net starts worker processes
that import this file again: everything runs under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerShort(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming of trainer variants
    """``nnUNetTrainer`` with one epoch of ``SHORT_ITERATIONS`` iterations and one validation iteration."""

    SHORT_ITERATIONS = 2

    # nnU-Net records its trainer's arguments by name (locals()): the signature must be spelled out
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:  # noqa: B008 - nnU-Net's own default
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = self.SHORT_ITERATIONS
        self.num_val_iterations_per_epoch = 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset_id", type=int, help="nnU-Net dataset id (as given to synthaug export-nnunet)")
    p.add_argument("--configuration", default="3d_fullres")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--iterations", type=int, default=2, help="training iterations (one epoch)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--plan", action="store_true", help="fingerprint, plan and preprocess first")
    p.add_argument("--no-validation", action="store_true", help="skip nnU-Net's final validation")
    p.add_argument("--workers", type=int, default=0,
                   help="data-augmentation worker processes while training (default 0: in this process)")
    args = p.parse_args(argv)
    missing = [v for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results") if not os.environ.get(v)]
    if missing:
        print(f"short_train: error: set {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.workers < 0:
        print(f"short_train: error: --workers={args.workers} must be >= 0", file=sys.stderr)
        return 2
    if args.iterations < 1:
        print(f"short_train: error: --iterations={args.iterations} must be >= 1", file=sys.stderr)
        return 2

    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if args.plan:
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (
            extract_fingerprints,
            plan_experiments,
            preprocess,
        )

        extract_fingerprints([args.dataset_id], num_processes=1, check_dataset_integrity=True, clean=True,
                             verbose=False, show_progress_bar=False)
        plan_experiments([args.dataset_id])
        preprocess([args.dataset_id], configurations=(args.configuration,), num_processes=(1,), verbose=False)
    # nnU-Net reads this while it builds its data loaders; 0 means no worker processes (planning needs >= 1)
    os.environ["nnUNet_n_proc_DA"] = str(args.workers)
    folder = join(os.environ["nnUNet_preprocessed"], maybe_convert_to_dataset_name(args.dataset_id))
    nnUNetTrainerShort.SHORT_ITERATIONS = args.iterations
    plans = load_json(join(folder, "nnUNetPlans.json"))
    plans["continue_training"] = False  # as nnunetv2.run.run_training.get_trainer_from_args passes it
    trainer = nnUNetTrainerShort(plans, args.configuration, args.fold, load_json(join(folder, "dataset.json")),
                                 device=torch.device(args.device))
    trainer.run_training()
    if not args.no_validation:  # nnU-Net's own validation of the fold's (real) cases, as nnUNetv2_train ends
        trainer.perform_actual_validation(False)
    print(f"short_train: done, {args.iterations} iteration(s), output {trainer.output_folder}")
    print("TORCHVISION", "torchvision" in sys.modules)
    return 0


if __name__ == "__main__":
    sys.exit(main())
