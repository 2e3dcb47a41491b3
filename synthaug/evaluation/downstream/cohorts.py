"""The benchmark's cohorts: checks, case identities (for disjoint test sets), demographic matching and
the phantom and synthetic cases generated for the arms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ...core.demographics import Demographics, sample_population
from ...core.grid import Grid
from ...core.io import (
    META_FILE,
    ORGANS_FILE,
    PET_FILE,
    SEG_FILE,
    Cohort,
    remove_stale_temporaries,
    write_case,
    write_demographics_csv,
)


def open_cohort(root: str | Path, what: str) -> Cohort:
    from ...data.cache import is_cache, open_cache_as_cohort

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"`{what}`: cohort folder not found: {root}")
    try:
        return open_cache_as_cohort(root) if is_cache(root) else Cohort(root)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"`{what}`: {err}") from None
    except ValueError as err:
        raise ValueError(f"`{what}`: {err}") from None


def check_cohort(cohort: Cohort, what: str, tasks: Sequence[str]) -> None:
    """Refuse a cohort the benchmark cannot use: no cases, no SUV, no lesion (or organ) labels."""
    if len(cohort) == 0:
        raise ValueError(f"`{what}`: the cohort {cohort.root} is empty")
    entries = getattr(cohort, "entries", None)
    needs = [("pet", PET_FILE, "SUV")]
    needs.append(("lesions", SEG_FILE, "lesion labels"))
    if "organs" in tasks:
        needs.append(("organs", ORGANS_FILE, "organ labels (or leave 'organs' out of tasks)"))
    for cid in cohort.case_ids:
        for key, fname, label in needs:
            present = (key in (entries[cid].get("arrays") or ())) if entries is not None \
                else (cohort.path(cid) / fname).is_file()
            if not present:
                raise ValueError(f"`{what}`: case {cid} has no {label} ({fname})")


def has_organ_labels(cohort: Cohort) -> bool:
    """Whether every case of ``cohort`` has an organ map (where lesions can be placed)."""
    entries = getattr(cohort, "entries", None)
    return all(("organs" in (entries[c].get("arrays") or ())) if entries is not None
               else (cohort.path(c) / ORGANS_FILE).is_file() for c in cohort.case_ids)


def check_disjoint(test: Mapping[str, str], train: Mapping[str, str], what: str = "training") -> None:
    """Refuse test cases whose identity (see :func:`case_identity`) is also a training case; one line naming them."""
    by_identity = {ident: cid for cid, ident in train.items()}
    clash = sorted(f"{cid}" + (f" (= {what} {by_identity[ident]})" if by_identity[ident] != cid else "")
                   for cid, ident in test.items() if ident in by_identity)
    if clash:
        raise ValueError(f"`test`: {len(clash)} test case(s) are also {what} cases: {', '.join(clash)}")


def generator_training_cases(raw: Mapping | None) -> dict[str, str] | None:
    """The generator's training cases where its weights JSON records them, as case id -> identity
    (:func:`case_identity`): ``info.training_data`` as ``synthaug train`` writes it (``case_identities``
    beside ``case_ids``; without them a case is its id), or a ``training_cohort.case_ids`` list; ``None``
    where it records none."""
    raw = raw or {}
    info = raw.get("info") or {}
    for cohort in (info.get("training_data"), raw.get("training_cohort"), info.get("training_cohort")):
        if isinstance(cohort, Mapping) and isinstance(cohort.get("case_ids"), list):
            ids = [str(c) for c in cohort["case_ids"]]
            idents = cohort.get("case_identities")
            same_length = isinstance(idents, list) and len(idents) == len(ids)
            return dict(zip(ids, (str(i) for i in idents) if same_length else ids, strict=True))
    return None


def match_cases(targets: Sequence[Demographics | None], pool: Mapping[str, Demographics | None], per_target: int,
                exclude: Sequence[str] = ()) -> list[str]:
    """Pick ``per_target`` cases of ``pool`` per target, nearest demographics first, each case once.

    Rounds go over all targets in order (so 1:2 gives every target its nearest, then its second nearest).
    """
    from ...data.transforms import match_demographics

    free = [cid for cid in pool if cid not in set(exclude)]
    need = per_target * len(targets)
    if need > len(free):
        raise ValueError(f"`synthetic`: {need} matched cases needed, the source has {len(free)}")
    picked: list[str] = []
    for _ in range(per_target):
        for target in targets:
            demos = [pool[c] or Demographics(None, None, None, None) for c in free]
            best = free[int(match_demographics(target, demos, k=1)[0])]
            picked.append(best)
            free.remove(best)
    return picked


def _case_seed(seed: int, index: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index), stream]).generate_state(1, dtype=np.uint32)[0])


def make_phantom_cohort(root: Path, like: Mapping[str, Demographics], n: int, grid: Grid, seed: int,
                        progress: bool = True) -> Cohort:
    """``n`` fresh phantom cases with demographics drawn like ``like`` on ``grid`` (resumable: cases of
    another phantom version already there are refused, not mixed in)."""
    import json

    from ...core.progress import progress_bar
    from ...phantom import impute_demographics, make_phantom
    from ...phantom.body import PHANTOM_VERSION

    demos = sample_population(n, seed, like=like)
    ids = [f"phantom_arm_{i:05d}" for i in range(n)]
    for cid in ids:
        meta = root / cid / META_FILE
        version = json.loads(meta.read_text()).get("phantom_version") if meta.is_file() else PHANTOM_VERSION
        if version != PHANTOM_VERSION:
            raise ValueError(f"{root / cid} is a phantom of version {version}, this synthaug makes version "
                             f"{PHANTOM_VERSION}: use a new output folder for the phantom arm")
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    todo = [i for i, cid in enumerate(ids) if not (root / cid / META_FILE).is_file()]
    for i in progress_bar(todo, desc="phantom arm cases", unit="case", disable=not progress):
        d = demos[i] if demos[i].is_complete else impute_demographics(demos[i], _case_seed(seed, i, 2))
        demos[i] = d
        case = make_phantom(d, grid=grid, seed=_case_seed(seed, i, 1))
        case.meta["case_seed"] = _case_seed(seed, i, 1)
        write_case(root, ids[i], case, overwrite=True)
    write_demographics_csv(root / "demographics.csv", dict(zip(ids, demos)))
    return Cohort(root)


def make_synthetic_cache(root: Path, generator, like: Mapping[str, Demographics], n: int, seed: int,
                         progress: bool = True) -> Cohort:
    """``n`` synthetic cases drawn like ``like`` into a ``synthaug generate`` cache (resumable)."""
    from ...data.cache import generate_cache, merge_manifest, open_cache_as_cohort, plan_cases

    plan = plan_cases(n, seed, like=dict(like))
    generate_cache(root, generator, plan, fmt="npy", seed=seed, demographics_source="downstream",
                   progress=progress)
    merge_manifest(root, n=n)
    return open_cache_as_cohort(root)
