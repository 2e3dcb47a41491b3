"""Sampler steps vs fidelity on the global stage (the stage that sets organ statistics).

For each objective with trained weights and each deterministic sampler (``euler``,
``heun``, ``dpmpp_2m``) at 4, 8, 16, 32 and 64 network evaluations, the same seeds and
demographics are sampled as with the many-step reference (``ancestral``, 1000 steps).
Each sample is decoded; inside its own generated organ labels the mean SUV and mean HU
of every organ of the synthaug organ map are taken. Deviations are percentages:

* SUV: ``100 |m - m_ref| / m_ref`` of the organ mean SUV;
* HU: ``100 |m - m_ref| / (m_ref + 1000)``, i.e. relative to the attenuation
  coefficient (HU + 1000 is proportional to it), so 1 % is 10 HU in water. A plain
  relative HU deviation is meaningless for organs near 0 HU.

Two comparisons per setting:

* **vs the ancestral reference** (the one asked for): organ means pooled over the seeds
  (a cohort-level comparison, as in the paper's organ-wise evaluation), because the
  stochastic reference does not follow the same path as a deterministic sampler from
  the same initial noise;
* **vs the ODE reference** (Heun, 100 steps = 199 evaluations, the paper's sampler):
  paired per seed, which shows how fast each sampler converges to the solution of the
  same ODE.

The chosen setting is the smallest number of evaluations (ties: the smaller mean
deviation) at which a sampler is within 1 percentage point of the ancestral reference
for SUV and HU at that and every larger measured number of evaluations. When no setting
qualifies because the converged ODE itself differs from the ancestral reference by more
than 1 point, the criterion becomes "within 1 point of the converged ODE's deviation";
the JSON records which criterion chose.

Cohort means can settle long before each sample does (with x0 weights they did at 4
evaluations while single cases still differed from their converged ODE solution by several
points). The sampler's default therefore follows a second, per-case choice,
:func:`choose_converged`: the smallest number of evaluations (ties: the smaller deviation) at
which the cases lie within 1 percentage point of their own converged ODE solutions (paired per
seed, mean over seeds and organs, SUV and HU) at that and every larger measured number of
evaluations of its sampler.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from .common import Context, stage_objective, weights_info

NAME = "sampler_fidelity"
TITLE = "Sampler steps vs organ fidelity (global stage)"
SAMPLER_NAMES = ("euler", "heun", "dpmpp_2m")
THRESHOLD_PP = 1.0

FULL = {"nfes": (4, 8, 16, 32, 64), "seeds": 4, "ref": ("ancestral", 1000), "ode_ref": ("heun", 100)}
QUICK = {"nfes": (4, 8), "seeds": 2, "ref": ("ancestral", 64), "ode_ref": ("heun", 8)}


def steps_for(sampler: str, nfe: int) -> int:
    """Sampler steps whose network evaluations are at most ``nfe`` (Heun: 2 per step but the last)."""
    return max(1, (nfe + 1) // 2) if sampler == "heun" else nfe


# --- organ statistics and deviations ------------------------------------------------------------


def organ_stats(decoded: dict[str, np.ndarray], min_voxels: int = 1) -> np.ndarray:
    """(organs 1..11, 2) mean SUV and mean HU inside each generated organ label (nan if absent)."""
    from synthaug.core.labels import ORGAN_LABELS

    organs = decoded["organs"]
    out = np.full((len(ORGAN_LABELS) - 1, 2), np.nan)
    for i, label in enumerate(k for k in ORGAN_LABELS if k != 0):
        mask = organs == label
        if int(mask.sum()) >= min_voxels:
            out[i] = float(decoded["pet"][mask].mean()), float(decoded["ct"][mask].mean())
    return out


def percent_deviation(test: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Percentage deviations (..., 2): SUV relative, HU relative to HU + 1000."""
    suv = 100 * np.abs(test[..., 0] - ref[..., 0]) / np.maximum(np.abs(ref[..., 0]), 1e-6)
    hu = 100 * np.abs(test[..., 1] - ref[..., 1]) / np.maximum(ref[..., 1] + 1000.0, 1e-6)
    return np.stack([suv, hu], axis=-1)


def deviation_summary(dev: np.ndarray) -> dict:
    """Mean and max over the organs present (nan-aware) of (organs, 2) deviations."""
    out = {}
    for k, name in enumerate(("suv", "hu")):
        col = dev[..., k]
        ok = np.isfinite(col)
        out[f"{name}_mean_pp"] = float(col[ok].mean()) if ok.any() else None
        out[f"{name}_max_pp"] = float(col[ok].max()) if ok.any() else None
    return out


