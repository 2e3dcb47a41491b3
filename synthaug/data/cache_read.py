"""Reading a cache (:mod:`synthaug.data.cache`): one case in the fastest stored format, the check
that the manifest matches the files, :func:`verify_cache`, and the cache seen as a cohort.

Nothing here writes a file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.case import Case
from ..core.io import CaseError, Cohort, read_nifti
from .cache_layout import (
    ARRAYS,
    ENTRY_FILE,
    MANIFEST_FILE,
    NIFTI_NAMES,
    NPZ_FILE,
    case_id_for,
    case_indices,
    entry_demographics,
    load_manifest,
    read_entry,
)

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
                demographics=entry_demographics(entry), meta=meta)


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
        if read_entry(root / name) is not None:
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
        own = read_entry(case_dir)
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
        self.demographics = {cid: entry_demographics(e) for cid, e in self.entries.items()}

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
