"""Lesion insertion into a cohort: an augmented copy of an AutoPET-layout cohort with new lesions.

:func:`insert_cohort` reads each case (``CTres``, ``SUV``, ``SEG`` where present, organ labels from
``ORGANS.nii.gz`` or a TotalSegmentator ``total`` output mapped by :mod:`synthaug.data.totalseg`),
adds lesions with :func:`synthaug.phantom.lesions.add_lesions` (the case's diagnosis drives the
lesion model; appearance on the scan's own terms, :class:`~synthaug.phantom.lesion_paint.LesionAppearance`)
and writes the case into a new cohort folder in the same layout. Every case is written whole or not at
all; a re-run with the same settings skips finished cases; the input is only read.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from ..core.io import (
    CT_FILE,
    DEMOGRAPHICS_FILE,
    META_FILE,
    ORGANS_FILE,
    PET_FILE,
    SEG_FILE,
    Cohort,
    atomic_write_bytes,
    atomic_write_json,
    remove_stale_temporaries,
    same_grid,
    write_case,
)
from ..core.progress import progress_bar
from ..core.seeds import check_seed
from ..phantom.lesion_paint import LesionAppearance
from ..phantom.lesions import add_lesions
from .totalseg import find_totalseg, read_totalseg, totalseg_to_synthaug

__all__ = ["SETTINGS_FILE", "InsertionSource", "case_seed", "check_insertion_cohort", "insert_cohort"]

#: The settings of an insertion run, written to the output folder (a re-run must match them).
SETTINGS_FILE = "insert_lesions.json"


@dataclass(frozen=True)
class InsertionSource:
    """Where one case's organ labels come from: its ``ORGANS.nii.gz`` or a TotalSegmentator output."""

    case_id: str
    totalseg: Path | None = None


def _header_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for corrupt files
        raise ValueError(f"cannot read {path}: {type(err).__name__}: {err}") from None
    return tuple(int(n) for n in img.shape[:3]), np.asarray(img.affine, np.float64)


