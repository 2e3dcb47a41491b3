"""A real nnU-Net v2 training (a few iterations, CPU) on what `synthaug export-nnunet` writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_tiny_cohort

from synthaug.data.nnunet import export_nnunet

SCRIPT = Path(__file__).resolve().parents[2] / "integrations" / "nnunet" / "short_train.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_nnunet_trains_a_few_iterations_on_an_export(tmp_path):
    write_tiny_cohort(tmp_path / "real", heights=(150.0, 160.0, 170.0, 180.0, 195.0, 200.0), seed=1)
    write_tiny_cohort(tmp_path / "synth", heights=(155.0, 175.0, 190.0), seed=2)
    export_nnunet(tmp_path / "raw", 501, "DownstreamSmoke", real=tmp_path / "real", synthetic=tmp_path / "synth",
                  labels="lesions", preprocessed=tmp_path / "pre", progress=False, log=None)
    env = dict(os.environ, nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "results"), nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1",
               nnUNet_compile="f",
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "501", "--plan", "--iterations", "2", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=880)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "short_train: done, 2 iteration(s)" in proc.stdout
    assert "TORCHVISION False" in proc.stdout
    fold = next((tmp_path / "results").glob("Dataset501_DownstreamSmoke/nnUNetTrainerShort__*/fold_0"))
    assert (fold / "checkpoint_final.pth").is_file()
    assert (fold / "validation" / "summary.json").is_file()  # nnU-Net's own validation on the real fold cases
