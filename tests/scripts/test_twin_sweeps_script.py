"""scripts/twin_sweeps.py (the twin numbers in RESULTS.md and the model card) on the tiny cascade, and its report."""

from __future__ import annotations

import json

from helpers import load_script, randomised_tiny_weights

from benchmarks.report import render


def test_twin_sweeps_writes_both_results_and_the_report_renders_them(tmp_path):
    weights = randomised_tiny_weights(tmp_path / "weights")
    script = load_script("twin_sweeps")
    common = ["--weights", str(weights), "--out", str(tmp_path / "results"), "--steps", "2"]
    records = [str(tmp_path / f"shard{k}.jsonl") for k in (0, 1)]
    for k in (0, 1):  # two shards, each appending its people's records
        assert script.main([*common, "--people", "2", "--part", "sweeps", "--shard", f"{k}/2", "--records", records[k]]) == 0
    before = (tmp_path / "shard0.jsonl").read_text()
    assert script.main([*common, "--people", "2", "--part", "sweeps", "--shard", "0/2", "--records", records[0]]) == 0
    assert (tmp_path / "shard0.jsonl").read_text() == before  # resumed: nothing to do
    assert script.main([*common, "--people", "2", "--part", "sweeps", "--merge", *records]) == 0
    assert script.main([*common, "--people", "1", "--full-people", "1", "--part", "full"]) == 0
    sweeps = json.loads((tmp_path / "results" / "twins.json").read_text())["results"]
    assert sweeps["design"]["people_measured"] == [0, 1]
    assert len(sweeps["per_person"]["stage1"]) == 2 and len(sweeps["per_person"]["stage1"][0]["weight"]) == 3
    assert sweeps["weights"]["global"]["sha256"] == json.loads((weights / "global.json").read_text())["sha256"]
    assert set(sweeps["stage1"]) == {"weight", "no_twin", "height", "age"}
    assert sweeps["phantom"]["weight"]["effectiveness_mass"]["within_set_slope"] > 0  # heavier phantoms weigh more
    full = json.loads((tmp_path / "results" / "twins_full.json").read_text())["results"]["full_cascade"]
    assert full["people"] == 1 and "final_vs_stage1" in full
    text = render(tmp_path / "results")
    assert "## Counterfactual twins: effectiveness" in text and "## Counterfactual twins through the full cascade" in text
    assert "could not render" not in text and "twin_sweeps.py" in text
