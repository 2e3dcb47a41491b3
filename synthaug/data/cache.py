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
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.case import Case
from ..core.demographics import Demographics, read_demographics_csv, sample_population
from ..core.io import (
    CT_FILE,
    DEMOGRAPHICS_FILE,
    META_FILE,
    ORGANS_FILE,
    PET_FILE,
    SEG_FILE,
    CaseError,
    Cohort,
    atomic_write_bytes,
    atomic_write_json,
    nifti_bytes,
    read_nifti,
    replace_dir,
    temporary_dir,
    write_demographics_csv,
)
from ..core.seeds import check_seed

MANIFEST_FILE = "manifest.json"
#: Per-case manifest entry (also the provenance file that :func:`synthaug.core.io.read_case` reads).
ENTRY_FILE = META_FILE
CACHE_VERSION = 1
FORMATS = ("npy", "npz", "nifti", "both")
DEFAULT_FORMAT = "both"
CASE_PREFIX = "synth_"
#: Array name -> dtype; ``ct`` is required, the others are stored when the generator makes them.
ARRAYS = {"ct": np.float32, "pet": np.float32, "organs": np.uint8, "lesions": np.uint8}
NIFTI_NAMES = {"ct": CT_FILE, "pet": PET_FILE, "lesions": SEG_FILE, "organs": ORGANS_FILE}
NPZ_FILE = "case.npz"
#: Header fields that must agree between a cache and a run that adds to it.
HEADER_KEYS = ("generator_sha256", "settings", "preset", "grid", "format")

_CASE_RE = re.compile(rf"^{CASE_PREFIX}(\d+)$")


def case_id_for(index: int) -> str:
    """The global id of case ``index``: ``synth_00000``, ``synth_00001``, ..."""
    return f"{CASE_PREFIX}{index:05d}"


def _files_for(fmt: str, arrays: Sequence[str]) -> list[str]:
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}; choose one of {FORMATS}")
    files = []
    if fmt in ("npy", "both"):
        files += [f"{a}.npy" for a in arrays]
    if fmt == "npz":
        files.append(NPZ_FILE)
    if fmt in ("nifti", "both"):
        files += [NIFTI_NAMES[a] for a in arrays]
    return files


# --- the plan: which case gets which seed and demographics -----------------------------------


@dataclass(frozen=True)
class PlannedCase:
    """Case ``index`` of a plan: its global id, seed and demographics."""

    index: int
    case_id: str
    seed: int
    demographics: Demographics


def population_seed(seed: int) -> int:
    """The seed of the demographics draw, decorrelated from the per-case seeds ``seed + i``."""
    return int(np.random.SeedSequence([int(seed), 0x5EED]).generate_state(1)[0])


def plan_cases(
    n: int | None,
    seed: int = 0,
    demographics: Sequence[Demographics] | Mapping[str, Demographics] | str | Path | None = None,
    like: str | Path | Mapping[str, Demographics] | Sequence[Demographics] | None = None,
) -> list[PlannedCase]:
    """Seeds and demographics of ``n`` cases; case ``i`` gets seed ``seed + i``.

    Args:
        n: number of cases (default: the length of ``demographics``).
        seed: base seed (>= 0).
        demographics: a fixed list (or mapping, or ``demographics.csv`` path), used in
            order and cycled if ``n`` is larger; ``None`` draws ``sample_population``.
        like: draw a population matched to this cohort (``demographics.csv`` path, mapping
            or list) instead.
    """
    check_seed(seed)
    if demographics is not None and like is not None:
        raise ValueError("give either demographics= (a fixed list) or like= (a matched population), not both")
    if demographics is not None:
        if isinstance(demographics, (str, Path)):
            pool = list(read_demographics_csv(demographics).values())
        elif isinstance(demographics, Mapping):
            pool = list(demographics.values())
        elif isinstance(demographics, Demographics):
            pool = [demographics]
        else:
            pool = list(demographics)
        if not pool:
            raise ValueError("demographics: the list is empty")
        bad = [type(d).__name__ for d in pool if not isinstance(d, Demographics)]
        if bad:
            raise ValueError(f"demographics: expected Demographics objects, got {bad[0]}")
        n = len(pool) if n is None else n
        _check_n(n)
        demos = [pool[i % len(pool)] for i in range(n)]
    else:
        if n is None:
            raise ValueError("n (the number of cases) is required when demographics are drawn from a population")
        _check_n(n)
        demos = sample_population(n, population_seed(seed), like=like)
    return [PlannedCase(i, case_id_for(i), int(seed) + i, d) for i, d in enumerate(demos)]


