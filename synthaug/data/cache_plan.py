"""Planning a cache, before anything is written: which case gets which seed and demographics
(:func:`plan_cases`), and what one :func:`~synthaug.data.cache.generate_cache` call will write
(:func:`plan_generation`).

:func:`plan_generation` checks every argument, and what ``root`` already holds against the run
(the header, every finished case's seed and demographics), and decides which of this process's
cases are done, new or to repair, as a :class:`GenerationPlan`. Nothing here writes a file;
:func:`synthaug.data.cache.execute_generation` writes the plan.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.demographics import Demographics, read_demographics_csv, sample_population
from ..core.seeds import check_seed
from .cache_layout import (
    CASE_RE,
    DEFAULT_FORMAT,
    HEADER_KEYS,
    MANIFEST_FILE,
    SETTINGS_BEFORE_RECORDED,
    case_id_for,
    files_intact,
    load_manifest,
    make_header,
    read_entry,
)

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


# --- what one generate call will write -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GenerationPlan:
    """What :func:`~synthaug.data.cache.execute_generation` will write for this process's share of a
    plan of cases; :func:`plan_generation` makes it after every check and writes nothing."""

    root: Path
    header: dict                                # the cache header (generator, settings, preset, grid, format)
    n: int                                      # cases planned in all (the largest index + 1)
    rank: int                                   # this process owns the cases with index % world == rank
    world: int
    batch_size: int
    owned: int                                  # planned cases this process owns
    already_done: int                           # of those, finished in this format with their files intact
    todo: tuple[tuple[PlannedCase, bool], ...]  # to generate, in plan order; True: replaces a damaged folder
    manifest: dict | None                       # written to manifest.json first (None: the existing one stays)

    @property
    def fmt(self) -> str:
        return self.header["format"]

    @property
    def to_generate(self) -> list[str]:
        """Ids of the new cases."""
        return [p.case_id for p, repair in self.todo if not repair]

    @property
    def to_repair(self) -> list[str]:
        """Ids of the cases whose damaged or outdated folder is replaced."""
        return [p.case_id for p, repair in self.todo if repair]

    @property
    def paths(self) -> list[Path]:
        """Everything the run writes: ``manifest.json`` when it changes, then the folder of every case
        to generate, in order."""
        manifest = [self.root / MANIFEST_FILE] if self.manifest is not None else []
        return manifest + [self.root / p.case_id for p, _ in self.todo]


def plan_generation(
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
) -> GenerationPlan:
    """Check the arguments of :func:`~synthaug.data.cache.generate_cache` (same meanings) and what
    ``root`` holds, then decide which of ``plan``'s cases this process (re)generates.

    A cache made by another generator, preset or format, a non-empty folder that is not a cache,
    or a finished case whose seed or demographics differ from the plan raise; nothing is written.
    """
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
    n = max((p.index for p in plan), default=-1) + 1
    existing = None
    if (root / MANIFEST_FILE).is_file():
        existing = load_manifest(root)
        _check_header(root, existing, header)
    owned, done, todo = _share(root, plan, header, rank, world)
    if existing is None:
        manifest = {**header, "n": n, "complete": False, "cases": []}
    elif n > int(existing.get("n") or 0):
        manifest = {**existing, "n": n, "complete": False}
    else:
        manifest = None
    return GenerationPlan(root=root, header=header, n=n, rank=rank, world=world, batch_size=batch_size, owned=owned,
                          already_done=done, todo=tuple(todo), manifest=manifest)


def _share(root: Path, plan: Sequence[PlannedCase], header: dict, rank: int,
           world: int) -> tuple[int, int, list[tuple[PlannedCase, bool]]]:
    """``(owned, already done, to generate)`` of this process; every finished case, owned or not,
    is checked against the plan first."""
    sha, fmt = header["generator_sha256"], header["format"]
    owned, done, todo = 0, 0, []
    for planned in plan:
        case_dir = root / planned.case_id
        entry = read_entry(case_dir) if case_dir.is_dir() else None
        if entry is not None:
            why = _entry_matches(entry, planned, sha)
            if why is not None:
                raise ValueError(f"cache {root}: case {planned.case_id} was generated with {why}; nothing was changed "
                                 "(use another `root`, or the same `seed`/`demographics`/generator)")
        if planned.index % world != rank:
            continue
        owned += 1
        if entry is not None and entry.get("format") == fmt and files_intact(case_dir, entry):
            done += 1
        else:
            todo.append((planned, case_dir.exists()))
    return owned, done, todo


def _is_empty_or_cache(root: Path) -> bool:
    """Whether ``root`` holds nothing but a cache's entries. Listed before the manifest is looked for:
    another rank of the same generation may write the manifest in between, and everything a cache holds
    besides case folders appears only after its manifest."""
    visible = [p for p in root.iterdir() if not p.name.startswith(".")]
    return all(CASE_RE.match(p.name) or p.name == MANIFEST_FILE for p in visible) or (root / MANIFEST_FILE).is_file()


def _check_header(root: Path, existing: dict, wanted: dict) -> None:
    for key in HEADER_KEYS:
        have, want = existing.get(key), wanted.get(key)
        settings = key == "settings" and isinstance(have, dict) and isinstance(want, dict)
        if settings:
            # a setting the cache's synthaug did not record yet was what that synthaug did
            have = {**{k: v for k, v in SETTINGS_BEFORE_RECORDED.items() if k in want}, **have}
        if have != want:
            what = {"generator_sha256": "generator (sha256)", "settings": "sampler settings"}.get(key, key)
            if key == "generator_sha256":
                have, want = str(have)[:12] + "...", str(want)[:12] + "..."
            elif settings:
                differ = sorted(k for k in have.keys() | want.keys() if have.get(k) != want.get(k))
                have, want = ({k: d.get(k) for k in differ} for d in (have, want))
            raise ValueError(
                f"cache {root} was made with a different {what}: {have!r} there, {want!r} requested; "
                "nothing was changed (use another `root`, or the same generator/preset/format)"
            )


def _entry_matches(entry: dict, planned: PlannedCase, model_sha256: str) -> str | None:
    """Why ``entry`` is not the planned case (``None`` if it is)."""
    if entry.get("model_sha256") != model_sha256:
        return "another generator"
    if entry.get("seed") != planned.seed:
        return f"seed {entry.get('seed')} (this run: {planned.seed})"
    if entry.get("demographics") != planned.demographics.to_dict():
        return f"demographics {entry.get('demographics')} (this run: {planned.demographics.to_dict()})"
    return None
