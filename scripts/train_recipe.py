"""Run a training recipe (``configs/recipes/*.json``): cohorts, training phases, shipping, calibration.

A recipe is data: the exact commands that made a set of weights, in order. Every step is
resumable, so the same command continues an interrupted recipe (run it in the background):

    nohup python scripts/train_recipe.py configs/recipes/phantom_v2_finetune.json > runs/recipe.log 2>&1 &
    python scripts/train_recipe.py configs/recipes/demo_weights.json --dry-run   # the commands, and what is done

Steps (each a JSON object with one of these keys, and an optional "name"):

- ``cohort``: ``synthaug phantom`` (out, n, seed, version, optional scanner); resumes by itself.
- ``train``: one or more ``synthaug train`` runs (stage, out, steps, batch_size, checkpoint_every,
  config, optional objective / init_from / lr / balance, defaults from the recipe's
  ``train_defaults``) on the recipe's ``data``, one after the other; with ``"alternate": {"global": G,
  "sr": S}`` the runs advance in chunks of G and S steps in turn. A run at its step count is skipped; one started
  resumes from its latest checkpoint.
- ``ship``: ``scripts/ship_weights.py`` into ``dest`` (skipped when ``dest`` holds these runs' weights).
- ``calibrate``: ``synthaug calibrate`` of one stage, its samples in ``shards`` processes of one thread,
  then the fit (``--write``; ``max_abs`` sets ``--max-abs``, ``labels`` ``"raw"`` / ``"clean"`` sets
  ``--raw-labels`` / ``--clean-labels``: the snapshots fitted before the fit on cleaned labels existed say
  ``"raw"``); skipped when the stage's JSON in ``weights`` is calibrated.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP_KINDS = ("cohort", "train", "ship", "calibrate")
COHORT_KEYS = {"out", "n", "seed", "version", "scanner"}
RUN_KEYS = {"stage", "out", "steps", "batch_size", "checkpoint_every", "config", "objective", "init_from", "lr",
            "balance"}
RUN_REQUIRED = {"stage", "out", "steps", "batch_size", "checkpoint_every", "config"}
SHIP_KEYS = {"global_run", "sr_run", "dest", "args"}
CALIBRATE_KEYS = {"weights", "stage", "work", "cases", "shards", "cache", "max_abs", "labels"}


class RecipeError(ValueError):
    """A recipe that cannot run: one line naming the step and what is wrong."""


def _check_keys(where: str, d: dict, allowed: set, required: set) -> None:
    unknown, missing = sorted(set(d) - allowed), sorted(required - set(d))
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    if missing:
        raise RecipeError(f"{where}: missing field(s) {missing}")


def load_recipe(path: str | Path, root: Path = REPO) -> dict:
    """Read and check a recipe before any work: known step kinds and fields, config files present."""
    path = Path(path)
    try:
        recipe = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe") from None
    except json.JSONDecodeError as err:
        raise RecipeError(f"{path}: not valid JSON: {err}") from None
    _check_keys(str(path), recipe, {"description", "data", "train_defaults", "steps"}, {"data", "steps"})
    _check_keys(f"{path}: train_defaults", recipe.get("train_defaults", {}), RUN_KEYS - RUN_REQUIRED, set())
    for i, step in enumerate(recipe["steps"]):
        where = f"{path}: step {i + 1}"
        kinds = [k for k in STEP_KINDS if k in step]
        if len(kinds) != 1:
            raise RecipeError(f"{where}: needs exactly one of {STEP_KINDS}, has {kinds or 'none'}")
        extra = {"name", "alternate"} if kinds[0] == "train" else {"name"}
        _check_keys(where, step, {kinds[0], *extra}, set())
        body = step[kinds[0]]
        if kinds[0] == "cohort":
            _check_keys(where, body, COHORT_KEYS, COHORT_KEYS - {"scanner"})
        elif kinds[0] == "ship":
            _check_keys(where, body, SHIP_KEYS, SHIP_KEYS - {"args"})
        elif kinds[0] == "calibrate":
            _check_keys(where, body, CALIBRATE_KEYS, CALIBRATE_KEYS - {"cache", "max_abs", "labels"})
            if body["stage"] not in ("global", "sr") or int(body["shards"]) < 1:
                raise RecipeError(f"{where}: stage must be 'global' or 'sr' and shards >= 1")
            if body.get("labels", "clean") not in ("clean", "raw"):
                raise RecipeError(f"{where}: labels must be 'clean' or 'raw', not {body['labels']!r}")
        else:
            for run in body:
                _check_keys(where, run, RUN_KEYS, RUN_REQUIRED)
                if not (root / run["config"]).is_file():
                    raise RecipeError(f"{where}: config {run['config']} not found")
            stages = [run["stage"] for run in body]
            if "alternate" in step and sorted(step["alternate"]) != sorted(stages):
                raise RecipeError(f"{where}: alternate must give one chunk per run's stage {stages}")
    return recipe


def step_of(run: dict, root: Path = REPO) -> int:
    """The step a run's latest checkpoint reached (0 before its first)."""
    latest = root / run["out"] / f"state_{run['stage']}" / "latest.json"
    return int(json.loads(latest.read_text())["step"]) if latest.is_file() else 0


