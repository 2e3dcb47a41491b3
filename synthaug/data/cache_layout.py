"""The layout of a cache folder (:mod:`synthaug.data.cache`): its names and formats, the header, and
reading ``manifest.json`` and the per-case entries back.

Nothing here writes a file: :mod:`synthaug.data.cache` writes cases and merges the manifest,
:mod:`synthaug.data.cache_plan` decides what a run writes, :mod:`synthaug.data.cache_read` reads,
verifies and opens a cache.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.demographics import Demographics
from ..core.io import CT_FILE, META_FILE, ORGANS_FILE, PET_FILE, SEG_FILE

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
#: Sampler settings that caches written before synthaug recorded them do not name, with the value they were
#: made with (organ labels were kept as drawn before the label clean-up existed).
SETTINGS_BEFORE_RECORDED = {"clean_labels": False}
#: The name of a case folder; group 1 is the case's index.
CASE_RE = re.compile(rf"^{CASE_PREFIX}(\d+)$")


def case_id_for(index: int) -> str:
    """The global id of case ``index``: ``synth_00000``, ``synth_00001``, ..."""
    return f"{CASE_PREFIX}{index:05d}"


def files_for(fmt: str, arrays: Sequence[str]) -> list[str]:
    """The files of a case stored in format ``fmt`` (one of :data:`FORMATS`) with ``arrays``."""
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


# --- the manifest ------------------------------------------------------------------------


def make_header(generator, fmt: str = DEFAULT_FORMAT, preset: str | None = None, seed: int | None = None,
                demographics_source: str | None = None) -> dict:
    """The cache header for ``generator`` (a :class:`synthaug.sampling.generator.CaseGenerator`)."""
    from .. import __version__

    files_for(fmt, ())
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


# --- the per-case entries ----------------------------------------------------------------


def read_entry(case_dir: Path) -> dict | None:
    """The per-case entry, or ``None`` when it is missing or unreadable (the case is redone)."""
    try:
        entry = json.loads((case_dir / ENTRY_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
        return None
    return entry


def files_intact(case_dir: Path, entry: dict) -> bool:
    """Cheap completeness check: every listed file exists with its recorded size."""
    for name, info in entry["files"].items():
        try:
            if (case_dir / name).stat().st_size != int(info["bytes"]):
                return False
        except (OSError, KeyError, TypeError, ValueError):
            return False
    return True


def entry_demographics(entry: dict) -> Demographics:
    """The demographics a per-case entry records."""
    d = entry.get("demographics") or {}
    return Demographics(d.get("age"), d.get("sex"), d.get("height_cm"), d.get("weight_kg"), d.get("diagnosis"))


def case_indices(root: str | Path) -> dict[int, Path]:
    """Index -> folder of every ``synth_<i>`` case folder under ``root``."""
    out = {}
    for p in Path(root).iterdir():
        m = CASE_RE.match(p.name)
        if m and p.is_dir():
            out[int(m.group(1))] = p
    return out
