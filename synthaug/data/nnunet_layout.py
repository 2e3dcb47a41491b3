"""nnU-Net v2 raw-dataset conventions used by the export: names, label and channel maps, folds.

nnU-Net resolves a dataset by its ``DatasetXXX_NAME`` folder, reads ``channel_names`` and
``labels`` from ``dataset.json`` and its folds from ``splits_final.json``; the helpers here
give those for a synthaug export (:mod:`synthaug.data.nnunet`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..core.labels import ORGAN_LABELS

LABEL_SETS = ("lesions", "organs")
#: nnU-Net channel names for the PET channel; the name picks the normalisation.
#: ``CT`` (global foreground-based clipping + z-score) is what nnU-Net's own AutoPET
#: converter (Dataset221_AutoPETII_2023) uses for SUV; ``zscore`` is per-case z-scoring,
#: ``noNorm`` feeds SUV unchanged.
PET_NORMS = ("CT", "zscore", "noNorm")
RESAMPLE_MODES = ("auto", "always", "never")
FILE_ENDING = ".nii.gz"
SIDECAR_FILE = "synthaug_cases.json"
SPLITS_FILE = "splits_final.json"
NUM_FOLDS = 5
SYNTHETIC_PREFIX = "synth_"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset{id:03d}_{name}`` after checking both (id 1-999, name of letters/digits/_/-)."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, (int, np.integer)) or not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"`dataset_id`: expected an integer in 1-999 (nnU-Net's 3-digit ids), got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"`name`: expected letters, digits, '_' or '-' (starting with a letter or digit), got {name!r}")
    return f"Dataset{int(dataset_id):03d}_{name}"


def check_dataset_id(dataset_id: int, name: str, roots: Sequence[str | Path | None]) -> None:
    """Raise if ``dataset_id`` is already used by a differently named dataset in any of ``roots``.

    nnU-Net resolves ``-d ID`` by the ``DatasetXXX_`` prefix in nnUNet_raw, nnUNet_preprocessed
    and nnUNet_results, and stops when it finds two names for one id.
    """
    wanted = dataset_folder_name(dataset_id, name)
    prefix = wanted[: len("Dataset000_")]
    for root in roots:
        if root is None or not Path(root).is_dir():
            continue
        for p in sorted(Path(root).iterdir()):
            if p.name.startswith(prefix) and p.name != wanted and p.is_dir():
                raise ValueError(
                    f"`dataset_id` {int(dataset_id)} is already used by {p.name} in {root}; "
                    f"choose another `dataset_id` (or remove {p})"
                )


def nnunet_labels(labels: str) -> dict[str, int]:
    """nnU-Net ``labels`` entry (name -> consecutive id from 0) for ``lesions`` or ``organs``."""
    if labels == "lesions":
        return {"background": 0, "lesion": 1}
    if labels == "organs":
        return {name: i for i, name in sorted(ORGAN_LABELS.items())}
    raise ValueError(f"`labels`: expected one of {LABEL_SETS}, got {labels!r}")


def nnunet_channel_names(pet_norm: str = "CT") -> dict[int, str]:
    """nnU-Net ``channel_names``: 0 = CT (``CT`` normalisation), 1 = SUV (``pet_norm``)."""
    if pet_norm not in PET_NORMS:
        raise ValueError(f"`pet_norm`: expected one of {PET_NORMS}, got {pet_norm!r}")
    return {0: "CT", 1: pet_norm}


def make_splits(real_groups: Mapping[str, Sequence[str]], synthetic: Sequence[str] = (), *,
                n_folds: int = NUM_FOLDS, seed: int = 0,
                strata: Mapping[str, str | None] | None = None) -> list[dict[str, list[str]]]:
    """nnU-Net ``splits_final.json``: ``n_folds`` folds whose validation sets hold only real cases.

    Args:
        real_groups: group (patient) -> its case ids; a group never straddles folds.
        synthetic: synthetic case ids; they are in the training set of every fold.
        n_folds: number of folds. With fewer groups than folds, the folds repeat
            (fold ``k`` validates on group ``k % n_groups``) so that every fold index exists.
        seed: shuffles the groups.
        strata: group -> stratum (e.g. diagnosis); groups are dealt out round-robin per
            stratum so that each fold gets a similar mix.
    """
    groups = sorted(real_groups)
    if not groups:
        raise ValueError("make_splits: no real cases to validate on")
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    if strata:
        order.sort(key=lambda g: str(strata.get(g) or ""))  # stable: shuffled within a stratum
    n_bins = min(n_folds, len(order))
    bins: list[list[str]] = [[] for _ in range(n_bins)]
    for i, g in enumerate(order):
        bins[i % n_bins].append(g)
    all_real = sorted(c for g in groups for c in real_groups[g])
    synth = sorted(synthetic)
    splits = []
    for k in range(n_folds):
        val = sorted(c for g in bins[k % n_bins] for c in real_groups[g])
        val_set = set(val)
        splits.append({"train": [c for c in all_real if c not in val_set] + synth, "val": val})
    return splits