def train_command(run: dict, data: str, defaults: dict, steps: int, root: Path = REPO) -> list[str]:
    """``synthaug train`` for ``run`` up to ``steps``, resuming when the run has started."""
    r = {**defaults, **run}
    argv = ["synthaug", "train", "--stage", r["stage"], "--data", data, "--out", r["out"], "--steps", str(steps),
            "--batch-size", str(r["batch_size"]), "--checkpoint-every", str(r["checkpoint_every"]),
            "--config", r["config"], "--no-progress"]
    for key in ("objective", "init_from", "lr", "balance"):
        if r.get(key) is not None:
            argv += [f"--{key.replace('_', '-')}", str(r[key])]
    if (root / r["out"] / f"run_{r['stage']}.json").is_file():
        argv.append("--resume")
    return argv


def train_commands(step: dict, data: str, defaults: dict, root: Path = REPO) -> Iterator[list[str]]:
    """The next ``synthaug train`` command of a train step, until every run reached its steps (the
    caller runs each before asking for the next: resuming reads the run's checkpoints)."""
    chunks = step.get("alternate")
    while True:
        pending = [run for run in step["train"] if step_of(run, root) < run["steps"]]
        if not pending:
            return
        for run in pending if chunks else pending[:1]:
            before = step_of(run, root)
            target = run["steps"] if chunks is None else min(run["steps"], before + chunks[run["stage"]])
            yield train_command(run, data, defaults, target, root)
            if step_of(run, root) <= before:
                raise RecipeError(f"{run['out']} ({run['stage']}) did not advance past step {before}")


def cohort_command(c: dict) -> list[str]:
    argv = ["synthaug", "phantom", "--n", str(c["n"]), "--out", c["out"], "--seed", str(c["seed"]),
            "--version", str(c["version"]), "--workers", "2"]
    return argv + (["--scanner", c["scanner"]] if "scanner" in c else [])


def ship_command(s: dict) -> list[str]:
    return ["python", "scripts/ship_weights.py", "--global-run", s["global_run"], "--sr-run", s["sr_run"],
            "--dest", s["dest"], *s.get("args", [])]


def shipped(s: dict, root: Path = REPO) -> bool:
    """Whether ``dest`` already holds both runs' weights (their sha256 in its JSON)."""
    for stage, run in (("global", s["global_run"]), ("sr", s["sr_run"])):
        dest, src = root / s["dest"] / f"{stage}.json", root / run / f"{stage}.json"
        if not (dest.is_file() and src.is_file()) or json.loads(dest.read_text()).get("sha256") != json.loads(src.read_text()).get("sha256"):
            return False
    return True


def calibrate_commands(c: dict, data: str) -> tuple[list[list[str]], list[str]]:
    """The sampling shards (run side by side) and the fit of one stage's calibration."""
    base = ["synthaug", "calibrate", "--weights", c["weights"], "--stage", c["stage"], "--data", data,
            "--work", c["work"], "--cases", str(c["cases"]), "--no-progress"]
    base += ["--cache", c["cache"]] if c.get("cache") else []
    base += ["--max-abs", str(c["max_abs"])] if c.get("max_abs") is not None else []
    base += {"raw": ["--raw-labels"], "clean": ["--clean-labels"]}.get(c.get("labels"), [])
    shards = [base + ["--shard", f"{i}/{c['shards']}"] for i in range(c["shards"])] if c["shards"] > 1 else []
    return shards, base + ["--write"]


def calibrated(c: dict, root: Path = REPO) -> bool:
    path = root / c["weights"] / f"{c['stage']}.json"
    return path.is_file() and bool(json.loads(path.read_text()).get("label_bias"))


def _synthaug(argv: list[str]) -> list[str]:
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return [str(Path(sys.executable).with_name("synthaug")), *argv[1:]] if argv[0] == "synthaug" else argv


def run_recipe(recipe: dict, dry_run: bool = False, root: Path = REPO) -> int:
    """Run (or with ``dry_run`` print) every step not yet done; returns an exit code."""
    data, defaults = recipe["data"], recipe.get("train_defaults", {})

    def call(argv: list[str], threads: int = 2) -> None:
        print("$ " + shlex.join(argv), flush=True)
        if not dry_run:
            subprocess.run(_synthaug(argv), cwd=root, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})

    for i, step in enumerate(recipe["steps"]):
        print(f"# step {i + 1}: {step.get('name', next(k for k in STEP_KINDS if k in step))}", flush=True)
        if "cohort" in step:
            call(cohort_command(step["cohort"]))
        elif "train" in step:
            if dry_run:  # the next command only: later ones depend on the checkpoints it writes
                for argv in train_commands(step, data, defaults, root):
                    call(argv)
                    break
                else:
                    print("# done: every run reached its steps")
                continue
            for argv in train_commands(step, data, defaults, root):
                call(argv)
        elif "ship" in step:
            if shipped(step["ship"], root):
                print(f"# done: {step['ship']['dest']} holds these runs' weights")
                continue
            call(ship_command(step["ship"]))
        else:
            c = step["calibrate"]
            if calibrated(c, root):
                print(f"# done: {c['weights']}/{c['stage']}.json is calibrated")
                continue
            shards, fit = calibrate_commands(c, data)
            for argv in shards:
                print("$ " + shlex.join(argv) + " &", flush=True)
            if shards and not dry_run:
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                procs = [subprocess.Popen(_synthaug(s), cwd=root, env=env) for s in shards]
                if any(p.wait() for p in procs):
                    raise subprocess.CalledProcessError(1, "synthaug calibrate --shard")
            call(fit)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", help="recipe JSON (configs/recipes/)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands still to run, run nothing")
    args = ap.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return run_recipe(recipe, dry_run=args.dry_run)
    except subprocess.CalledProcessError as err:
        print(f"error: a step failed (exit code {err.returncode}); fix it and run the recipe again to resume",
              file=sys.stderr)
        return 1
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
