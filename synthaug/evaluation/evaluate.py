"""Evaluate synthetic PET/CT against a reference cohort.

Organ-wise volume and SUV agreement per demographic subgroup (the paper's
evaluation), conditioning fidelity (does the case have the requested height and
weight?), a memorisation check against the training set, and the parametric phantom
as the baseline. :func:`evaluate_cohorts` writes ``metrics.json``, ``report.md`` and
PNG plots; the definitions are in ``docs/evaluation.md``.

It runs in three steps: :func:`plan_evaluation` checks every argument and input (NIfTI headers
only) and returns an :class:`EvaluationPlan` without writing anything; :func:`execute_evaluation`
measures the cases (:mod:`.cases`), compares the cohorts (:mod:`.compare`), then writes the text
(:mod:`.report`) and the figures (:mod:`.plots`). The names of those modules stay importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.case import Case
from ..core.demographics import Demographics
from ..core.io import Cohort
from ..sampling.generator import CaseGenerator
from .cases import (
    CaseSummary,
    check_cohort,
    cohort_cases,
    generated_cases,
    open_cohort,
    reference_grid,
    summarise,
    training_features,
)
from .compare import (
    AGE_BANDS,
    BMI_BANDS,
    FACTOR_SETS,
    FIDELITY_QUANTITIES,
    PERCENT_METRICS,
    age_band,
    benjamini_hochberg,
    bmi_band,
    cell_name,
    compare_cohorts,
    compare_samples,
    conditioning_fidelity,
    linear_fit,
    memorisation_check,
    subgroup_cells,
    subgroup_factors,
)
from .plots import MAX_PNG_BYTES, METRIC_TITLES, REF_COLOUR, SYN_COLOUR, montage_pairs, plot_files, write_plots
from .report import render_report, write_report

__all__ = [
    "AGE_BANDS", "BMI_BANDS", "FACTOR_SETS", "FIDELITY_QUANTITIES", "MAX_PNG_BYTES", "METRIC_TITLES", "ORGANS_MAPS",
    "PERCENT_METRICS", "REF_COLOUR", "SYN_COLOUR", "CaseSummary", "EvaluationPlan", "age_band", "benjamini_hochberg",
    "bmi_band", "cell_name", "compare_cohorts", "compare_samples", "conditioning_fidelity", "evaluate_cohorts",
    "execute_evaluation", "linear_fit", "memorisation_check", "montage_pairs", "plan_evaluation", "reference_grid",
    "render_report", "subgroup_cells", "subgroup_factors", "summarise", "training_features", "write_plots",
]

ORGANS_MAPS = ("totalseg", "synthaug")
#: The text outputs, written after the plots.
REPORT_FILES = ("report.md", "metrics.json")


# --- the plan ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationPlan:
    """What :func:`execute_evaluation` will evaluate and write; :func:`plan_evaluation` makes it and writes nothing.

    ``synthetic_kind`` says what ``synthetic`` is: ``"generator"`` (a :class:`CaseGenerator`, asked for
    ``requests``: each reference case's demographics ``n_per_case`` times), ``"cohort"`` (a checked
    :class:`Cohort`) or ``"cases"`` (a tuple of :class:`Case`). ``baseline`` is the baseline generator or
    ``None``; ``files`` the names written into ``out``, in writing order. The other fields are the
    settings of :func:`evaluate_cohorts`.
    """

    reference: Cohort
    synthetic: CaseGenerator | Cohort | tuple[Case, ...]
    synthetic_kind: str
    synthetic_description: str
    out: Path
    files: tuple[str, ...]
    requests: tuple[tuple[str, Demographics], ...] = ()
    training: Cohort | None = None
    baseline: CaseGenerator | None = None
    organs_dir: Path | None = None
    organs_map: str = "totalseg"
    n_per_case: int = 1
    batch_size: int = 1
    min_cell: int = 5
    alpha: float = 0.05
    memorisation_percentile: float = 1.0
    memorisation_margin: float = 0.5
    seed: int = 0
    plots: bool = True

    @property
    def n_reference(self) -> int:
        return len(self.reference)

    @property
    def n_synthetic(self) -> int:
        """Synthetic cases that will be measured."""
        return len(self.requests) if self.synthetic_kind == "generator" else len(self.synthetic)

    @property
    def baseline_is_synthetic(self) -> bool:
        """Whether the baseline's cases would be the synthetic ones (same generator, one case per reference case)."""
        return (self.baseline is not None and self.synthetic_kind == "generator" and self.n_per_case == 1
                and getattr(self.synthetic, "sha256", None) == self.baseline.sha256)