def _check_n(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``--shard i/N`` (0 <= i < N)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"`shard` {text!r}: expected i/N with 0 <= i < N, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


# --- the manifest ------------------------------------------------------------------------


def make_header(generator, fmt: str = DEFAULT_FORMAT, preset: str | None = None, seed: int | None = None,
                demographics_source: str | None = None) -> dict:
    """The cache header for ``generator`` (a :class:`synthaug.sampling.generator.CaseGenerator`)."""
    from .. import __version__

    _files_for(fmt, ())
    settings = json.loads(json.dumps(dict(generator.settings), default=str))
    return {
        "synthaug_cache": CACHE_VERSION,
        "synthaug_version": __version__,
        "generator_sha256": str(generator.sha256),
        "settings": settings,
        "preset": preset if preset is not None else settings.get("preset"),
        "grid": generator.output_grid.to_dict(),
        "format": fmt,
        "seed": seed,
        "demographics_source": demographics_source,
    }


def load_manifest(root: str | Path) -> dict:
    """Read and check ``<root>/manifest.json`` (clear errors for a missing or foreign file)."""
    root = Path(root)
    path = root / MANIFEST_FILE
    if not root.is_dir():
        raise FileNotFoundError(f"cache folder not found: {root}")
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a synthaug cache: no {MANIFEST_FILE} (write one with `synthaug generate`, "
                                f"or `synthaug cache merge {root}` after an interrupted run)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable manifest ({err}); rebuild it with `synthaug cache merge {root}`") from None
    if not isinstance(manifest, dict) or manifest.get("synthaug_cache") != CACHE_VERSION:
        raise ValueError(f"{path}: not a synthaug cache manifest (version {CACHE_VERSION} expected)")
    missing = [k for k in (*HEADER_KEYS, "cases") if k not in manifest]
    if missing:
        raise ValueError(f"{path}: manifest lacks {missing}")
    return manifest


def _check_header(root: Path, existing: dict, wanted: dict) -> None:
    for key in HEADER_KEYS:
        if existing.get(key) != wanted.get(key):
            what = {"generator_sha256": "generator (sha256)", "settings": "sampler settings"}.get(key, key)
            have, want = existing.get(key), wanted.get(key)
            if key == "generator_sha256":
                have, want = str(have)[:12] + "...", str(want)[:12] + "..."
            raise ValueError(
                f"cache {root} was made with a different {what}: {have!r} there, {want!r} requested; "
                "nothing was changed (use another `root`, or the same generator/preset/format)"
            )


def _read_entry(case_dir: Path) -> dict | None:
    """The per-case entry, or ``None`` when it is missing or unreadable (the case is redone)."""
    try:
        entry = json.loads((case_dir / ENTRY_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
        return None
    return entry


def _files_intact(case_dir: Path, entry: dict) -> bool:
    """Cheap completeness check: every listed file exists with its recorded size."""
    for name, info in entry["files"].items():
        try:
            if (case_dir / name).stat().st_size != int(info["bytes"]):
                return False
        except (OSError, KeyError, TypeError, ValueError):
            return False
    return True


def _entry_matches(entry: dict, planned: PlannedCase, model_sha256: str) -> str | None:
    """Why ``entry`` is not the planned case (``None`` if it is)."""
    if entry.get("model_sha256") != model_sha256:
        return "another generator"
    if entry.get("seed") != planned.seed:
        return f"seed {entry.get('seed')} (this run: {planned.seed})"
    if entry.get("demographics") != planned.demographics.to_dict():
        return f"demographics {entry.get('demographics')} (this run: {planned.demographics.to_dict()})"
    return None


def case_indices(root: str | Path) -> dict[int, Path]:
    """Index -> folder of every ``synth_<i>`` case folder under ``root``."""
    out = {}
    for p in Path(root).iterdir():
        m = _CASE_RE.match(p.name)
        if m and p.is_dir():
            out[int(m.group(1))] = p
    return out


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
        entry = _read_entry(case_dir)
        if entry is None or entry.get("model_sha256") != manifest["generator_sha256"]:
            continue
        if entry.get("case_id") != case_dir.name or entry.get("index") != index or not _files_intact(case_dir, entry):
            continue
        cases.append(entry)
    n = max(n, (max((e["index"] for e in cases), default=-1) + 1))
    have = {e["index"] for e in cases}
    manifest.update(cases=cases, n=n, complete=all(i in have for i in range(n)))
    atomic_write_json(root / MANIFEST_FILE, manifest)
    write_demographics_csv(root / DEMOGRAPHICS_FILE, {e["case_id"]: _entry_demographics(e) for e in cases})
    return manifest


def _entry_demographics(entry: dict) -> Demographics:
    d = entry.get("demographics") or {}
    return Demographics(d.get("age"), d.get("sex"), d.get("height_cm"), d.get("weight_kg"), d.get("diagnosis"))


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
        for name in _files_for(fmt, list(arrays)):
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


def _is_empty_or_cache(root: Path) -> bool:
    if (root / MANIFEST_FILE).is_file():
        return True
    visible = [p for p in root.iterdir() if not p.name.startswith(".")]
    return all(_CASE_RE.match(p.name) for p in visible)


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
    """
    from ..core.progress import progress_bar

    root = Path(root)
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    header = make_header(generator, fmt, preset, seed, demographics_source)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"`root` {root} exists and is not a folder")
    if root.is_dir() and not _is_empty_or_cache(root):
        raise FileExistsError(f"`root` {root} is a non-empty folder that is not a synthaug cache; choose another `root`")
    root.mkdir(parents=True, exist_ok=True)
    n_plan = max((p.index for p in plan), default=-1) + 1
    existing = None
    if (root / MANIFEST_FILE).is_file():
        existing = load_manifest(root)
        _check_header(root, existing, header)

    # Check every finished case against the plan before writing anything.
    sha = header["generator_sha256"]
    todo: list[tuple[PlannedCase, bool]] = []
    result = GenerateResult()
    for planned in plan:
        case_dir = root / planned.case_id
        entry = _read_entry(case_dir) if case_dir.is_dir() else None
        if entry is not None:
            why = _entry_matches(entry, planned, sha)
            if why is not None:
                raise ValueError(f"cache {root}: case {planned.case_id} was generated with {why}; nothing was changed "
                                 "(use another `root`, or the same `seed`/`demographics`/generator)")
        if planned.index % world != rank:
            continue
        result.owned += 1
        if entry is not None and entry.get("format") == fmt and _files_intact(case_dir, entry):
            result.already_done += 1
        else:
            todo.append((planned, case_dir.exists()))
    if existing is None:
        atomic_write_json(root / MANIFEST_FILE, {**header, "n": n_plan, "complete": False, "cases": []})
    elif n_plan > int(existing.get("n") or 0):
        atomic_write_json(root / MANIFEST_FILE, {**existing, "n": n_plan, "complete": False})
    for planned, _ in todo:  # leftovers of this process's own interrupted writes
        for stale in root.glob(f".{planned.case_id}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)

    bar = progress_bar(total=result.owned, initial=result.already_done, unit="case", disable=not progress,
               desc="generate" if world == 1 else f"generate {rank}/{world}")
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            cases = generator.sample([p.demographics for p, _ in chunk], seed=[p.seed for p, _ in chunk])
            if len(cases) != len(chunk):
                raise RuntimeError(f"generator returned {len(cases)} cases for {len(chunk)} demographics")
            for (planned, repair), case in zip(chunk, cases):
                if tuple(case.shape) != tuple(generator.output_grid.shape):
                    raise RuntimeError(f"generator made a {case.shape} case, its output_grid is "
                                       f"{generator.output_grid.shape}")
                write_cache_case(root, planned, case, fmt=fmt, model_sha256=sha)
                (result.repaired if repair else result.generated).append(planned.case_id)
                bar.update(1)
    finally:
        bar.close()
    return result


# --- reading -----------------------------------------------------------------------------


def _entry_path_problem(root: Path, entry: dict) -> str | None:
    case_dir = root / str(entry.get("case_id"))
    if not case_dir.is_dir():
        return "folder missing"
    for name, info in entry.get("files", {}).items():
        p = case_dir / name
        if not p.is_file():
            return f"{name} missing"
        if p.stat().st_size != int(info["bytes"]):
            return f"{name} has {p.stat().st_size} bytes, the manifest says {info['bytes']}"
    return None


def check_manifest_files(root: str | Path, manifest: dict) -> None:
    """Raise ``ValueError`` if a case listed in the manifest is missing or has wrongly sized files."""
    root = Path(root)
    for entry in manifest["cases"]:
        problem = _entry_path_problem(root, entry)
        if problem:
            raise ValueError(f"cache {root}: manifest.json does not match the files: case {entry.get('case_id')}: "
                             f"{problem} (run `synthaug cache verify {root}`)")


def read_cache_case(root: str | Path, entry: dict, *, prefer: Sequence[str] = ("npy", "npz", "nifti")) -> Case:
    """Read one cached case (the fastest stored format first) as a :class:`~synthaug.core.case.Case`."""
    root = Path(root)
    case_id = entry["case_id"]
    case_dir = root / case_id
    names = list(entry.get("arrays") or ARRAYS)
    files = entry["files"]
    arrays: dict[str, np.ndarray] = {}
    affine = np.asarray(entry["affine"], dtype=np.float64)
    for kind in prefer:
        try:
            if kind == "npy" and all(f"{a}.npy" in files for a in names):
                arrays = {a: np.load(case_dir / f"{a}.npy", allow_pickle=False) for a in names}
            elif kind == "npz" and NPZ_FILE in files:
                with np.load(case_dir / NPZ_FILE, allow_pickle=False) as z:
                    arrays = {a: z[a] for a in names}
            elif kind == "nifti" and all(NIFTI_NAMES[a] in files for a in names):
                arrays = {a: read_nifti(case_dir / NIFTI_NAMES[a])[0] for a in names}
            else:
                continue
        except (OSError, ValueError, KeyError, EOFError) as err:
            raise CaseError(f"cache {root}: case {case_id}: unreadable {kind} file ({type(err).__name__}: {err}); "
                            f"run `synthaug cache verify {root}`") from None
        break
    if "ct" not in arrays:
        raise CaseError(f"cache {root}: case {case_id}: no readable arrays among {sorted(files)}")
    shape = tuple(entry.get("shape") or arrays["ct"].shape)
    for a, arr in arrays.items():
        if tuple(arr.shape) != shape:
            raise CaseError(f"cache {root}: case {case_id}: {a} has shape {arr.shape}, the manifest says {shape}")
    meta = {k: v for k, v in entry.items() if k not in ("files", "affine", "demographics")}
    return Case(ct=arrays["ct"].astype(np.float32, copy=False), pet=_opt(arrays, "pet", np.float32),
                organs=_opt(arrays, "organs", np.uint8), lesions=_opt(arrays, "lesions", np.uint8), affine=affine,
                demographics=_entry_demographics(entry), meta=meta)


def _opt(arrays: dict, name: str, dtype) -> np.ndarray | None:
    return arrays[name].astype(dtype, copy=False) if name in arrays else None


# --- verifying ---------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """Result of :func:`verify_cache`: ``problems`` make it fail, ``warnings`` do not."""

    root: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_cache(root: str | Path, *, checksums: bool = True, progress: bool = True) -> VerifyReport:
    """Check a cache: every case of ``0 .. n-1`` listed, present, of the right size and checksum.

    Reports (does not fix) missing cases, truncated or corrupt files, per-case entries that
    disagree with ``manifest.json``, and finished cases that the manifest does not list yet.
    """
    from ..core.progress import progress_bar

    root = Path(root)
    manifest = load_manifest(root)
    report = VerifyReport(root)
    listed = {e.get("case_id"): e for e in manifest["cases"]}
    n = int(manifest.get("n") or 0)
    for i in range(n):
        if case_id_for(i) not in listed:
            report.problems.append(f"{case_id_for(i)}: missing (not generated or not merged)")
    on_disk = case_indices(root)
    unlisted = sorted(p.name for i, p in on_disk.items() if p.name not in listed)
    for name in unlisted:
        if _read_entry(root / name) is not None:
            report.problems.append(f"{name}: on disk but not in {MANIFEST_FILE} (run `synthaug cache merge {root}`)")
        else:
            report.problems.append(f"{name}: folder without a readable {ENTRY_FILE} (half-written; re-run generate)")
    for entry in progress_bar(manifest["cases"], desc="verify", unit="case", disable=not progress):
        cid = entry.get("case_id")
        report.checked += 1
        case_dir = root / str(cid)
        if not case_dir.is_dir():
            report.problems.append(f"{cid}: folder missing")
            continue
        own = _read_entry(case_dir)
        if own is None:
            report.problems.append(f"{cid}: {ENTRY_FILE} missing or unreadable")
        elif own.get("files") != entry.get("files"):
            report.problems.append(f"{cid}: {ENTRY_FILE} disagrees with {MANIFEST_FILE} (run `synthaug cache merge {root}`)")
        for name, info in entry.get("files", {}).items():
            p = case_dir / name
            if not p.is_file():
                report.problems.append(f"{cid}: {name} missing")
                continue
            size = p.stat().st_size
            if size != int(info["bytes"]):
                report.problems.append(f"{cid}: {name} truncated or altered ({size} bytes, expected {info['bytes']})")
            elif checksums and _sha256_file(p) != info["sha256"]:
                report.problems.append(f"{cid}: {name} is corrupt (sha256 mismatch)")
    stale = list(root.glob(".*.tmp"))
    if stale:
        report.warnings.append(f"{len(stale)} temporary file(s)/folder(s) of interrupted writes, e.g. {stale[0].name} "
                               "(removed when generate runs again)")
    return report


# --- the cache as a cohort ---------------------------------------------------------------


class CacheCohort(Cohort):
    """A cache seen as a :class:`~synthaug.core.io.Cohort`: same ``case_ids``, ``demographics``,
    ``path`` and ``load``, whatever the stored format (``load`` reads the fastest one)."""

    def __init__(self, root: str | Path) -> None:  # noqa: D107 - Cohort's scan is replaced by the manifest
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        check_manifest_files(self.root, self.manifest)
        self.entries = {e["case_id"]: e for e in self.manifest["cases"]}
        if not self.entries:
            raise CaseError(f"cache {self.root}: no finished cases in {MANIFEST_FILE}")
        self.case_ids = list(self.entries)
        self.demographics = {cid: _entry_demographics(e) for cid, e in self.entries.items()}

    def load(self, case_id: str, **kwargs) -> Case:
        """Read one case (keyword arguments of :meth:`Cohort.load` are accepted and ignored)."""
        try:
            entry = self.entries[case_id]
        except KeyError:
            raise CaseError(f"cache {self.root}: no case {case_id!r}") from None
        return read_cache_case(self.root, entry)

    @property
    def has_organs(self) -> bool:
        return all("organs" in (e.get("arrays") or ()) for e in self.entries.values())


def open_cache_as_cohort(root: str | Path) -> Cohort:
    """Open a ``synthaug generate`` cache as a cohort (any format; see :class:`CacheCohort`).

    With format ``both`` or ``nifti`` the folder is also a plain AutoPET-layout cohort
    (``synthaug.core.io.Cohort(root)`` works after the merge wrote ``demographics.csv``); this
    function works for ``npy``/``npz`` caches too. Raises ``ValueError`` when the manifest
    does not match the files.
    """
    return CacheCohort(root)


def is_cache(root: str | Path) -> bool:
    """True when ``root`` holds a synthaug cache manifest."""
    return (Path(root) / MANIFEST_FILE).is_file()
