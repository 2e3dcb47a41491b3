"""What every case generator offers: the diffusion cascade and the parametric phantom.

The dataset, the cache, the nnU-Net export and the evaluation take any
:class:`CaseGenerator`, so the conventional phantom baseline runs through exactly the
same code paths as the diffusion cascade.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..core.case import Case
from ..core.demographics import Demographics
from ..core.grid import Grid, get_preset


@runtime_checkable
class CaseGenerator(Protocol):
    """A source of synthetic cases for given demographics.

    Attributes:
        output_grid: the grid of the cases it makes.
        sha256: identifies the generator (weights checksum, or phantom version), so a
            cache can refuse to mix cases from different generators.
        settings: the sampler settings that, with ``sha256``, reproduce a case.
    """

    output_grid: Grid

    @property
    def sha256(self) -> str: ...

    @property
    def settings(self) -> dict: ...

    def sample(self, demographics: Demographics | Sequence[Demographics], *, seed: int | Sequence[int],
               progress: bool = False) -> list[Case]:
        """One case per demographics; case ``i`` depends only on ``seed[i]`` (or ``seed + i``)."""
        ...


def per_case_seeds(n: int, seed: int | Sequence[int]) -> list[int]:
    """Seeds for ``n`` cases: a list is taken as is, an int ``s`` gives ``s, s+1, ...``."""
    if isinstance(seed, int):
        return [seed + i for i in range(n)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} demographics")
    return seeds


def as_list(demographics: Demographics | Sequence[Demographics]) -> list[Demographics]:
    return [demographics] if isinstance(demographics, Demographics) else list(demographics)


class PhantomGenerator:
    """The parametric phantom behind the :class:`CaseGenerator` interface (the baseline); ``version``
    picks its anatomy (``None``: :func:`~synthaug.phantom.body.make_phantom`'s default)."""

    def __init__(self, preset: str = "demo", grid: Grid | None = None, version: int | None = None) -> None:
        from ..phantom.body import DEFAULT_PHANTOM_VERSION

        self.preset = preset
        self.output_grid = grid if grid is not None else get_preset(preset).output_grid
        self.version = DEFAULT_PHANTOM_VERSION if version is None else version

    @property
    def settings(self) -> dict:
        return {"generator": "phantom", "preset": self.preset, "grid": self.output_grid.to_dict(),
                "phantom_version": self.version}

    @property
    def sha256(self) -> str:
        from .. import __version__

        blob = json.dumps({"phantom": __version__, **self.settings}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def sample(self, demographics, *, seed, progress: bool = False) -> list[Case]:
        from ..core.progress import progress_bar
        from ..phantom.body import impute_demographics, make_phantom

        demos = as_list(demographics)
        seeds = per_case_seeds(len(demos), seed)
        cases = []
        for d, s in progress_bar(list(zip(demos, seeds)), desc="phantom", disable=not progress):
            # Real cohorts may lack height or weight: the phantom needs them, so they are drawn
            # from the population given what is known (recorded in the case's demographics).
            case = make_phantom(d if d.is_complete else impute_demographics(d, s), grid=self.output_grid, seed=s,
                                version=self.version)
            case.meta.update({"source": "phantom", "seed": s, "model_sha256": self.sha256})
            cases.append(case)
        return cases

    def sample_twins(self, base: Demographics, *, vary: Mapping[str, Sequence], seed: int,
                     progress: bool = False) -> list[Case]:
        """Phantom twins of ``base``: one case per setting of ``vary``, all with the same ``seed``
        (:func:`synthaug.sampling.twins.sample_twins` says what phantom twins share)."""
        from .twins import sample_twins

        return sample_twins(self, base, vary, seed=seed, progress=progress)


def cohort_phantom_version(root: str | Path) -> int | None:
    """The phantom version a ``synthaug phantom`` cohort folder was made with (its ``phantom_settings.json``),
    ``None`` for other folders: a phantom baseline for that cohort should use the same version."""
    path = Path(root) / "phantom_settings.json"
    if not path.is_file():
        return None
    recorded = str(json.loads(path.read_text()).get("phantom_version", "1.0"))
    return int(float(recorded))
