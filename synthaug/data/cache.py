"""A pre-generated cache of synthetic cases: sharded, resumable, with a checksummed manifest.

Layout of a cache folder::

    <root>/manifest.json             header (generator sha256, sampler settings, preset, grid,
                                     format) + one entry per finished case (merged index)
    <root>/demographics.csv          written by the merge: the cache is also an AutoPET cohort
    <root>/synth_00000/meta.json     the case's own manifest entry (seed, demographics,
                                     sha256 and size of every file); written last
    <root>/synth_00000/ct.npy ...    arrays (format ``npy``), or ``case.npz`` (``npz``),
                                     and/or CTres/SUV/SEG/ORGANS.nii.gz (``nifti``; ``both``
                                     = ``npy`` + ``nifti``)

A case folder is assembled under a temporary name and renamed into place, so a case is
either complete or absent; re-running :func:`generate_cache` skips finished cases and
regenerates damaged ones. Every process (torchrun rank or ``--shard``) writes only its own
case folders; :func:`merge_manifest` builds ``manifest.json`` from the per-case entries, so
parallel writers never race on a shared file.

Case ``synth_<i>`` uses seed ``seed + i`` and the ``i``-th demographics of the plan
(:func:`plan_cases`), so ids and contents do not depend on how the work was split.

Measured on the 2-core machine for one demo case (128 x 128 x 256; CT, PET float32 +
two uint8 label maps), warm page cache: ``.npy`` 9 ms, uncompressed ``.npz`` 15 ms,
``.nii.gz`` 54 ms, compressed ``.npz`` 74 ms (``benchmarks/bench_io.py``). The default
``both`` reads ``.npy`` for training and keeps the AutoPET-layout NIfTI for every other tool.

This module writes: a case (:func:`write_cache_case`), a run's share of the cases
(:func:`generate_cache`: :func:`~synthaug.data.cache_plan.plan_generation` checks and decides,
:func:`execute_generation` writes) and the merged manifest. The layout's names, the header and
reading the entries back are :mod:`synthaug.data.cache_layout`'s, the plans
:mod:`synthaug.data.cache_plan`'s, reading, verifying and the cache as a cohort
:mod:`synthaug.data.cache_read`'s; every public name is importable from here too.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.case import Case
from ..core.io import (
    DEMOGRAPHICS_FILE,
    atomic_write_bytes,
    atomic_write_json,
    nifti_bytes,
    replace_dir,
    temporary_dir,
    write_demographics_csv,
)
from .cache_layout import (
    ARRAYS,
    CACHE_VERSION,
    CASE_PREFIX,
    DEFAULT_FORMAT,
    ENTRY_FILE,
    FORMATS,
    HEADER_KEYS,
    MANIFEST_FILE,
    NIFTI_NAMES,
    NPZ_FILE,
    case_id_for,
    case_indices,
    entry_demographics,
    files_for,
    files_intact,
    load_manifest,
    make_header,
    read_entry,
)
from .cache_plan import GenerationPlan, PlannedCase, parse_shard, plan_cases, plan_generation, population_seed
from .cache_read import (
    CacheCohort,
    VerifyReport,
    check_manifest_files,
    is_cache,
    open_cache_as_cohort,
    read_cache_case,
    verify_cache,
)

__all__ = [
    "ARRAYS", "CACHE_VERSION", "CASE_PREFIX", "DEFAULT_FORMAT", "ENTRY_FILE", "FORMATS", "HEADER_KEYS", "MANIFEST_FILE",
    "NIFTI_NAMES", "NPZ_FILE", "CacheCohort", "GenerateResult", "GenerationPlan", "PlannedCase", "VerifyReport",
    "case_id_for", "case_indices", "check_manifest_files", "execute_generation", "generate_cache", "is_cache",
    "load_manifest", "make_header", "merge_manifest", "open_cache_as_cohort", "parse_shard", "plan_cases",
    "plan_generation", "population_seed", "read_cache_case", "verify_cache", "write_cache_case",
]


# --- the manifest ------------------------------------------------------------------------


def merge_manifest(root: str | Path, *, n: int | None = None) -> dict:
    """Build ``manifest.json`` and ``demographics.csv`` from the per-case entries.

    Only cases whose entry matches the header's generator and whose files are all present
    with their recorded sizes are listed. ``complete`` is true when cases ``0 .. n-1`` are
    all there (``n``: the header's, or the largest planned so far). Returns the manifest.
    """
    root = Path(root)
    manifest = load_manifest(root)
    n = max(int(manifest.get("n") or 0), int(n or 0))
    cases = []
    for index, case_dir in sorted(case_indices(root).items()):
        entry = read_entry(case_dir)
        if entry is None or entry.get("model_sha256") != manifest["generator_sha256"]:
            continue
        if entry.get("case_id") != case_dir.name or entry.get("index") != index or not files_intact(case_dir, entry):
            continue
        cases.append(entry)
    n = max(n, (max((e["index"] for e in cases), default=-1) + 1))
    have = {e["index"] for e in cases}
    manifest.update(cases=cases, n=n, complete=all(i in have for i in range(n)))
    atomic_write_json(root / MANIFEST_FILE, manifest)
    write_demographics_csv(root / DEMOGRAPHICS_FILE, {e["case_id"]: entry_demographics(e) for e in cases})
    return manifest


# --- writing one case --------------------------------------------------------------------


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _jsonable(obj: object) -> object:
    try:
        return json.loads(json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    except (TypeError, ValueError):
        return None


def write_cache_case(root: str | Path, planned: PlannedCase, case: Case, *, fmt: str, model_sha256: str) -> dict:
    """Write ``case`` as ``<root>/<case_id>/`` atomically (whole or not at all); return its entry."""
    root = Path(root)
    arrays = {name: np.asarray(getattr(case, name), dtype=dtype)
              for name, dtype in ARRAYS.items() if getattr(case, name) is not None}
    if "lesions" in arrays:
        arrays["lesions"] = (arrays["lesions"] > 0).astype(np.uint8)
    final = root / planned.case_id
    tmp = temporary_dir(root, planned.case_id)
    try:
        files = {}
        for name in files_for(fmt, list(arrays)):
            if name.endswith(".npy"):
                data = _npy_bytes(arrays[name[:-4]])
            elif name == NPZ_FILE:
                buf = _io.BytesIO()
                np.savez(buf, **arrays)
                data = buf.getvalue()
            else:
                key = next(k for k, v in NIFTI_NAMES.items() if v == name)
                data = nifti_bytes(arrays[key], case.affine)
            atomic_write_bytes(tmp / name, data)
            files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        meta = {k: v for k, v in (_jsonable(dict(case.meta)) or {}).items() if k != "demographics"}
        entry = {
            **meta,
            "case_id": planned.case_id,
            "index": planned.index,
            "seed": planned.seed,
            "demographics": planned.demographics.to_dict(),
            "source": case.meta.get("source", "synthetic"),
            "model_sha256": model_sha256,
            "format": fmt,
            "arrays": list(arrays),
            "shape": list(case.shape),
            "affine": case.affine.tolist(),
            "files": files,
        }
        atomic_write_json(tmp / ENTRY_FILE, entry)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


# --- generating --------------------------------------------------------------------------


@dataclass
class GenerateResult:
    """What one :func:`generate_cache` call did (for its share of the cases)."""

    owned: int = 0
    already_done: int = 0
    generated: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


def generate_cache(
    root: str | Path,
    generator,
    plan: Sequence[PlannedCase],
    *,
    fmt: str = DEFAULT_FORMAT,
    preset: str | None = None,
    seed: int | None = None,
    demographics_source: str | None = None,
    rank: int = 0,
    world: int = 1,
    batch_size: int = 1,
    progress: bool = True,
) -> GenerateResult:
    """Generate the cases of ``plan`` that this process owns (``index % world == rank``).

    Finished cases are skipped, damaged ones (missing or wrongly sized files, no entry)
    regenerated. All checks run before any case is generated: a cache made by another
    generator, preset or format, or a finished case whose seed or demographics differ from
    the plan, raise ``ValueError`` and nothing is changed. Does not merge the manifest
    (see :func:`merge_manifest`).

    Two steps: :func:`~synthaug.data.cache_plan.plan_generation` checks the arguments and
    ``root`` and decides every case (a :class:`~synthaug.data.cache_plan.GenerationPlan`),
    :func:`execute_generation` writes it.
    """
    steps = plan_generation(root, generator, plan, fmt=fmt, preset=preset, seed=seed,
                            demographics_source=demographics_source, rank=rank, world=world, batch_size=batch_size)
    return execute_generation(steps, generator, progress=progress)


def execute_generation(plan: GenerationPlan, generator, *, progress: bool = True) -> GenerateResult:
    """Write ``plan`` (made by :func:`~synthaug.data.cache_plan.plan_generation` for ``generator``):
    the manifest header first, then each case to generate, ``plan.batch_size`` per generator call."""
    from ..core.progress import progress_bar

    root, sha = plan.root, plan.header["generator_sha256"]
    root.mkdir(parents=True, exist_ok=True)
    if plan.manifest is not None:
        atomic_write_json(root / MANIFEST_FILE, plan.manifest)
    for planned, _ in plan.todo:  # leftovers of this process's own interrupted writes
        for stale in root.glob(f".{planned.case_id}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    result = GenerateResult(owned=plan.owned, already_done=plan.already_done)
    bar = progress_bar(total=plan.owned, initial=plan.already_done, unit="case", disable=not progress,
                       desc="generate" if plan.world == 1 else f"generate {plan.rank}/{plan.world}")
    try:
        for start in range(0, len(plan.todo), plan.batch_size):
            chunk = plan.todo[start:start + plan.batch_size]
            cases = generator.sample([p.demographics for p, _ in chunk], seed=[p.seed for p, _ in chunk])
            if len(cases) != len(chunk):
                raise RuntimeError(f"generator returned {len(cases)} cases for {len(chunk)} demographics")
            for (planned, repair), case in zip(chunk, cases):
                if tuple(case.shape) != tuple(generator.output_grid.shape):
                    raise RuntimeError(f"generator made a {case.shape} case, its output_grid is "
                                       f"{generator.output_grid.shape}")
                write_cache_case(root, planned, case, fmt=plan.fmt, model_sha256=sha)
                (result.repaired if repair else result.generated).append(planned.case_id)
                bar.update(1)
    finally:
        bar.close()
    return result
