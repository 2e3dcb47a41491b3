"""The cases of an evaluation: checking and reading cohorts, generating cases for a reference cohort's
demographics, and measuring each case into a :class:`CaseSummary` (what the comparison keeps of it).

The measurements themselves are :func:`synthaug.evaluation.metrics.measure_case`'s; the checks here
read NIfTI headers only, so that a bad cohort fails before any case is measured.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.case import Case
from ..core.demographics import Demographics
from ..core.grid import Grid
from ..core.io import CT_FILE, ORGANS_FILE, PET_FILE, SEG_FILE, CaseError, Cohort, same_grid
from ..core.labels import NUM_ORGAN_CLASSES, check_organ_map
from ..sampling.generator import CaseGenerator


@dataclass
class CaseSummary:
    """What the evaluation keeps of one case: its measurements and two small pictures."""

    case_id: str
    demographics: Demographics | None
    values: dict[str, dict[str, float]]
    thumbs: dict | None = None
    features: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


# --- checking cohorts (headers only) --------------------------------------------------------------


def header_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, affine) of a NIfTI file, from its header."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for corrupt files
        raise OSError(f"cannot read NIfTI {path}: {type(err).__name__}: {err}") from None
    return tuple(img.shape[:3]), np.asarray(img.affine, dtype=np.float64)


def open_cohort(x, role: str, require_demographics: bool) -> Cohort:
    """``x`` as a :class:`Cohort` (a folder is opened; a cohort must have demographics if required)."""
    if isinstance(x, Cohort):
        if require_demographics and not x.demographics:
            raise FileNotFoundError(f"{role} cohort {x.root}: missing demographics.csv")
        return x
    return Cohort(x, require_demographics=require_demographics)


def check_cohort(cohort: Cohort, role: str, organs_dir: Path | None, need_organs: bool = True) -> None:
    """Fail before any work if a case lacks a file, an organ map, or has mismatched grids (headers only)."""
    from ..data.totalseg import find_totalseg

    for cid in cohort:
        folder = cohort.path(cid)
        for name in (CT_FILE, PET_FILE):
            if not (folder / name).is_file():
                raise CaseError(f"{role} case {cid}: missing {name} (expected {folder / name})")
        shape, affine = header_grid(folder / CT_FILE)
        others = [folder / n for n in (PET_FILE, SEG_FILE, ORGANS_FILE) if (folder / n).is_file()]
        seg = find_totalseg(organs_dir, cid) if organs_dir is not None else None
        if organs_dir is not None and seg is None:
            raise CaseError(f"{role} case {cid}: no segmentation in {organs_dir} (expected {cid}.nii.gz or {cid}/)")
        if need_organs and organs_dir is None and not (folder / ORGANS_FILE).is_file():
            hint = ("pass `organs_dir` with a TotalSegmentator v2 'total' segmentation per case" if role == "reference"
                    else "synthetic cases must carry their organ map")
            raise CaseError(f"{role} case {cid}: no {ORGANS_FILE}; {hint}")
        if seg is not None and seg.is_file():
            others.append(seg)
        for path in others:
            s, a = header_grid(path)
            if not same_grid(shape, affine, s, a):
                raise CaseError(f"{role} case {cid}: {path.name} grid {s} does not match {CT_FILE} grid {shape} "
                                f"(or their affines differ)")


def check_organs(case: Case, where: str) -> None:
    """Refuse a case without an organ map, or with ids outside the synthaug map."""
    organs = case.organs
    if organs is None:
        raise CaseError(f"{where}: no organ map; organ-wise measurements need ORGANS.nii.gz or `organs_dir`")
    if organs.size and int(organs.max()) >= NUM_ORGAN_CLASSES:
        check_organ_map(organs, where=where)


def reference_grid(cohort: Cohort) -> Grid:
    """The grid (shape, spacing) of the cohort's first case: the phantom baseline is generated on it."""
    cid = cohort.case_ids[0]
    shape, affine = header_grid(cohort.path(cid) / CT_FILE)
    return Grid(shape, tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)))