def plan_evaluation(
    reference: Cohort | str | Path,
    synthetic: Cohort | str | Path | Sequence[Case] | CaseGenerator,
    out: str | Path,
    training: Cohort | str | Path | None = None,
    *,
    baseline: CaseGenerator | str | None = "phantom",
    n_per_case: int = 1,
    batch_size: int = 1,
    organs_dir: str | Path | None = None,
    organs_map: str = "totalseg",
    min_cell: int = 5,
    alpha: float = 0.05,
    memorisation_percentile: float = 1.0,
    memorisation_margin: float = 0.5,
    seed: int = 0,
    plots: bool = True,
    synthetic_label: str | None = None,
) -> EvaluationPlan:
    """Check every argument and input (files, organ maps and grids, from the headers) and say what
    :func:`execute_evaluation` will do; nothing is measured or written. Arguments as for :func:`evaluate_cohorts`."""
    _check_settings(min_cell=min_cell, n_per_case=n_per_case, batch_size=batch_size, organs_map=organs_map,
                    memorisation_percentile=memorisation_percentile, memorisation_margin=memorisation_margin)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"`out`: report folder {out} exists and is not a folder")
    ref_cohort = open_cohort(reference, "reference", True)
    organs_dir = Path(organs_dir) if organs_dir is not None else None
    if organs_dir is not None and not organs_dir.is_dir():
        raise FileNotFoundError(f"`organs_dir`: folder not found: {organs_dir}")
    check_cohort(ref_cohort, "reference", organs_dir)
    requests = tuple((cid, ref_cohort.demographics[cid]) for cid in ref_cohort for _ in range(n_per_case))
    kind, source, description = _synthetic_source(synthetic, n_per_case, synthetic_label)
    train_cohort = _training_cohort(training)
    base_gen = _baseline_generator(baseline, ref_cohort)
    files = (*plot_files(), *REPORT_FILES) if plots else REPORT_FILES  # both sides have cases: a montage
    return EvaluationPlan(
        reference=ref_cohort, synthetic=source, synthetic_kind=kind, synthetic_description=description, out=out,
        files=files, requests=requests, training=train_cohort, baseline=base_gen, organs_dir=organs_dir,
        organs_map=organs_map, n_per_case=n_per_case, batch_size=batch_size, min_cell=min_cell, alpha=alpha,
        memorisation_percentile=memorisation_percentile, memorisation_margin=memorisation_margin, seed=seed,
        plots=plots,
    )


