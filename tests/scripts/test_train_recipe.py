"""Training recipes are data: every recipe in configs/recipes reads, its commands are ones synthaug
accepts, a bad recipe is refused with one line, and the runner resumes and alternates as it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script

from synthaug.cli import build_parser

recipe = load_script("train_recipe")
RECIPES = sorted((recipe.REPO / "configs" / "recipes").glob("*.json"))


def _write_state(root: Path, run: dict, step: int) -> None:
    state = root / run["out"] / f"state_{run['stage']}"
    state.mkdir(parents=True, exist_ok=True)
    (state / "latest.json").write_text(json.dumps({"step": step}))
    (root / run["out"] / f"run_{run['stage']}.json").write_text("{}")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_reads_and_its_commands_parse_as_synthaug_commands(path, tmp_path):
    r = recipe.load_recipe(path)
    parser = build_parser()
    commands = []
    for step in r["steps"]:
        if "train" in step:  # in an empty folder: every run from its start
            commands += [recipe.train_command(run, r["data"], r.get("train_defaults", {}), run["steps"], tmp_path)
                         for run in step["train"]]
        elif "cohort" in step:
            commands.append(recipe.cohort_command(step["cohort"]))
        elif "calibrate" in step:
            shards, fit = recipe.calibrate_commands(step["calibrate"], r["data"])
            commands += [*shards, fit]
    assert any(c[1] == "train" for c in commands)
    for argv in commands:
        args = parser.parse_args(argv[1:])  # exits (SystemExit) on an option synthaug does not have
        assert args.command == argv[1]
    for argv in (c for c in commands if c[1] == "train"):
        assert (recipe.REPO / argv[argv.index("--config") + 1]).is_file()
        assert "--resume" not in argv  # nothing has started in an empty folder


def test_the_recipes_name_the_stage_settings_the_shipped_stages_were_trained_with():
    shipped = {s: json.loads((recipe.REPO / "synthaug" / "weights" / f"{s}.json").read_text()) for s in ("global", "sr")}
    # phase 8 (phantom_v3_finetune.json) made the shipped global stage; the SR stage is phase 7's
    # (phantom_v2_finetune.json), both from demo_weights.json's phase 6
    last = {}
    for name in ("phantom_v2_finetune.json", "phantom_v3_finetune.json"):  # the later recipe wins
        r = recipe.load_recipe(recipe.REPO / "configs" / "recipes" / name)
        last.update({run["stage"]: run for step in r["steps"] if "train" in step for run in step["train"]})
    assert set(last) == {"global", "sr"} and last["global"]["out"] == "runs/ft_v3_global"
    assert last["sr"]["out"] == "runs/ft_v2_sr" and shipped["global"]["info"]["step"] == last["global"]["steps"]
    for stage, run in last.items():
        overrides = json.loads((recipe.REPO / run["config"]).read_text())["stage"]
        for key in ("lesion_rule", "organ_rule", "upsample"):
            if key in overrides:
                assert overrides[key] == shipped[stage][key], (stage, key)


@pytest.mark.parametrize("change, message", [
    (lambda r: r["steps"].append({"cohort": {}, "train": []}), "exactly one of"),
    (lambda r: r["steps"][1]["train"][0].update(config="configs/stages/nope.json"), "nope.json not found"),
    (lambda r: r["steps"][1]["train"][0].update(epochs=3), "unknown field"),
    (lambda r: r["steps"][1]["train"][0].pop("steps"), "missing field"),
    (lambda r: r["steps"][1].update(alternate={"global": 5}), "one chunk per run"),
    (lambda r: r.pop("data"), "missing field"),
    (lambda r: r["steps"][-1]["calibrate"].update(labels="cleaned"), "labels must be 'clean' or 'raw'"),
])
def test_a_bad_recipe_is_refused_with_one_line_before_any_work(tmp_path, capsys, change, message):
    r = json.loads((recipe.REPO / "configs" / "recipes" / "phantom_v2_finetune.json").read_text())
    change(r)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(r))
    with pytest.raises(recipe.RecipeError, match=message):
        recipe.load_recipe(path)
    assert recipe.main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message.split()[0] in err


def test_training_alternates_in_chunks_resumes_and_skips_finished_runs(tmp_path):
    g = {"stage": "global", "out": "runs/g", "steps": 250, "batch_size": 4, "checkpoint_every": 50, "config": "c.json"}
    s = {"stage": "sr", "out": "runs/s", "steps": 120, "batch_size": 2, "checkpoint_every": 50, "config": "c.json"}
    step = {"train": [g, s], "alternate": {"global": 100, "sr": 50}}
    seen = []
    for argv in recipe.train_commands(step, "data/x", {"lr": 0.001}, tmp_path):
        run = g if "global" in argv else s
        target = int(argv[argv.index("--steps") + 1])
        seen.append((run["stage"], target, "--resume" in argv))
        _write_state(tmp_path, run, target)  # as if the command had trained to its target
    assert seen == [("global", 100, False), ("sr", 50, False), ("global", 200, True), ("sr", 100, True),
                    ("global", 250, True), ("sr", 120, True)]
    assert list(recipe.train_commands(step, "data/x", {}, tmp_path)) == []  # all done: nothing to run


def test_a_run_passes_its_balance_and_the_defaults_theirs(tmp_path):
    run = {"stage": "global", "out": "runs/b", "steps": 10, "batch_size": 4, "checkpoint_every": 5, "config": "c.json",
           "balance": 3}
    argv = recipe.train_command(run, "data/x", {"init_from": "w"}, 10, tmp_path)
    assert argv[argv.index("--balance") + 1] == "3" and argv[argv.index("--init-from") + 1] == "w"
    assert "--balance" not in recipe.train_command({**run, "balance": None}, "data/x", {}, 10, tmp_path)


def test_a_run_that_does_not_advance_stops_the_recipe_instead_of_looping(tmp_path):
    run = {"stage": "global", "out": "runs/g", "steps": 100, "batch_size": 4, "checkpoint_every": 50, "config": "c.json"}
    commands = recipe.train_commands({"train": [run]}, "data/x", {}, tmp_path)
    next(commands)
    with pytest.raises(recipe.RecipeError, match="did not advance"):
        next(commands)


def test_ship_and_calibrate_are_skipped_once_done(tmp_path):
    ship = {"global_run": "runs/g", "sr_run": "runs/s", "dest": "runs/w"}
    for stage, run in (("global", "runs/g"), ("sr", "runs/s")):
        for folder in (run, "runs/w"):
            (tmp_path / folder).mkdir(parents=True, exist_ok=True)
            (tmp_path / folder / f"{stage}.json").write_text(json.dumps({"sha256": stage * 3}))
    assert recipe.shipped(ship, tmp_path)
    (tmp_path / "runs/g/global.json").write_text(json.dumps({"sha256": "retrained"}))
    assert not recipe.shipped(ship, tmp_path)
    cal = {"weights": "runs/w", "stage": "sr", "work": "w", "cases": 4, "shards": 2}
    assert not recipe.calibrated(cal, tmp_path)
    (tmp_path / "runs/w/sr.json").write_text(json.dumps({"label_bias": [0.1]}))
    assert recipe.calibrated(cal, tmp_path)
    shards, fit = recipe.calibrate_commands(cal, "data/x")
    assert [a[-1] for a in shards] == ["0/2", "1/2"] and fit[-1] == "--write"
    assert "--max-abs" not in fit  # the calibration's own default
    shards, fit = recipe.calibrate_commands({**cal, "max_abs": 1.0}, "data/x")
    assert all(argv[argv.index("--max-abs") + 1] == "1.0" for argv in (*shards, fit))
    assert not any("-labels" in a for a in fit)  # the calibration's own default for the stage
    for labels, flag in (("raw", "--raw-labels"), ("clean", "--clean-labels")):
        shards, fit = recipe.calibrate_commands({**cal, "labels": labels}, "data/x")
        assert all(flag in argv for argv in (*shards, fit))