def nanmean_quiet(a: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmean`` without the warning for organs absent in every seed (they stay nan)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def cohort_deviation(test: np.ndarray, ref: np.ndarray) -> dict:
    """Deviation of the organ means pooled over seeds; ``test``/``ref`` are (seeds, organs, 2)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return deviation_summary(percent_deviation(nanmean_quiet(test, 0), nanmean_quiet(ref, 0)))


def paired_deviation(test: np.ndarray, ref: np.ndarray) -> dict:
    """Per-seed organ deviations averaged over seeds; ``test``/``ref`` are (seeds, organs, 2)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return deviation_summary(nanmean_quiet(percent_deviation(test, ref), 0))


def choose(rows: list[dict], floor: dict | None = None, threshold: float = THRESHOLD_PP) -> dict | None:
    """The smallest-evaluation setting within ``threshold`` points of the reference (SUV and HU)
    at that and every larger measured evaluation count of its sampler; see the module docstring.

    ``rows`` hold ``sampler``, ``steps``, ``evaluations`` and ``vs_reference`` (``suv_mean_pp``,
    ``hu_mean_pp``). ``floor`` (the ODE reference's deviation from the reference) is the
    fallback baseline when nothing is within ``threshold`` of the reference itself.
    """
    found = _fewest_within(rows, "vs_reference", 0.0, 0.0, threshold, "within 1 pp of the ancestral reference")
    if found is None and floor is not None and floor.get("suv_mean_pp") is not None:
        found = _fewest_within(rows, "vs_reference", floor["suv_mean_pp"], floor["hu_mean_pp"], threshold,
                               "within 1 pp of the converged ODE's deviation from the ancestral reference")
        if found is not None:
            found["floor"] = floor
    return found


def choose_converged(rows: list[dict], threshold: float = THRESHOLD_PP) -> dict | None:
    """The sampler's default: the smallest-evaluation setting whose cases lie within ``threshold`` points
    of their own converged ODE solutions (``vs_ode_reference_paired``: per seed, mean over seeds and
    organs; SUV and HU) at that and every larger measured evaluation count of its sampler (ties: the
    smaller paired deviation)."""
    return _fewest_within(rows, "vs_ode_reference_paired", 0.0, 0.0, threshold,
                          "cases within 1 pp of their converged ODE solutions (paired, mean over cases and organs)")


def _fewest_within(rows: list[dict], key: str, base_suv: float, base_hu: float, threshold: float,
                   criterion: str) -> dict | None:
    """The row with the fewest evaluations whose ``key`` deviation, and that of every row of its sampler
    with more evaluations, is within ``threshold`` of ``base`` (ties: the smaller SUV + HU deviation)."""
    ok_rows = [r for r in rows
               if all(_within(s[key], base_suv, base_hu, threshold)
                      for s in rows if s["sampler"] == r["sampler"] and s["evaluations"] >= r["evaluations"])]
    if not ok_rows:
        return None
    best = min(ok_rows, key=lambda r: (r["evaluations"], r[key]["suv_mean_pp"] + r[key]["hu_mean_pp"]))
    return {"sampler": best["sampler"], "steps": best["steps"], "evaluations": best["evaluations"],
            "criterion": criterion, "threshold_pp": threshold, key: best[key]}


def _within(dev: dict, base_suv: float, base_hu: float, threshold: float) -> bool:
    suv, hu = dev.get("suv_mean_pp"), dev.get("hu_mean_pp")
    return suv is not None and hu is not None and suv <= base_suv + threshold and hu <= base_hu + threshold


# --- sampling --------------------------------------------------------------------------------------


def _stats_batch(x) -> np.ndarray:
    from synthaug.model.channels import decode

    with np.errstate(all="ignore"):  # a diverged sample decodes to inf; its deviation then shows as "–"
        return np.stack([organ_stats(decode(x[j])) for j in range(x.shape[0])])


def run_objective(folder, settings: dict, progress: bool = True) -> dict:
    """The whole sweep for the global-stage weights in ``folder``."""
    import torch

    from synthaug.core.demographics import sample_population
    from synthaug.core.progress import progress_bar
    from synthaug.model.diffusion import cfg_denoiser, evaluations, sample
    from synthaug.model.stages import load_stage

    model, cfg, _ = load_stage(folder / "global")
    n = settings["seeds"]
    demos = sample_population(n, seed=2024)
    seeds = [1000 + i for i in range(n)]
    cond = torch.from_numpy(np.stack([d.to_vector() for d in demos]))
    guidance = cfg.diffusion.guidance
    denoiser = cfg_denoiser(lambda x, sigma, cond, **kw: model(x, sigma, cond, **kw), guidance)
    shape = (cfg.net.in_channels, *cfg.global_grid.shape)
    per_eval = 2 if guidance != 1.0 else 1

    def draw(sampler: str, steps: int) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        x = sample(denoiser, shape, cfg.diffusion, seeds, extra_args={"cond": cond}, sampler=sampler, steps=steps,
                   dtype=torch.float64, disable=not progress or steps < 50)
        return _stats_batch(x), time.perf_counter() - t0

    ref_sampler, ref_steps = settings["ref"]
    ode_sampler, ode_steps = settings["ode_ref"]
    plan = [(s, steps_for(s, nfe)) for nfe in settings["nfes"] for s in SAMPLER_NAMES]
    bar = progress_bar(total=len(plan) + 2, desc=f"fidelity {cfg.diffusion.objective}", disable=not progress)
    ref, ref_s = draw(ref_sampler, ref_steps)
    bar.update(1)
    ode, ode_s = draw(ode_sampler, ode_steps)
    bar.update(1)
    rows = []
    for sampler, steps in plan:
        stats, secs = draw(sampler, steps)
        rows.append({"sampler": sampler, "steps": steps, "evaluations": evaluations(sampler, steps) * per_eval,
                     "seconds": round(secs, 2), "vs_reference": cohort_deviation(stats, ref),
                     "vs_ode_reference_paired": paired_deviation(stats, ode),
                     "vs_reference_paired": paired_deviation(stats, ref)})
        bar.update(1)
    bar.close()
    floor = cohort_deviation(ode, ref)
    from synthaug.core.labels import ORGAN_LABELS

    return {
        "objective": cfg.diffusion.objective, "weights": weights_info(folder), "grid": cfg.global_grid.to_dict(),
        "seeds": seeds, "demographics": [d.to_dict() for d in demos], "guidance": guidance,
        "config_default": {"sampler": cfg.diffusion.sampler, "steps": cfg.diffusion.steps},
        "reference": {"sampler": ref_sampler, "steps": ref_steps, "evaluations": evaluations(ref_sampler, ref_steps) * per_eval,
                      "seconds": round(ref_s, 1),
                      "organ_means": _organ_table(ref, ORGAN_LABELS)},
        "ode_reference": {"sampler": ode_sampler, "steps": ode_steps,
                          "evaluations": evaluations(ode_sampler, ode_steps) * per_eval, "seconds": round(ode_s, 1),
                          "vs_reference": floor, "vs_reference_paired": paired_deviation(ode, ref)},
        "rows": rows,
        "chosen": choose(rows, floor),
    }


def _organ_table(stats: np.ndarray, labels: dict) -> dict:
    m = nanmean_quiet(stats, 0)
    names = [labels[k] for k in labels if k != 0]
    return {name: {"suv": None if np.isnan(m[i, 0]) else round(float(m[i, 0]), 3),
                   "hu": None if np.isnan(m[i, 1]) else round(float(m[i, 1]), 1)} for i, name in enumerate(names)}


def run(ctx: Context) -> dict:
    """Run the sweep for every objective that has global-stage weights among ``ctx.weights``."""
    settings = QUICK if ctx.quick else FULL
    folders: dict[str, object] = {}
    for folder in ctx.weights:
        obj = stage_objective(folder, "global")
        if obj is not None and obj not in folders:
            folders[obj] = folder
    if not folders:
        raise FileNotFoundError("sampler_fidelity needs global-stage weights (--weights DIR with global.json)")
    out: dict = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
                 "threshold_pp": THRESHOLD_PP, "objectives": {}}
    from synthaug.model.diffusion import OBJECTIVES

    for obj in OBJECTIVES:  # every objective, so that a missing one shows as "no weights"
        if obj not in folders:
            out["objectives"][obj] = {"objective": obj, "status": "no weights",
                                      "note": f"no {obj} global-stage weights were given or trained"}
            continue
        out["objectives"][obj] = run_objective(folders[obj], settings)
    main_obj = stage_objective(ctx.main_weights, "global") if ctx.main_weights else next(iter(folders))
    main = out["objectives"].get(main_obj, {})
    out["chosen"] = None if not main.get("chosen") else {"objective": main_obj, **main["chosen"]}
    return out
