"""Every results file says which weights it measured, and one measured on other weights than the
shipped ones says so (issue 40: numbers traceable to the shipped weights)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
from helpers import load_script, randomised_tiny_weights

from benchmarks.common import RESULTS_DIR, Context, write_result
from synthaug.sampling.cascade import CascadedSampler

SHIPPED = Path(__file__).resolve().parents[2] / "synthaug" / "weights"
#: Results that ran no trained weights, and what they measured instead.
NO_WEIGHTS = {
    "gpu_autopet.json": "randomly initialised networks at the autopet preset's size (random_weights: true)",
    "io.json": "reading and writing a cache of phantom cases: no network runs",
    "memory.json": "peak memory of randomly initialised networks by grid and patch size",
    "train_speed.json": "seconds per training step of freshly initialised networks",
    "lesion_insertion.json": "lesions inserted into real PET by the lesion model and compared with real tumours: no network runs",
    "lesion_appearance_fit.json": "the lesion uptake model's parameters searched on real tumour crops: no network runs",
}

#: Results that measure stage 1 alone: its weights decide whether they are current, not the digest of the
#: cascade they record (a snapshot that only recalibrates the SR stage leaves them as they were).
GLOBAL_STAGE_ONLY = {
    "global_samples.json": "stage 1's samples, without the SR stage",
    "denoiser.json": "stage 1's denoiser, called directly",
    "twins.json": "the twin sweeps sample stage 1 only (the cascade's twins are twins_full.json)",
}
tables = load_script("results_tables")


def _recorded_shas(text: str) -> set[str]:
    return set(re.findall(r'"[a-z_]*sha256": "([0-9a-f]{64})"', text))


@functools.cache
def _shipped() -> tuple[set[str], set[str], str]:
    """The shipped weights' shas: (the cascade's and the global stage's, which change with every snapshot;
    all of them, the SR stage's too, which a snapshot may keep; the cascade's), read once for every file."""
    stages = {s: json.loads((SHIPPED / f"{s}.json").read_text())["sha256"] for s in ("global", "sr")}
    cascade = CascadedSampler.from_pretrained().sha256
    defining = {cascade, stages["global"]}
    return defining, defining | {stages["sr"]}, cascade


def measured_on_shipped(shas: set[str], defining: set[str], shipped: set[str], generator: str | None = None,
                        cascade: str | None = None) -> bool:
    """A file measured the shipped weights when it records their cascade's or global stage's sha, or
    when every sha it records is theirs (a measurement of the SR stage alone). An SR stage that a new
    snapshot keeps does not make an older snapshot's results current; nor does a global stage it
    keeps, for a file that names the cascade it measured (``generator``, not the shipped ``cascade``)."""
    if generator is not None and cascade is not None:
        return generator == cascade
    return bool(shas & defining) or bool(shas) and shas <= shipped


@pytest.mark.parametrize("path", sorted(RESULTS_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_results_file_records_its_weights_or_says_why_not(path):
    text = path.read_text()
    shas = _recorded_shas(text)
    if not shas:
        assert path.name in NO_WEIGHTS, f"{path.name} records no weights sha256 and is not listed with a reason"
        return
    assert path.name not in NO_WEIGHTS, f"{path.name} records its weights now: remove it from NO_WEIGHTS"
    data = json.loads(text)
    stale = data.get("stale")
    defining, shipped, cascade = _shipped()
    generator = None if path.name in GLOBAL_STAGE_ONLY else tables.measured_on(data)
    if measured_on_shipped(shas, defining, shipped, generator, cascade):
        assert stale is None, f"{path.name} was measured on the shipped weights but is marked stale"
    else:
        assert stale and "not the shipped" in stale, f"{path.name} was measured on other weights and is not marked stale"


def test_a_snapshot_that_keeps_the_sr_stage_does_not_make_older_results_current():
    defining, shipped = {"gen_new", "global_new"}, {"gen_new", "global_new", "sr_kept"}
    assert not measured_on_shipped({"gen_old", "global_old", "sr_kept"}, defining, shipped)
    assert measured_on_shipped({"gen_new", "global_new", "sr_kept"}, defining, shipped)
    assert measured_on_shipped({"global_new"}, defining, shipped)  # the global stage alone
    assert measured_on_shipped({"sr_kept"}, defining, shipped)  # the SR stage alone
    assert not measured_on_shipped(set(), defining, shipped)
    # a snapshot that recalibrates the SR stage keeps both stages' weights: the cascade's digest decides
    assert not measured_on_shipped({"gen_old", "global_new", "sr_kept"}, defining, shipped, "gen_old", "gen_new")
    assert measured_on_shipped({"gen_new", "global_new", "sr_kept"}, defining, shipped, "gen_new", "gen_new")


def test_a_new_results_file_records_the_weights_and_settings_it_ran_on(tmp_path):
    folder = randomised_tiny_weights(tmp_path / "w")
    ctx = Context(weights=[folder], out_dir=tmp_path, threads=1, command="python -m benchmarks --only x")
    path = write_result(ctx, "x", {"value": 1}, started="then", load_start=[], seconds=1.0)
    rec = json.loads(path.read_text())
    weights = rec["weights"]
    for stage in ("global", "sr"):
        assert weights[stage]["sha256"] == json.loads((folder / f"{stage}.json").read_text())["sha256"]
        assert weights[stage]["sampler"] and weights[stage]["steps"]
    assert weights["generator_sha256"] == CascadedSampler.from_pretrained(folder).sha256
    assert rec["threads"] == 1 and rec["command"] == "python -m benchmarks --only x" and "stale" not in rec