def _totalseg_header(path: Path) -> Path:
    """The file whose header gives a TotalSegmentator output's grid (itself, or a file in its folder)."""
    if path.is_file():
        return path
    files = sorted(p for p in path.iterdir() if p.name.endswith((".nii.gz", ".nii")) and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{path} holds no TotalSegmentator .nii.gz")
    return files[0]


def _check_case(cohort: Cohort, case_id: str, organs_dir: Path | None) -> InsertionSource:
    folder = cohort.path(case_id)
    ct_path = folder / CT_FILE
    if not ct_path.is_file():
        raise ValueError(f"case {case_id}: missing {CT_FILE}")
    if not (folder / PET_FILE).is_file():
        raise ValueError(f"case {case_id}: missing {PET_FILE}: a CT-only case cannot take lesions (they need the PET)")
    grid = _header_grid(ct_path)
    for name in (PET_FILE, SEG_FILE):
        if (folder / name).is_file() and not same_grid(*grid, *_header_grid(folder / name)):
            raise ValueError(f"case {case_id}: {name} grid does not match {CT_FILE}")
    if (folder / ORGANS_FILE).is_file():
        if not same_grid(*grid, *_header_grid(folder / ORGANS_FILE)):
            raise ValueError(f"case {case_id}: {ORGANS_FILE} grid {_header_grid(folder / ORGANS_FILE)[0]} does not "
                             f"match the image grid {grid[0]} (labels must be on the CT/PET grid)")
        return InsertionSource(case_id)
    found = find_totalseg(organs_dir, case_id) if organs_dir is not None else None
    if found is None:
        where = f"nor a TotalSegmentator output in `organs_dir` ({organs_dir})" if organs_dir else \
            "and no `organs_dir` with TotalSegmentator outputs was given"
        raise ValueError(f"case {case_id}: no organ labels: no {ORGANS_FILE} {where}")
    ts_grid = _header_grid(_totalseg_header(found))
    if not same_grid(*grid, *ts_grid):
        raise ValueError(f"case {case_id}: TotalSegmentator labels {found} grid {ts_grid[0]} do not match the image "
                         f"grid {grid[0]} (run TotalSegmentator on this case's {CT_FILE})")
    return InsertionSource(case_id, found)


def check_insertion_cohort(cohort_dir: str | Path, organs_dir: str | Path | None = None) -> list[InsertionSource]:
    """Check every case of a cohort before any work: a PET, organ labels on the image grid.

    Raises:
        ValueError: one line naming the first bad case (and how many more there are).
    """
    cohort = Cohort(cohort_dir, require_demographics=False)
    organs_dir = None if organs_dir is None else Path(organs_dir)
    if organs_dir is not None and not organs_dir.is_dir():
        raise ValueError(f"`organs_dir`: folder not found: {organs_dir}")
    sources, problems = [], []
    for case_id in cohort:
        try:
            sources.append(_check_case(cohort, case_id, organs_dir))
        except ValueError as err:
            problems.append(str(err))
    if problems:
        more = f" (and {len(problems) - 1} more case(s) with problems)" if len(problems) > 1 else ""
        raise ValueError(problems[0] + more)
    return sources


def case_seed(seed: int, case_id: str) -> int:
    """The seed of one case's lesions: from the run's ``seed`` and the case id (not its position)."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(case_id.encode())]).generate_state(1)[0] >> 1)


def _settings(seed: int, diagnosis: str | None, appearance: LesionAppearance | None, organs_dir: Path | None) -> dict:
    return {"seed": int(seed), "diagnosis": diagnosis, "organs_dir": None if organs_dir is None else str(organs_dir),
            "appearance": None if appearance is None else asdict(appearance)}


def _check_out(cohort_dir: Path, out: Path, settings: dict) -> None:
    src, dst = cohort_dir.resolve(), out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise ValueError(f"`out` ({out}) must be a folder outside the input cohort ({cohort_dir}), and not hold it")
    done = out / SETTINGS_FILE
    if done.is_file() and json.loads(done.read_text()) != json.loads(_json_text(settings)):
        raise ValueError(f"`out` ({out}) holds an insertion run with other settings ({done}); use a new folder")


def _json_text(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def insert_cohort(cohort_dir: str | Path, out: str | Path, *, seed: int, diagnosis: str | None = None,
                  organs_dir: str | Path | None = None, appearance: LesionAppearance | None = None,
                  progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Write an augmented copy of the cohort at ``cohort_dir`` to ``out`` (see the module docstring).

    Args:
        cohort_dir: the input cohort (AutoPET layout); only read.
        out: the new cohort folder (created; outside ``cohort_dir``).
        seed: the run's seed; case ``c`` draws from :func:`case_seed` ``(seed, c)``.
        diagnosis: the diagnosis for every case; ``None``: each case's ``demographics.csv`` diagnosis
            (unknown: drawn from AutoPET's mix).
        organs_dir: TotalSegmentator ``total`` outputs for the cases without ``ORGANS.nii.gz``.
        appearance: how the lesions look (default: :class:`LesionAppearance` ``()``).

    Returns:
        ``{"written": [...], "skipped": [...], "lesions": {case_id: n}}``.
    """
    seed = check_seed(seed, "`seed`")
    cohort_dir, out = Path(cohort_dir), Path(out)
    appearance = LesionAppearance() if appearance is None else appearance
    sources = check_insertion_cohort(cohort_dir, organs_dir)
    cohort = Cohort(cohort_dir, require_demographics=False)
    settings = _settings(seed, diagnosis, appearance, None if organs_dir is None else Path(organs_dir))
    _check_out(cohort_dir, out, settings)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    atomic_write_bytes(out / SETTINGS_FILE, (_json_text(settings) + "\n").encode())
    if (cohort_dir / DEMOGRAPHICS_FILE).is_file():
        atomic_write_bytes(out / DEMOGRAPHICS_FILE, (cohort_dir / DEMOGRAPHICS_FILE).read_bytes())
    summary: dict = {"written": [], "skipped": [], "lesions": {}}
    for source in progress_bar(sources, desc="inserting lesions", unit="case", disable=not progress):
        cid = source.case_id
        if (out / cid / META_FILE).is_file():
            summary["skipped"].append(cid)
            continue
        case = cohort.load(cid, require_lesions=False)
        had_organs = case.organs is not None
        if not had_organs:
            labels, _ = read_totalseg(source.totalseg, cid)
            case = replace(case, organs=totalseg_to_synthaug(labels, case.ct, where=f"case {cid}: TotalSegmentator"))
        new = add_lesions(case, seed=case_seed(seed, cid), diagnosis=diagnosis, appearance=appearance)
        record = new.meta.pop("lesion_prior")
        new.meta["lesion_insertion"] = {**record, "run_seed": seed, "organs_from": "ORGANS" if had_organs else
                                        str(source.totalseg)}
        if case.demographics is None:
            new = replace(new, demographics=None)
        write_case(out, cid, replace(new, organs=new.organs if had_organs else None))
        summary["written"].append(cid)
        summary["lesions"][cid] = len(record["lesions"])
        log(f"{cid}: {len(record['lesions'])} lesion(s) inserted, {record['not_placed']} not placed")
    atomic_write_json(out / "insert_lesions_summary.json", summary)
    return summary
