"""The evaluation in steps: plan_evaluation checks every argument and names what will be evaluated and
written without writing; a bad argument is refused, naming its parameter, before any file exists."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import TINY_OUTPUT_GRID, tiny_case, write_tiny_cohort

from synthaug.core.demographics import Demographics
from synthaug.core.io import Cohort
from synthaug.evaluation.evaluate import EvaluationPlan, evaluate_cohorts, execute_evaluation, plan_evaluation

PLOTS = ("boxplot_suv_mean.png", "boxplot_volume_ml.png", "deviation_heatmap.png", "conditioning.png", "montage.png")


class CountingGenerator:
    """A CaseGenerator over the tiny helper cases that counts its calls (planning must not sample)."""

    output_grid = TINY_OUTPUT_GRID
    sha256 = "counting"
    settings = {"generator": "counting"}

    def __init__(self) -> None:
        self.calls = 0

    def sample(self, demographics, *, seed, progress=False):
        self.calls += 1
        demos = [demographics] if isinstance(demographics, Demographics) else list(demographics)
        seeds = [seed + i for i in range(len(demos))] if isinstance(seed, int) else list(seed)
        return [tiny_case(d, 1000 + s) for d, s in zip(demos, seeds)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plan") / "ref"
    write_tiny_cohort(root)
    return root


def test_plan_names_cohorts_and_outputs_without_writing(cohort, tmp_path):
    out = tmp_path / "rep"
    plan = plan_evaluation(cohort, cohort, out, training=cohort, baseline=None, min_cell=2)
    assert isinstance(plan, EvaluationPlan) and not out.exists()
    assert plan.reference.root == Cohort(cohort).root and plan.n_reference == 6
    assert plan.synthetic_kind == "cohort" and plan.n_synthetic == 6
    assert plan.synthetic_description == f"cohort {plan.synthetic.root}"
    assert plan.training is not None and plan.baseline is None and not plan.baseline_is_synthetic
    assert plan.out == out and plan.files == (*PLOTS, "report.md", "metrics.json")
    assert plan_evaluation(cohort, cohort, out, baseline=None, plots=False).files == ("report.md", "metrics.json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.min_cell = 1  # type: ignore[misc]
    assert not out.exists()


def test_plan_of_a_generator_asks_for_each_reference_case_without_sampling(cohort, tmp_path):
    gen = CountingGenerator()
    plan = plan_evaluation(cohort, gen, tmp_path / "rep", baseline=gen, n_per_case=2, synthetic_label="tiny")
    assert plan.synthetic_kind == "generator" and plan.synthetic is gen and plan.synthetic_description == "tiny"
    ids = Cohort(cohort).case_ids
    assert [cid for cid, _ in plan.requests] == [cid for cid in ids for _ in range(2)] and plan.n_synthetic == 12
    assert plan.requests[0][1] == Cohort(cohort).demographics[ids[0]]
    assert not plan.baseline_is_synthetic  # two cases per reference case: the baseline is made on its own
    assert plan_evaluation(cohort, gen, tmp_path / "rep", baseline=gen).baseline_is_synthetic
    phantom = plan_evaluation(cohort, gen, tmp_path / "rep").baseline  # the default: the phantom on the reference grid
    assert type(phantom).__name__ == "PhantomGenerator" and phantom.output_grid.shape == (32, 32, 64)
    assert gen.calls == 0 and not (tmp_path / "rep").exists()


def test_executing_the_plan_writes_what_it_names(cohort, tmp_path):
    gen = CountingGenerator()
    plan = plan_evaluation(cohort, gen, tmp_path / "rep", baseline=None, min_cell=2, seed=3)
    result = execute_evaluation(plan, progress=False)
    assert sorted(p.name for p in plan.out.iterdir()) == sorted(plan.files)
    assert result["plots"] == list(PLOTS) and result["synthetic"]["n_cases"] == plan.n_synthetic
    again = evaluate_cohorts(cohort, CountingGenerator(), tmp_path / "rep2", baseline=None, min_cell=2, seed=3,
                             progress=False)
    assert (tmp_path / "rep2" / "metrics.json").read_bytes() == (plan.out / "metrics.json").read_bytes()
    assert again["comparison"] == result["comparison"]


@pytest.mark.parametrize(("kwargs", "parameter"), [
    ({"min_cell": 0}, "min_cell"),
    ({"n_per_case": 0}, "n_per_case"),
    ({"batch_size": 0}, "batch_size"),
    ({"organs_map": "nnunet"}, "organs_map"),
    ({"memorisation_percentile": 101.0}, "memorisation_percentile"),
    ({"memorisation_margin": 0.0}, "memorisation_margin"),
    ({"baseline": "copy-paste"}, "baseline"),
    ({"synthetic": []}, "synthetic"),
    ({"organs_dir": "no/such/folder"}, "organs_dir"),
])
def test_a_bad_argument_is_refused_before_any_file_is_written(cohort, tmp_path, kwargs, parameter):
    gen = CountingGenerator()
    args = {"reference": cohort, "synthetic": gen, "out": tmp_path / "rep", "baseline": None, "progress": False,
            **kwargs}
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        evaluate_cohorts(**args)
    message = str(err.value)
    assert f"`{parameter}`" in message and "\n" not in message and "--" not in message
    assert gen.calls == 0 and not (tmp_path / "rep").exists()


def test_a_training_cohort_of_one_case_is_refused_before_any_file_is_written(cohort, tmp_path):
    one = tmp_path / "one"
    write_tiny_cohort(one, heights=(170.0,))
    with pytest.raises(ValueError, match=r"`training` cohort .*at least 2 cases"):
        evaluate_cohorts(cohort, cohort, tmp_path / "rep", training=one, baseline=None, progress=False)
    assert not (tmp_path / "rep").exists()


def test_cli_names_the_flag_of_a_refused_parameter(cohort, tmp_path, capsys):
    from synthaug.cli import main

    out = tmp_path / "rep"
    rc = main(["evaluate", "--reference", str(cohort), "--phantom", "--memorisation-margin", "0", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--memorisation-margin=0.0 must be > 0" in err and err.count("\n") == 1
    assert not out.exists()
