"""``scripts/downstream_report.py --compare``: two generators' downstream records side by side."""

from __future__ import annotations

import json

import pytest
from helpers import load_script


def _record(dice: dict[tuple[str, int, int], float]) -> dict:
    return {"runs": [{"arm": a, "n_real": n, "seed": s, "status": "done",
                      "test": {"aggregate": {"lesion_dice": v, "organ_dice_mean": 0.4}}}
                     for (a, n, s), v in dice.items()]}


def test_compare_pairs_runs_by_arm_real_cases_and_seed():
    report = load_script("downstream_report")
    old = _record({("real_synth_1to1", 4, 0): 0.10, ("real_synth_1to1", 4, 1): 0.20, ("real_synth_1to1", 4, 2): 0.30,
                   ("real_only", 4, 0): 0.5, ("synth_only", 0, 0): 0.2})
    new = _record({("real_synth_1to1", 4, 0): 0.15, ("real_synth_1to1", 4, 1): 0.25, ("real_synth_1to1", 4, 2): 0.35,
                   ("real_only", 4, 0): 0.9})
    lines = report.compare(old, new)
    assert lines[0] == "| arm | real cases | lesion_dice | organ_dice_mean |"
    # the same +0.05 in every seed: an interval of zero width; real_only is no synthetic arm, synth_only not in both
    assert lines[2:] == ["| `real_synth_1to1` | 4 | 0.200 -> 0.250, +0.050 [+0.050, +0.050] | "
                         "0.400 -> 0.400, +0.000 [+0.000, +0.000] |"]


def test_compare_sets_any_arm_side_by_side_and_refuses_an_arm_in_neither_record(tmp_path, capsys):
    report = load_script("downstream_report")
    old = _record({("real_lesion_insertion", 4, 0): 0.10, ("real_lesion_insertion", 4, 1): 0.30})
    new = _record({("real_lesion_insertion", 4, 0): 0.05, ("real_lesion_insertion", 4, 1): 0.25})
    assert report.compare(old, new) == report.compare(old, new)[:2]  # no synthetic arm: the header only
    lines = report.compare(old, new, ("lesion_dice",), ("real_lesion_insertion",))
    assert lines[2:] == ["| `real_lesion_insertion` | 4 | 0.200 -> 0.150, -0.050 [-0.050, -0.050] |"]
    paths = []
    for name, rec in (("old.json", old), ("new.json", new)):
        (tmp_path / name).write_text(json.dumps(rec))
        paths.append(str(tmp_path / name))
    with pytest.raises(SystemExit):
        report.main(["--compare", *paths, "--arms", "real_lesion_insertoin"])
    assert "--arms: real_lesion_insertoin in neither record" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report.main(["--compare", *paths, "--arms", "real_lesion_insertion", "--metrics", "lesion_dce"])
    assert "--metrics: lesion_dce not scored in both records" in capsys.readouterr().err
    assert report.main(["--compare", *paths, "--arms", "real_lesion_insertion", "--metrics", "lesion_dice"]) == 0
    assert "| `real_lesion_insertion` | 4 | 0.200 -> 0.150" in capsys.readouterr().out