def _check_settings(*, min_cell: int, n_per_case: int, batch_size: int, organs_map: str,
                    memorisation_percentile: float, memorisation_margin: float) -> None:
    """Refuse a bad setting, naming its parameter, before anything is read."""
    if min_cell < 1:
        raise ValueError(f"`min_cell`={min_cell} must be >= 1")
    if n_per_case < 1:
        raise ValueError(f"`n_per_case`={n_per_case} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"`batch_size`={batch_size} must be >= 1")
    if organs_map not in ORGANS_MAPS:
        raise ValueError(f"`organs_map`={organs_map!r}: choose one of {ORGANS_MAPS}")
    if not 0.0 <= memorisation_percentile <= 100.0:
        raise ValueError(f"`memorisation_percentile`={memorisation_percentile} must be in [0, 100]")
    if not memorisation_margin > 0:
        raise ValueError(f"`memorisation_margin`={memorisation_margin} must be > 0")


def _synthetic_source(synthetic, n_per_case: int, label: str | None) -> tuple[str, object, str]:
    """(kind, source, description) of ``synthetic``: a generator, a checked cohort or a tuple of cases."""
    if isinstance(synthetic, CaseGenerator) and not isinstance(synthetic, (str, Path)):
        return "generator", synthetic, label or f"generator {type(synthetic).__name__} ({n_per_case} per reference case)"
    if isinstance(synthetic, (Cohort, str, Path)):
        cohort = open_cohort(synthetic, "synthetic", False)
        check_cohort(cohort, "synthetic", None)
        return "cohort", cohort, label or f"cohort {cohort.root}"
    cases = tuple(synthetic)
    if not cases or not all(isinstance(c, Case) for c in cases):
        raise ValueError("`synthetic`: expected a cohort folder, a non-empty list of Case, or a CaseGenerator")
    return "cases", cases, label or f"{len(cases)} cases"


def _training_cohort(training: Cohort | str | Path | None) -> Cohort | None:
    if training is None:
        return None
    cohort = open_cohort(training, "training", False)
    if len(cohort) < 2:
        raise ValueError(f"`training` cohort {cohort.root}: the memorisation check needs at least 2 cases")
    check_cohort(cohort, "training", None, need_organs=False)
    return cohort


def _baseline_generator(baseline: CaseGenerator | str | None, reference: Cohort) -> CaseGenerator | None:
    if not isinstance(baseline, str):
        return baseline
    if baseline != "phantom":
        raise ValueError(f"`baseline`={baseline!r}: use 'phantom', a CaseGenerator or None")
    from ..sampling.generator import PhantomGenerator, cohort_phantom_version

    # A phantom reference cohort (e.g. the one the demo weights are evaluated on) gets its own version.
    return PhantomGenerator(grid=reference_grid(reference), version=cohort_phantom_version(reference.root))


# --- the evaluation ------------------------------------------------------------------------------------------


def evaluate_cohorts(
    reference: Cohort | str | Path,
    synthetic: Cohort | str | Path | Sequence[Case] | CaseGenerator,
    out: str | Path,
    training: Cohort | str | Path | None = None,
    *,
    baseline: CaseGenerator | str | None = "phantom",
    n_per_case: int = 1,
    batch_size: int = 1,
    organs_dir: str | Path | None = None,
    organs_map: str = "totalseg",
    min_cell: int = 5,
    alpha: float = 0.05,
    memorisation_percentile: float = 1.0,
    memorisation_margin: float = 0.5,
    seed: int = 0,
    progress: bool = True,
    plots: bool = True,
    synthetic_label: str | None = None,
) -> dict:
    """Compare synthetic cases with a reference cohort and write a report to ``out``.

    Args:
        reference: cohort folder (AutoPET layout, with ``demographics.csv``).
        synthetic: a cohort folder, a list of cases, or a :class:`CaseGenerator`, which
            then makes ``n_per_case`` cases per reference case with its demographics.
        out: report folder: ``metrics.json``, ``report.md`` and PNG plots.
        training: the generator's training cohort, for the memorisation check.
        baseline: ``"phantom"`` (the parametric phantom on the reference grid), another
            generator, or ``None`` (no baseline table).
        organs_dir: TotalSegmentator outputs for the reference cases (``<case>.nii.gz``
            or ``<case>/``), used instead of ``ORGANS.nii.gz``.
        organs_map: ``"totalseg"`` (v2 ``total`` ids, mapped by
            :data:`synthaug.data.totalseg.TOTALSEG_V2_TO_SYNTHAUG`) or ``"synthaug"``.
        min_cell: smallest number of cases, on each side, for a subgroup cell to be reported.
        alpha: false-discovery rate for the Benjamini-Hochberg correction.
        memorisation_percentile, memorisation_margin: flag synthetic cases at most
            ``margin`` x the ``percentile``-th percentile of training NN distances from a training case.
        seed: case ``i`` generated from ``seed + i``.
        batch_size: cases per ``generator.sample`` call (the result does not depend on it).
        plots: write the PNG plots (``False``: tables and JSON only).

    Returns:
        Everything written to ``metrics.json``.
    """
    plan = plan_evaluation(
        reference, synthetic, out, training, baseline=baseline, n_per_case=n_per_case, batch_size=batch_size,
        organs_dir=organs_dir, organs_map=organs_map, min_cell=min_cell, alpha=alpha,
        memorisation_percentile=memorisation_percentile, memorisation_margin=memorisation_margin, seed=seed,
        plots=plots, synthetic_label=synthetic_label,
    )
    return execute_evaluation(plan, progress=progress)


def execute_evaluation(plan: EvaluationPlan, *, progress: bool = True) -> dict:
    """Measure the cases, compare the cohorts, then write ``plan.files`` into ``plan.out``.

    Returns everything written to ``metrics.json``.
    """
    ref, syn, base = _measure(plan, progress)
    memo = None
    if plan.training is not None:
        train_ids, train_features = training_features(plan.training, progress=progress)
        memo = memorisation_check(train_features, train_ids,
                                  np.stack([s.features for s in syn]), [s.case_id for s in syn],
                                  plan.memorisation_percentile, plan.memorisation_margin)
    comparison = compare_cohorts(ref, syn, min_cell=plan.min_cell, alpha=plan.alpha)
    base_cmp = compare_cohorts(ref, base, min_cell=plan.min_cell, alpha=plan.alpha) if base is not None else None
    fidelity = conditioning_fidelity(ref, syn)
    result = _result(plan, ref, syn, base, comparison, base_cmp, fidelity, memo)
    plan.out.mkdir(parents=True, exist_ok=True)
    result["plots"] = write_plots(plan.out, ref, syn, comparison, fidelity) if plan.plots else []
    return write_report(plan.out, result)


def _measure(plan: EvaluationPlan, progress: bool) -> tuple[list[CaseSummary], list[CaseSummary],
                                                            list[CaseSummary] | None]:
    """Summaries of the reference, synthetic and baseline cases (the baseline's are the synthetic list
    itself when :attr:`EvaluationPlan.baseline_is_synthetic`)."""
    features = plan.training is not None
    ref = summarise(cohort_cases(plan.reference, "reference", plan.organs_dir, plan.organs_map),
                    total=len(plan.reference), desc="reference", progress=progress, features=features)
    if plan.synthetic_kind == "generator":
        requests = plan.requests
        syn = summarise(generated_cases(plan.synthetic, requests, plan.seed, plan.batch_size), total=len(requests),
                        desc="synthetic", progress=progress, features=features,
                        ids=[f"{rid}_s{k % plan.n_per_case}" for k, (rid, _) in enumerate(requests)])
    elif plan.synthetic_kind == "cohort":
        syn = summarise(cohort_cases(plan.synthetic, "synthetic", None, "synthaug"), total=len(plan.synthetic),
                        desc="synthetic", progress=progress, features=features)
    else:
        syn = summarise(plan.synthetic, total=len(plan.synthetic), desc="synthetic", progress=progress,
                        features=features)
    base = None
    if plan.baseline is not None:
        if plan.baseline_is_synthetic:
            base = syn
        else:
            base_req = [(cid, plan.reference.demographics[cid]) for cid in plan.reference]
            base = summarise(generated_cases(plan.baseline, base_req, plan.seed, plan.batch_size), total=len(base_req),
                             desc="baseline", progress=progress, ids=[f"{cid}_baseline" for cid, _ in base_req])
    return ref, syn, base


def _result(plan: EvaluationPlan, ref: list[CaseSummary], syn: list[CaseSummary], base: list[CaseSummary] | None,
            comparison: dict, base_cmp: dict | None, fidelity: dict, memo: dict | None) -> dict:
    """The content of ``metrics.json`` (before the plots are added and it is made JSON-safe)."""
    from .. import __version__
    from ..core.geometry import BODY_HU
    from .metrics import SUV_PEAK_VOLUME_ML, TISSUE_DENSITY

    ref_source = "phantom" if ref and all(s.meta.get("source") == "phantom" for s in ref) else "real"
    gen = plan.synthetic if plan.synthetic_kind == "generator" else None
    return {
        "synthaug_version": __version__,
        "settings": {"seed": plan.seed, "min_cell": plan.min_cell, "alpha": plan.alpha, "n_per_case": plan.n_per_case,
                     "memorisation_percentile": plan.memorisation_percentile,
                     "memorisation_margin": plan.memorisation_margin, "organs_map": plan.organs_map,
                     "organs_dir": str(plan.organs_dir) if plan.organs_dir else None,
                     "suv_peak_volume_ml": SUV_PEAK_VOLUME_ML, "body_hu_threshold": BODY_HU,
                     "tissue_density_g_per_ml": TISSUE_DENSITY, "age_bands": AGE_BANDS, "bmi_bands": BMI_BANDS},
        "reference": {"path": str(plan.reference.root), "n_cases": len(ref), "source": ref_source},
        "synthetic": {"description": plan.synthetic_description, "n_cases": len(syn),
                      "generator_sha256": getattr(gen, "sha256", None),
                      "generator_settings": getattr(gen, "settings", None)},
        "comparison": comparison,
        "baseline": None if base_cmp is None else {
            "description": "parametric phantom generated for the reference demographics",
            "generator_sha256": plan.baseline.sha256, "same_as_synthetic": base is syn, "comparison": base_cmp},
        "fidelity": fidelity,
        "memorisation": memo,
        "cases": {name: [{"case_id": s.case_id, "demographics": s.demographics.to_dict() if s.demographics else None,
                          **s.meta, "values": s.values} for s in group]
                  for name, group in (("reference", ref), ("synthetic", syn), ("baseline", base)) if group is not None},
    }
