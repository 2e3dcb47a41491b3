"""Smoke test of integrations/monai/train_lesion_seg.py on tiny volumes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_cache import FakeGenerator

from synthaug.core.demographics import sample_population
from synthaug.core.io import write_case, write_demographics_csv
from synthaug.data.cache import generate_cache, merge_manifest, plan_cases

SCRIPT = Path(__file__).resolve().parents[2] / "integrations" / "monai" / "train_lesion_seg.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("train_lesion_seg", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def data(tmp_path):
    gen = FakeGenerator(shape=(16, 16, 24), spacing=(8.0, 8.0, 8.0))
    demos = sample_population(3, seed=0)
    real = tmp_path / "real"
    for i, case in enumerate(gen.sample(demos, seed=100)):
        case.meta = {"source": "real"}
        write_case(real, f"patient_{i}", case)
    write_demographics_csv(real / "demographics.csv", {f"patient_{i}": d for i, d in enumerate(demos)})
    synth = tmp_path / "synth"
    generate_cache(synth, gen, plan_cases(4, seed=0, like=demos), fmt="npy", progress=False)
    merge_manifest(synth)
    return real, synth


def test_train_script_mixes_real_and_synthetic(tmp_path, data):
    real, synth = data
    out = tmp_path / "run"
    script = _load_script()
    metrics = script.main(["--real", str(real), "--synthetic", str(synth), "--synthetic-ratio", "1.0",
                           "--max-iters", "2", "--roi", "8", "8", "8", "--channels", "4", "8", "--batch-size", "2",
                           "--out", str(out), "--log-every", "1"])
    assert metrics["iters"] == 2 and len(metrics["losses"]) == 2
    assert metrics["synthetic_share"] == 1.0  # ratio 1: every training case replaced
    assert metrics["train_cases"] == 2 and metrics["val_cases"] == 1 and 0.0 <= metrics["val_dice"] <= 1.0
    assert json.loads((out / "metrics.json").read_text())["iters"] == 2
    assert (out / "model.safetensors").stat().st_size > 0
    real_only = script.main(["--real", str(real), "--synthetic-ratio", "0", "--max-iters", "1", "--roi", "8", "8", "8",
                             "--channels", "4", "8", "--val", "0", "--out", str(tmp_path / "real_only")])
    assert real_only["synthetic_share"] == 0.0 and real_only["val_dice"] is None
    with pytest.raises(SystemExit):
        script.main(["--real", str(real), "--synthetic-ratio", "0.5", "--out", str(out)])  # no --synthetic
