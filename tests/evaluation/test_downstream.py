"""synthaug downstream: a tiny run end to end, resuming, refusals, the summary and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import write_tiny_cohort

from synthaug.cli import main
from synthaug.core.demographics import Demographics
from synthaug.core.grid import Grid
from synthaug.core.io import Cohort, write_case, write_demographics_csv
from synthaug.evaluation import downstream
from synthaug.evaluation.downstream import (
    ARMS,
    DownstreamConfig,
    interval95,
    match_cases,
    parse_subgroup,
    plan_runs,
    run_downstream,
    summarise,
)
from synthaug.evaluation.downstream import run as downstream_run
from synthaug.evaluation.downstream import train as downstream_train
from synthaug.model.train import TrainingCohort

REAL_HEIGHTS = (150.0, 160.0, 170.0, 180.0, 195.0, 200.0, 155.0, 165.0)
#: Tiny recipe: the tiny cohorts (32 x 32 x 64 at 16 mm) on a 32 mm working grid, 2 iterations.
TINY = {"spacing_mm": 32.0, "patch": (16, 16, 16), "channels": (4, 8), "iterations": 2, "batch_size": 1,
        "n_real": (2, 3), "seeds": (0,), "n_val": 1, "shift_group": "height_cm>=190", "progress": False}


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cohorts")
    write_tiny_cohort(root / "real", heights=REAL_HEIGHTS, seed=1)
    write_tiny_cohort(root / "test", heights=(152.0, 175.0, 198.0, 192.0), seed=2)
    write_tiny_cohort(root / "synth", heights=(150.0, 160.0, 170.0, 180.0, 195.0, 200.0, 190.0, 158.0), seed=3)
    for cohort in ("test",):  # test ids must differ from the real ones (both cohorts number case000, ...)
        for case in sorted((root / cohort).iterdir()):
            if case.is_dir():
                case.rename(case.with_name(f"{cohort}_{case.name}"))
        csv = root / cohort / "demographics.csv"
        lines = csv.read_text().splitlines()
        csv.write_text("\n".join([lines[0]] + [f"{cohort}_{line}" for line in lines[1:]]) + "\n")
    return {"real": root / "real", "test": root / "test", "synth": root / "synth"}


def tiny_config(cohorts, out: Path, **kw) -> DownstreamConfig:
    args = {"real": str(cohorts["real"]), "test": str(cohorts["test"]), "synthetic": str(cohorts["synth"]),
            "out": str(out), **TINY}
    args.update(kw)
    return DownstreamConfig(**args)


@pytest.fixture(scope="module")
def finished(cohorts, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run") / "downstream"
    return out, run_downstream(tiny_config(cohorts, out), log=lambda _msg: None)


def test_a_tiny_run_covers_every_arm_with_its_seeds_and_writes_results_report_and_plot(finished):
    out, results = finished
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["complete"] and results["complete"]
    done = [r for r in on_disk["runs"] if r["status"] == "done"]
    arms = {r["arm"] for r in done}
    assert arms == {"real_only", "real_copypaste", "real_phantom", "real_synth_1to1", "real_synth_1to2",
                    "synth_only", "shift_real_only", "shift_synth", "real_lesion_insertion"}
    assert len(done) == 6 * 2 + 1 + 2  # 6 arms x 2 n_real + synth_only + 2 shift runs
    assert on_disk["iterations"] == [2]
    test_ids = set(on_disk["cohorts"]["test_ids"])
    for r in done:
        assert not test_ids & set(r["train_real"])
        assert set(r["test_ids"]) <= test_ids
        agg = r["test"]["aggregate"]
        assert 0.0 <= agg["organ_dice_mean"] <= 1.0 and agg["fp_ml"] >= 0.0
    one_to_two = next(r for r in done if r["arm"] == "real_synth_1to2" and r["n_real"] == 3)
    assert len(one_to_two["train_extra"]["synthetic"]) == 6 and one_to_two["n_train"] == 9
    assert next(r for r in done if r["arm"] == "real_phantom")["train_extra"]["phantom"]
    shift = [r for r in done if r["arm"].startswith("shift")]
    member = parse_subgroup("height_cm>=190")
    real = Cohort(on_disk["cohorts"]["real"])
    for r in shift:
        assert not any(member(real.demographics[c]) for c in r["train_real"])
        assert set(r["test_ids"]) == set(on_disk["cohorts"]["shift_test_ids"])
    report = (out / "report.md").read_text()
    assert "| real_synth_1to2 | 3 | 1 |" in report and "| real_lesion_insertion | 3 | 1 |" in report
    assert (out / "downstream.png").read_bytes()[:4] == b"\x89PNG"


def test_a_finished_run_is_not_redone_and_a_missing_one_is(finished, cohorts, monkeypatch):
    out, _ = finished
    calls = []
    real_train = downstream_run.train_model

    def counting(items, cfg, seed, **kw):
        calls.append(seed)
        return real_train(items, cfg, seed, **kw)

    monkeypatch.setattr(downstream_run, "train_model", counting)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    run_downstream(tiny_config(cohorts, out), log=lambda _msg: None)
    assert calls == []
    (out / "runs" / "real_only__n3__s0.json").unlink()
    results = run_downstream(tiny_config(cohorts, out), log=lambda _msg: None)
    assert calls == [0] and results["complete"]
    after = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    assert {k: v for k, v in after.items() if k != "real_only__n3__s0.json"} == \
        {k: v for k, v in before.items() if k != "real_only__n3__s0.json"}


def test_a_resumed_run_with_another_recipe_is_refused(finished, cohorts):
    out, _ = finished
    with pytest.raises(ValueError, match=r"other settings \(iterations\)"):
        run_downstream(tiny_config(cohorts, out, iterations=3), log=lambda _msg: None)


def test_phantom_arm_cases_of_another_phantom_version_are_refused_not_mixed_in(finished, cohorts, tmp_path):
    out, _ = finished
    copy = tmp_path / "downstream"
    shutil.copytree(out, copy)
    meta_path = sorted((copy / "phantom").glob("*/meta.json"))[-1]
    meta = json.loads(meta_path.read_text())
    meta["phantom_version"] = "1.0"
    meta_path.write_text(json.dumps(meta))
    (copy / "runs" / "real_phantom__n2__s0.json").unlink()
    with pytest.raises(ValueError, match=r"version 1\.0, this synthaug makes version") as info:
        run_downstream(tiny_config(cohorts, copy), log=lambda _msg: None)
    assert "\n" not in str(info.value) and meta_path.parent.name in str(info.value)
    assert not (copy / "runs" / "real_phantom__n2__s0.json").exists()


def test_a_run_leaves_the_callers_thread_count_as_it_was(cohorts, tmp_path):
    import torch

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    run_downstream(tiny_config(cohorts, tmp_path / "t", arms=("real_only",), n_real=(2,), seeds=(0,), threads=other),
                   log=lambda _msg: None)
    assert torch.get_num_threads() == before


def test_the_same_seed_gives_the_same_run(cohorts, tmp_path):
    cfg = {"arms": ("real_copypaste",), "n_real": (2,), "seeds": (4,)}
    a = run_downstream(tiny_config(cohorts, tmp_path / "a", **cfg), log=lambda _msg: None)
    b = run_downstream(tiny_config(cohorts, tmp_path / "b", **cfg), log=lambda _msg: None)
    assert a["runs"][0]["test"] == b["runs"][0]["test"] and a["runs"][0]["loss_last"] == b["runs"][0]["loss_last"]


# --- refusals: one clear line, before any work ------------------------------------------------------


def _refused(cfg_kwargs, cohorts, out: Path, error=ValueError) -> str:
    with pytest.raises(error) as info:
        run_downstream(tiny_config(cohorts, out, **cfg_kwargs), log=lambda _msg: None)
    message = str(info.value)
    assert "\n" not in message
    assert not out.exists(), "nothing may be written before the inputs are checked"
    return message


def test_test_cases_that_are_training_cases_are_refused_naming_them(cohorts, tmp_path):
    message = _refused({"test": str(cohorts["real"])}, cohorts, tmp_path / "out")
    assert message.startswith("`test`: 8 test case(s) are also training cases: case000, case001")


def test_a_copied_phantom_case_under_a_new_id_is_recognised(tmp_path):
    from synthaug.phantom import make_phantom

    for name in ("a", "b"):
        case = make_phantom(Demographics(50, "F", 165, 60), grid=Grid((16, 16, 32), (32.0, 32.0, 32.0)),
                            seed=7)
        case.meta["case_seed"] = 7
        write_case(tmp_path / name, f"id_{name}", case)
        write_demographics_csv(tmp_path / name / "demographics.csv", {f"id_{name}": case.demographics})
    a, b = Cohort(tmp_path / "a"), Cohort(tmp_path / "b")
    with pytest.raises(ValueError, match=r"`test`: 1 test case\(s\) are also training cases: id_b \(= training id_a\)"):
        downstream.check_disjoint({"id_b": downstream.case_identity(b, "id_b")},
                                  {"id_a": downstream.case_identity(a, "id_a")})


def test_test_cases_the_generator_was_trained_on_are_refused(cohorts, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "global.json").write_text(json.dumps({"training_cohort": {"case_ids": ["test_case002", "x"]}}))
    message = _refused({"synthetic": None, "weights": str(weights)}, cohorts, tmp_path / "out")
    assert message == "`test`: 1 test case(s) are also generator (global stage) training cases: test_case002"


def test_the_generators_training_cases_are_told_apart_by_identity_not_by_id(cohorts, tmp_path):
    """Weights record their training cases as ``synthaug train`` writes them (``info.training_data``, with
    each case's identity). Phantom cohorts all count from phantom_00000: a test cohort that repeats the
    training ids with other phantoms is not refused; the same phantoms under any ids are."""
    test = tmp_path / "test"
    shutil.copytree(cohorts["test"], test)
    ids = sorted(p.name for p in test.iterdir() if p.is_dir())
    for i, cid in enumerate(ids):  # make the test cases phantoms with their own seeds
        meta = json.loads((test / cid / "meta.json").read_text())
        (test / cid / "meta.json").write_text(json.dumps({**meta, "source": "phantom", "case_seed": 900 + i}))
    weights = tmp_path / "weights"
    weights.mkdir()

    def record(identities: list[str]) -> None:
        data = {**TrainingCohort.of(cohorts["real"]).to_dict(), "case_ids": ids, "case_identities": identities}
        (weights / "global.json").write_text(json.dumps({"info": {"training_data": data}}))

    record(["phantom-seed:5", "phantom-seed:901", "phantom-seed:6", "phantom-seed:7"])
    message = _refused({"test": str(test), "synthetic": None, "weights": str(weights)}, cohorts, tmp_path / "out")
    assert message == f"`test`: 1 test case(s) are also generator (global stage) training cases: {ids[1]}"
    record([f"phantom-seed:{i}" for i in range(len(ids))])  # the same ids, other people: the check passes
    with pytest.raises(Exception) as info:  # and the run goes on until it loads the weights, which hold no tensors
        run_downstream(tiny_config(cohorts, tmp_path / "out2", test=str(test), synthetic=None, weights=str(weights),
                                   arms=["synth_only"]), log=lambda _msg: None)
    assert "training cases" not in str(info.value)


def test_a_case_without_suv_is_refused(cohorts, tmp_path):
    real = tmp_path / "real"
    shutil.copytree(cohorts["real"], real)
    (real / "case003" / "SUV.nii.gz").unlink()
    message = _refused({"real": str(real)}, cohorts, tmp_path / "out")
    assert message == "`real`: case case003 has no SUV (SUV.nii.gz)"


def test_a_cohort_without_labels_is_refused(cohorts, tmp_path):
    test = tmp_path / "test"
    shutil.copytree(cohorts["test"], test)
    (test / "test_case001" / "SEG.nii.gz").unlink()
    message = _refused({"test": str(test)}, cohorts, tmp_path / "out")
    assert message == "`test`: case test_case001 has no lesion labels (SEG.nii.gz)"


def test_organ_segmentation_needs_organ_labels(cohorts, tmp_path):
    synth = tmp_path / "synth"
    shutil.copytree(cohorts["synth"], synth)
    (synth / "case000" / "ORGANS.nii.gz").unlink()
    message = _refused({"synthetic": str(synth)}, cohorts, tmp_path / "out")
    assert message.startswith("`synthetic`: case case000 has no organ labels")


def test_an_empty_cohort_is_refused(cohorts, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "demographics.csv").write_text("case_id,age,sex,height_cm,weight_kg,diagnosis\n")
    message = _refused({"real": str(empty)}, cohorts, tmp_path / "out")
    assert message.startswith("`real`: ") and "no cases found" in message


def test_a_missing_cohort_folder_is_refused(cohorts, tmp_path):
    message = _refused({"test": str(tmp_path / "nowhere")}, cohorts, tmp_path / "out", FileNotFoundError)
    assert message.startswith("`test`: cohort folder not found")


def test_an_unknown_arm_is_refused():
    with pytest.raises(ValueError, match=r"^`arms`: unknown arm\(s\) \['real_gan'\]; choose from"):
        DownstreamConfig(real="r", out="o", arms=("real_only", "real_gan"))


def test_more_real_cases_than_the_cohort_holds_are_refused(cohorts, tmp_path):
    message = _refused({"n_real": (2, 9)}, cohorts, tmp_path / "out")
    assert message.startswith("`n_real`=9 exceeds the 7 real training cases left")


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"patch": (12, 16, 16)}, {"seeds": (1, 1)}, {"n_real": (0,)},
                                 {"shift_group": "bmi>>30"}, {"tasks": ("lungs",)}, {"lr": 0.0}])
def test_bad_settings_name_their_parameter(bad):
    with pytest.raises(ValueError, match=rf"^`{next(iter(bad))}`"):
        DownstreamConfig(real="r", out="o", **bad)


# --- pieces ---------------------------------------------------------------------------------------------


def test_subgroups_parse_and_leave_unknown_values_out():
    obese = parse_subgroup("bmi>=30")
    assert obese(Demographics(50, "M", 170, 90)) and not obese(Demographics(50, "M", 170, 80))
    assert not obese(Demographics(50, "M", None, 120)) and not obese(None)
    assert parse_subgroup("sex=F")(Demographics(50, "F", 170, 60))


def test_matching_picks_the_nearest_demographics_once_each():
    pool = {"a": Demographics(30, "F", 160, 55), "b": Demographics(70, "M", 185, 95),
            "c": Demographics(32, "F", 162, 58), "d": Demographics(68, "M", 180, 90)}
    assert match_cases([Demographics(31, "F", 161, 56), Demographics(69, "M", 183, 93)], pool, 2) == \
        ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="5 matched cases needed, the source has 4"):
        match_cases([Demographics(31, "F", 161, 56)] * 5, pool, 1)


def test_lesion_insertion_without_organ_labels_is_reported_not_available(cohorts, tmp_path):
    import shutil

    real = tmp_path / "real"
    shutil.copytree(cohorts["real"], real)
    for organs in real.glob("*/ORGANS.nii.gz"):
        organs.unlink()
    cfg = tiny_config({**cohorts, "real": real}, tmp_path / "out", arms=("real_lesion_insertion",), n_real=(2,),
                      seeds=(0,), tasks=("lesions",))
    runs = run_downstream(cfg, log=lambda _msg: None)["runs"]
    assert [r["status"] for r in runs] == ["not available"] and "organ labels" in runs[0]["reason"]


def test_lesion_insertion_changes_a_patch_and_keeps_it_normalised():
    from helpers import tiny_case

    hook, why_not = downstream_train.lesion_insertion_transform(seed=0, spacing_mm=16.0, prob=1.0)
    assert hook is not None, why_not
    item = downstream.prepare_case(tiny_case(Demographics(50, "F", 180, 70, "LYMPHOMA"), seed=3), 16.0)
    patch = downstream_train.crop_patch(item, [s // 2 for s in item["organs"].shape], (16, 16, 16))
    out = hook(patch, item, np.random.default_rng(0))
    assert out["image"].shape == patch["image"].shape and out["image"].dtype == np.float32
    assert -1.0 <= out["image"][0].min() and out["image"][0].max() <= 1.0
    assert out["lesions"].sum() >= patch["lesions"].sum()


def test_runs_without_synthetic_cases_come_first_and_every_arm_has_every_seed():
    cfg = DownstreamConfig(real="r", out="o", n_real=(4, 8), seeds=(0, 1, 2))
    runs = plan_runs(cfg)
    first_synth = next(i for i, r in enumerate(runs) if r.arm in downstream.SYNTHETIC_ARMS)
    assert all(r.arm in downstream.SYNTHETIC_ARMS for r in runs[first_synth:])
    arms = {r.arm for r in runs}
    assert arms == (set(ARMS) - {"shift"}) | {"shift_real_only", "shift_synth"}
    for arm in arms:
        assert sorted({r.seed for r in runs if r.arm == arm}) == [0, 1, 2]


def test_interval95_is_the_t_interval():
    mean, low, high = interval95([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert high - mean == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert np.isnan(interval95([0.4])[1])


def test_summary_pairs_each_arm_with_real_only_on_the_same_seeds():
    def rec(arm, seed, dice):
        return {"arm": arm, "n_real": 4, "seed": seed, "status": "done",
                "test": {"aggregate": {"lesion_dice": dice, "fp_ml": 1.0, "fn_ml": 2.0, "organ_dice_mean": 0.5}}}

    rows = summarise([rec("real_only", 0, 0.5), rec("real_only", 1, 0.3), rec("real_synth_1to1", 0, 0.6),
                      rec("real_synth_1to1", 1, 0.4)])
    synth = next(r for r in rows if r["arm"] == "real_synth_1to1")
    assert synth["lesion_dice_vs_real_only"]["mean"] == pytest.approx(0.1)
    assert synth["lesion_dice_vs_real_only"]["high"] == pytest.approx(0.1)  # the same gain on both seeds


def test_prepare_case_resamples_labels_by_majority():
    from helpers import tiny_case

    case = tiny_case(Demographics(50, "F", 180, 70, "NEGATIVE"), seed=3)
    item = downstream.prepare_case(case, 32.0)
    assert item["image"].shape[0] == 2 and item["image"].shape[1:] == item["organs"].shape
    assert item["voxel_ml"] == pytest.approx(32.768)
    assert -1.0 <= item["image"][0].min() and item["image"][0].max() <= 1.0
    assert set(np.unique(item["organs"])) <= set(np.unique(case.organs))


# --- the command line --------------------------------------------------------------------------------------


def test_help_lists_the_arms(capsys):
    with pytest.raises(SystemExit) as info:
        main(["downstream", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "real_synth_1to2" in text and "--n-real" in text and "--report-only" in text


def test_the_command_names_flags_in_its_errors(cohorts, tmp_path, capsys):
    code = main(["downstream", "--real", str(cohorts["real"]), "--test", str(cohorts["real"]), "--n-real", "2",
                 "--synthetic", str(cohorts["synth"]), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("synthaug: error: --test: 8 test case(s)")
    code = main(["downstream", "--real", str(cohorts["real"]), "--out", str(tmp_path / "o"), "--iterations", "0"])
    assert code == 2 and "--iterations=0" in capsys.readouterr().err


def test_interim_results_come_from_the_finished_runs_without_training(finished, cohorts, monkeypatch):
    out, _ = finished
    monkeypatch.setattr(downstream_run, "train_model", lambda *a, **k: pytest.fail("report-only must not train"))
    (out / "results.json").unlink()
    (out / "runs" / "synth_only__n0__s0.json").rename(out / "held_back.json")
    try:
        results = downstream.refresh_results(tiny_config(cohorts, out))
    finally:
        (out / "held_back.json").rename(out / "runs" / "synth_only__n0__s0.json")
    assert not results["complete"] and "synth_only" not in {r["arm"] for r in results["runs"]}
    assert "**Incomplete**" in (out / "report.md").read_text()


def test_report_only_rewrites_the_report(finished, capsys):
    out, _ = finished
    (out / "report.md").unlink()
    assert main(["downstream", "--out", str(out), "--report-only"]) == 0
    assert (out / "report.md").read_text().startswith("# synthaug downstream")
