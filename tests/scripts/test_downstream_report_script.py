"""``scripts/downstream_report.py --compare``: two generators' downstream records side by side."""

from __future__ import annotations

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
