"""Settings of the downstream benchmark: the arms, the recipe, the subgroup of the shift arm and the plan of runs."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from ...core.demographics import Demographics

#: Arms a user can ask for (``shift`` runs two: ``shift_real_only`` and ``shift_synth``).
ARMS: tuple[str, ...] = ("real_only", "real_copypaste", "real_phantom", "real_synth_1to1", "real_synth_1to2",
                         "synth_only", "shift", "real_lesion_insertion")
#: Synthetic cases per real case of the mixed arms.
SYNTH_RATIO: dict[str, int] = {"real_synth_1to1": 1, "real_synth_1to2": 2}

TASKS: tuple[str, ...] = ("lesions", "organs")
#: Arms whose runs need generated synthetic cases.
SYNTHETIC_ARMS = ("real_synth_1to1", "real_synth_1to2", "synth_only", "shift_synth")

_SUBGROUP_RE = re.compile(r"^\s*(bmi|age|height_cm|weight_kg|sex)\s*(>=|<=|>|<|==|=)\s*([A-Za-z0-9.]+)\s*$")


@dataclass(frozen=True)
class DownstreamConfig:
    """Everything a downstream run depends on (saved in ``results.json``).

    Args:
        real: the real training cohort (AutoPET layout, or a ``synthaug prepare`` / ``phantom`` output).
        out: output folder (created; a re-run resumes).
        test: the held-out real test cohort; ``None`` splits ``test_fraction`` of ``real`` off.
        test_fraction: share of ``real`` used as test cases when ``test`` is ``None``.
        synthetic: a ``synthaug generate`` cache (or an AutoPET-layout cohort) of synthetic cases.
        weights: cascade weights to sample the synthetic cases from when ``synthetic`` is ``None``
            (``None``: the shipped demo weights); they go to ``<out>/synthetic/``.
        arms: arms to run (see :data:`ARMS`).
        n_real: numbers of real training cases (the low-data curve).
        seeds: one run per seed: the real subset, the network's initialisation and every draw.
        tasks: ``lesions`` and/or ``organs``.
        n_val: real validation cases split off ``real`` (scored, never trained on, nothing selected on them).
        spacing_mm: isotropic working grid every case is resampled to.
        patch: training patch (voxels of the working grid).
        batch_size, iterations, lr: the recipe (Adam, polynomial decay).
        channels: the U-Net's channels per level.
        lesion_patch_fraction: share of patches centred on a lesion voxel (where the case has one).
        copypaste_prob: probability that a ``real_copypaste`` patch gets pasted lesions.
        shift_group: the subgroup left out in ``shift``: ``bmi>=30``, ``age>70``, ``sex=F``, ...
        synth_seed: seed of generated synthetic and phantom cases and of the splits.
        sampler_steps: stage-1 sampler steps when generating (``None``: the weights' default).
        threads: torch threads (``None``: torch's default).
        progress: show progress bars.
    """

    real: str
    out: str
    test: str | None = None
    test_fraction: float = 0.3
    synthetic: str | None = None
    weights: str | None = None
    arms: tuple[str, ...] = ARMS
    n_real: tuple[int, ...] = (4, 8, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    tasks: tuple[str, ...] = TASKS
    n_val: int = 2
    spacing_mm: float = 8.0
    patch: tuple[int, int, int] = (32, 32, 32)
    batch_size: int = 2
    iterations: int = 300
    lr: float = 2e-3
    channels: tuple[int, ...] = (8, 16, 32, 64)
    lesion_patch_fraction: float = 1 / 3
    copypaste_prob: float = 0.5
    shift_group: str = "bmi>=30"
    synth_seed: int = 0
    sampler_steps: int | None = None
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("arms", "n_real", "seeds", "tasks", "patch", "channels"):
            value = getattr(self, name)
            if isinstance(value, (str, int)):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"`arms`: unknown arm(s) {unknown}; choose from {list(ARMS)}")
        if not self.arms:
            raise ValueError("`arms`: give at least one arm")
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"`arms`: {list(self.arms)} names an arm twice")
        bad_tasks = [t for t in self.tasks if t not in TASKS] or ([] if self.tasks else ["(none)"])
        if bad_tasks:
            raise ValueError(f"`tasks`: {bad_tasks} not allowed; choose from {list(TASKS)}")
        if not self.n_real or any(isinstance(n, bool) or int(n) != n or n < 1 for n in self.n_real):
            raise ValueError(f"`n_real`={list(self.n_real)}: give one or more integers >= 1")
        if not self.seeds or any(isinstance(s, bool) or int(s) != s or s < 0 for s in self.seeds):
            raise ValueError(f"`seeds`={list(self.seeds)}: give one or more integers >= 0")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.n_real)) != len(self.n_real):
            raise ValueError("`seeds` and `n_real` must not repeat a value")
        object.__setattr__(self, "n_real", tuple(sorted(int(n) for n in self.n_real)))
        if len(self.patch) != 3 or any(int(p) != p or p < 8 or p % 8 for p in self.patch):
            raise ValueError(f"`patch`={list(self.patch)}: three multiples of 8, each >= 8")
        if len(self.channels) < 2 or any(int(c) != c or c < 4 for c in self.channels):
            raise ValueError(f"`channels`={list(self.channels)}: two or more integers >= 4")
        if 2 ** (len(self.channels) - 1) > min(self.patch):
            raise ValueError(f"`patch`={list(self.patch)} is too small for {len(self.channels)} U-Net levels")
        checks = {
            "test_fraction": 0.0 < self.test_fraction < 1.0,
            "n_val": isinstance(self.n_val, int) and self.n_val >= 0,
            "spacing_mm": self.spacing_mm > 0,
            "batch_size": isinstance(self.batch_size, int) and self.batch_size >= 1,
            "iterations": isinstance(self.iterations, int) and self.iterations >= 1,
            "lr": 0.0 < self.lr < 1.0,
            "lesion_patch_fraction": 0.0 <= self.lesion_patch_fraction <= 1.0,
            "copypaste_prob": 0.0 <= self.copypaste_prob <= 1.0,
            "synth_seed": isinstance(self.synth_seed, int) and self.synth_seed >= 0,
            "sampler_steps": self.sampler_steps is None or self.sampler_steps >= 1,
            "threads": self.threads is None or self.threads >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"`{name}`={getattr(self, name)!r} is outside its allowed range")
        parse_subgroup(self.shift_group)
        if self.synthetic is not None and self.weights is not None:
            raise ValueError("`synthetic` and `weights`: give one synthetic source, not both")

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping) -> DownstreamConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def parse_subgroup(text: str) -> Callable[[Demographics | None], bool]:
    """A predicate for ``field op value`` (fields bmi, age, height_cm, weight_kg, sex); unknown values are outside."""
    m = _SUBGROUP_RE.match(str(text))
    if not m:
        raise ValueError(f"`shift_group`={text!r}: expected e.g. 'bmi>=30', 'age>70' or 'sex=F'")
    name, op, raw = m.groups()
    if name == "sex":
        if op not in ("=", "==") or raw not in ("M", "F"):
            raise ValueError(f"`shift_group`={text!r}: sex takes '=' and M or F")
        return lambda d: d is not None and d.sex == raw
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"`shift_group`={text!r}: {raw!r} is not a number") from None
    compare = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less,
               "=": np.equal, "==": np.equal}[op]

    def member(d: Demographics | None) -> bool:
        v = None if d is None else (d.bmi if name == "bmi" else getattr(d, name))
        return v is not None and bool(compare(v, value))

    return member


@dataclass(frozen=True)
class Run:
    """One arm x n_real x seed training run."""

    arm: str
    n_real: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.arm}__n{self.n_real}__s{self.seed}"


def plan_runs(cfg: DownstreamConfig, n_shift: int | None = None) -> list[Run]:
    """Every run: those without synthetic cases first (they need no sampling), then the others; seed by seed
    within each group, so that a partial run already compares the arms on the first seeds."""
    runs = []
    for seed in cfg.seeds:
        for n in cfg.n_real:
            runs += [Run(arm, n, seed) for arm in cfg.arms if arm not in ("synth_only", "shift")]
        if "synth_only" in cfg.arms:
            runs.append(Run("synth_only", 0, seed))
        if "shift" in cfg.arms:
            n = n_shift if n_shift is not None else max(cfg.n_real)
            runs += [Run("shift_real_only", n, seed), Run("shift_synth", n, seed)]
    return [r for r in runs if r.arm not in SYNTHETIC_ARMS] + [r for r in runs if r.arm in SYNTHETIC_ARMS]


def real_subset(pool: Sequence[str], n: int, seed: int) -> list[str]:
    """The first ``n`` of a seed's permutation of ``pool``: nested (4 of 8 are the first 4), shared by every arm."""
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5B5])).permutation(len(pool))
    return [pool[i] for i in order[:n]]
