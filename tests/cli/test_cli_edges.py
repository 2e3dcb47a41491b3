"""Honest edges of the command line: out-of-distribution demographics warn in one line, a redirected
log gets a few progress lines (not one per step), and ``evaluate`` keeps an existing report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_script, randomised_tiny_weights

from synthaug.cli import main
from synthaug.core.demographics import PopulationRanges

RANGES = PopulationRanges(age=(18.0, 90.0), height_cm=(145.0, 200.0), bmi=(15.0, 45.0), source="a test cohort")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = randomised_tiny_weights(tmp_path_factory.mktemp("tiny") / "weights")
    load_script("record_population").record(folder, RANGES)
    return folder


def test_sample_into_a_log_warns_in_one_line_per_field_and_keeps_the_progress_bar_short(weights, tmp_path):
    log = tmp_path / "log.txt"
    with log.open("w") as err:  # stderr is a file, as in `synthaug sample ... 2> log`
        done = subprocess.run([sys.executable, "-m", "synthaug.cli", "sample", "--weights", str(weights),
                               "--stage", "global", "--steps", "20", "--lesions", "model", "--age", "8",
                               "--sex", "F", "--height", "125", "--weight", "30", "--out", str(tmp_path / "out")],
                              stdout=subprocess.PIPE, stderr=err, text=True, timeout=300)
    raw = log.read_bytes()  # bytes: reading text would turn each carriage return into a newline
    text = raw.decode()
    assert done.returncode == 0, text
    warnings = [line for line in text.splitlines() if "warning" in line.lower()]
    assert warnings == [
        "synthaug: warning: age=8 is outside the training population's range [18, 90] years: "
        "sampled anyway, the weights learnt nothing there",
        "synthaug: warning: height_cm=125 is outside the training population's range [145, 200] cm: "
        "sampled anyway, the weights learnt nothing there"]
    # one sampler bar of 20 steps: drawn when it starts and cleared when it ends, not redrawn per step
    # (a plain tqdm bar writes a carriage return per redraw, up to ten a second: 22 here on a busy machine)
    assert raw.count(b"\r") <= 4, text
    assert "wrote 1 case(s)" in done.stdout


def test_evaluate_refuses_an_existing_report_folder_unless_forced(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("an earlier evaluation")
    args = ["evaluate", "--reference", str(tmp_path / "no_cohort"), "--phantom", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--force" in err[0]
    assert (out / "report.md").read_text() == "an earlier evaluation"
    assert main([*args, "--force"]) == 2  # past the check: now the missing reference cohort stops it
    err = capsys.readouterr().err
    assert "already exists" not in err and "no_cohort" in err
