"""Downstream benchmark: does synthaug data make a segmentation model better, and than what?

:func:`run_downstream` trains one fixed small MONAI 3D U-Net (CT + PET in; 12 organ
logits + 1 lesion logit out) under several data *arms* and scores it on held-out real
cases: lesion Dice, false-positive and false-negative volume (AutoPET's definitions, see
:mod:`synthaug.evaluation.segmentation`) and Dice per organ of the synthaug organ map.
Every arm uses the same recipe (iterations, batch, patch sampling, augmentation, learning
rate); only the training cases differ. Validation and test cases are always real.

Arms (stable names; ``docs/downstream.md`` says more):

- ``real_only``: the real cases with MONAI spatial + intensity augmentation (every arm gets it);
- ``real_copypaste``: + lesion copy-paste between the real cases (:mod:`synthaug.data.copypaste`);
- ``real_phantom``: + as many fresh phantom cases, demographics matched;
- ``real_synth_1to1`` / ``real_synth_1to2``: + 1 or 2 synthetic cases per real case, demographics matched;
- ``synth_only``: synthetic cases only (as many as the largest real cohort);
- ``shift``: real cases without one subgroup (default BMI >= 30), tested on that subgroup, once
  without (``shift_real_only``) and once with (``shift_synth``) synthetic cases of that subgroup;
- ``real_lesion_insertion``: + ``RandLesionInsertd`` once it exists (reported "not available" until then).

The output folder holds ``results.json``, ``report.md``, ``downstream.png`` and one JSON per
finished arm x n_real x seed run under ``runs/``: a re-run skips finished runs.
"""

from __future__ import annotations

from ...core.io import case_identity
from .cohorts import check_cohort, check_disjoint, match_cases, open_cohort
from .config import ARMS, SYNTH_RATIO, SYNTHETIC_ARMS, TASKS, DownstreamConfig, Run, parse_subgroup, plan_runs
from .report import interval95, report_markdown, summarise, write_report
from .run import refresh_results, run_downstream
from .train import aggregate, build_model, prepare_case, train_model

__all__ = ["ARMS", "SYNTHETIC_ARMS", "SYNTH_RATIO", "TASKS", "DownstreamConfig", "Run", "aggregate", "build_model",
           "case_identity", "check_cohort", "check_disjoint", "interval95", "match_cases", "open_cohort",
           "parse_subgroup", "plan_runs", "prepare_case", "refresh_results", "report_markdown", "run_downstream", "summarise",
           "train_model", "write_report"]