# --- reading and generating cases ----------------------------------------------------------------------


def cohort_cases(cohort: Cohort, role: str, organs_dir: Path | None, organs_map: str) -> Iterator[Case]:
    """The cohort's cases, one at a time, with demographics from ``meta.json`` and the organs of ``organs_dir``."""
    from ..data.totalseg import find_totalseg, read_totalseg, totalseg_to_synthaug

    for cid in cohort:
        case = cohort.load(cid, require_lesions=False)
        if case.demographics is None and isinstance(case.meta.get("demographics"), dict):
            try:
                case.demographics = Demographics(**case.meta["demographics"])
            except (TypeError, ValueError) as err:
                raise CaseError(f"{role} case {cid}: bad demographics in meta.json: {err}") from None
        where = f"{role} case {cid}: {ORGANS_FILE}"
        if organs_dir is not None:
            path = find_totalseg(organs_dir, cid)
            where = f"{role} case {cid}: {path}"
            labels, affine = read_totalseg(path, cid)
            if not same_grid(case.ct.shape, case.affine, labels.shape, affine):
                raise CaseError(f"{role} case {cid}: segmentation {path.name} grid {labels.shape} does not match "
                                f"{CT_FILE} grid {case.ct.shape} (or their affines differ)")
            if organs_map == "totalseg":
                case.organs = totalseg_to_synthaug(labels, case.ct, where=where)
            else:
                case.organs = np.asarray(labels)
        check_organs(case, where)
        yield case


def generated_cases(generator: CaseGenerator, requests: Sequence[tuple[str, Demographics]], seed: int,
                    batch_size: int = 1) -> Iterator[Case]:
    """Cases for ``requests`` (reference id, demographics); case ``i`` from seed ``seed + i``, in batches."""
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        seeds = [seed + start + k for k in range(len(chunk))]
        cases = generator.sample([d for _, d in chunk], seed=seeds, progress=False)
        for (ref_id, demo), s, case in zip(chunk, seeds, cases):
            case.demographics = case.demographics or demo
            case.meta = {**case.meta, "reference_case": ref_id, "seed": s}
            yield case


# --- measuring -----------------------------------------------------------------------------------------------


def summarise(cases: Iterable[Case], *, total: int | None = None, desc: str = "measure", progress: bool = True,
              features: bool = False, ids: Sequence[str] | None = None) -> list[CaseSummary]:
    """Measure every case (:func:`synthaug.evaluation.metrics.measure_case`), with a progress bar."""
    from ..core.progress import progress_bar
    from .metrics import measure_case, memorisation_features, thumbnails

    out = []
    for i, case in enumerate(progress_bar(cases, total=total, desc=desc, disable=not progress, unit="case")):
        cid = str(ids[i] if ids is not None else case.meta.get("case_id") or f"case{i:04d}")
        if case.pet is None:
            raise CaseError(f"{desc}: case {cid} has no PET/SUV image")
        check_organs(case, f"case {cid}: organ map")
        out.append(CaseSummary(
            case_id=cid, demographics=case.demographics, values=measure_case(case), thumbs=thumbnails(case),
            features=memorisation_features(case) if features else None,
            meta={k: case.meta[k] for k in ("source", "seed", "reference_case") if k in case.meta},
        ))
    return out


def training_features(cohort: Cohort, progress: bool = True) -> tuple[list[str], np.ndarray]:
    """Memorisation features (:func:`synthaug.evaluation.metrics.memorisation_features`) of every training case."""
    from ..core.progress import progress_bar
    from .metrics import memorisation_features

    ids, feats = [], []
    for cid in progress_bar(cohort.case_ids, desc="training", disable=not progress, unit="case"):
        feats.append(memorisation_features(cohort.load(cid, require_lesions=False)))
        ids.append(cid)
    return ids, np.stack(feats)
