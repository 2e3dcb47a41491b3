"""scripts/stage1_organ_hu.py: where the cascade's per-case organ HU spread comes from."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import load_script, tiny_stage_config, write_tiny_cohort

from synthaug.core.io import Cohort
from synthaug.evaluation.metrics import ORGANS
from synthaug.model.stages import build_stage_model, save_stage


@pytest.fixture(scope="module")
def script():
    return load_script("stage1_organ_hu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("hu_spread")
    cfg = tiny_stage_config("global")
    save_stage(root / "weights" / "global", build_stage_model(cfg), replace(cfg, diffusion=replace(cfg.diffusion, steps=2)))
    write_tiny_cohort(root / "cohort", heights=(150.0, 180.0, 200.0))
    return root


def _final(tiny: Path, values: dict[str, list[float]], seeds=(0, 1, 2)) -> Path:
    cohort = Cohort(tiny / "cohort")
    rows = [{"seed": s, "demographics": {"height_cm": cohort.demographics[cohort.case_ids[i]].height_cm},
             "values": {name: {"ct_median_hu": values[name][i]} for name in ORGANS}} for i, s in enumerate(seeds)]
    path = tiny / f"metrics_{'_'.join(map(str, seeds))}.json"
    path.write_text(json.dumps({"cases": {"synthetic": rows}}))
    return path


def test_report_gives_spread_and_correlation_per_organ(script):
    stage1 = {name: [10.0, 20.0, 40.0] for name in ORGANS}
    truth = {name: [30.0, 31.0, 32.0] for name in ORGANS}
    final = {name: [5.0, 10.0, 20.0] for name in ORGANS}  # stage 1 halved: r = 1
    final["liver"] = [20.0, 10.0, 5.0]  # reversed: r < 0
    lines = script.report(stage1, truth, final)
    assert len(lines) == 1 + len(ORGANS)
    row = dict(zip(ORGANS, lines[1:]))
    spleen = row["spleen"].split()
    assert float(spleen[1]) == 31.0 and float(spleen[2]) == pytest.approx(np.std([30, 31, 32]), abs=0.05)
    assert float(spleen[4]) == pytest.approx(np.std([10, 20, 40]), abs=0.05)
    assert float(spleen[5]) == pytest.approx(np.std([5, 10, 20]), abs=0.05) and float(spleen[6]) == 1.0
    assert float(row["liver"].split()[6]) < 0
    assert len(script.report(stage1, truth)[1].split()) == 5  # no final: no final columns


def test_script_runs_on_weights_and_cohort_and_checks_the_final_cases(script, tiny, capsys):
    args = ["--weights", str(tiny / "weights"), "--cohort", str(tiny / "cohort"), "--cases", "3"]
    good = _final(tiny, {name: [1.0, 2.0, 4.0] for name in ORGANS})
    assert script.main([*args, "--final", str(good)]) == 0
    out = capsys.readouterr().out
    assert "r(stage 1, final)" in out and all(f"\n{name} " in out for name in ORGANS)
    for bad, match in ((_final(tiny, {n: [1.0, 2.0, 4.0] for n in ORGANS}, seeds=(5, 6, 7)), "not seeds 0..2"),
                       (tiny / "missing.json", "not a readable evaluation metrics.json")):
        with pytest.raises(SystemExit):
            script.main([*args, "--final", str(bad)])
        assert match in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([*args[:-1], "9"])
    assert "--cases 9: need 2..3" in capsys.readouterr().err
