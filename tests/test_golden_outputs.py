"""Fixed seeds, fixed weights -> the same bytes: a guard for refactoring.

Each case below is sampled with fixed inputs and its arrays' sha256 compared with the digests
stored in ``tests/fixtures/golden_digests.json``. A change that is meant to change outputs (new
phantom anatomy, new weights, a scanner model on by default) rewrites the file on purpose:

    python tests/test_golden_outputs.py --write

Bit-identity holds on one CPU kind (``torch.backends.cpu.get_cpu_capability()``; oneDNN picks
other kernels on other instruction sets) and one thread count (recorded, and set for the test):
on another CPU kind the arrays are compared by their summary statistics, to float rounding, instead.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import randomised_tiny_weights  # noqa: E402

from synthaug import CascadedSampler, Demographics, make_phantom  # noqa: E402
from synthaug.core.grid import Grid  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden_digests.json"
ARRAYS = ("ct", "pet", "organs", "lesions")
PERSON = Demographics(age=60, sex="M", height_cm=178, weight_kg=82, diagnosis="LYMPHOMA")


def _digest(case) -> dict:
    out = {}
    for name in ARRAYS:
        a = np.ascontiguousarray(getattr(case, name))
        out[name] = {"sha256": hashlib.sha256(a.tobytes()).hexdigest(), "dtype": str(a.dtype), "shape": list(a.shape),
                     "sum": float(a.astype(np.float64).sum()), "sq": float((a.astype(np.float64) ** 2).sum())}
    out["affine"] = hashlib.sha256(np.asarray(case.affine, np.float64).tobytes()).hexdigest()
    return out


def _shipped_case():
    sampler = CascadedSampler.from_pretrained().configure(steps=2, sr_steps=2)
    return sampler.sample(PERSON, seed=3)[0]


def _tiny_case(tmp: Path):
    folder = randomised_tiny_weights(tmp / "weights")
    sampler = CascadedSampler.from_pretrained(folder).configure(steps=4, sr_steps=2, patch_size=(18, 18, 34), overlap=4)
    return sampler.sample(PERSON, seed=7)[0]


def _phantom_case(version: int = 1):
    """Version 1: the phantom of the demo weights' first six phases; version 2 (their fine-tune): arms, more
    structures, the scanner; version 3: version 2 sized to what its field of view holds."""
    return make_phantom(PERSON, grid=Grid((64, 64, 128), (8.0, 8.0, 8.0)), seed=11, version=version)


@pytest.fixture(autouse=True)
def _recorded_threads():
    """oneDNN's reductions depend on the thread count: sample with the count the digests were made with."""
    threads = torch.get_num_threads()
    torch.set_num_threads(json.loads(GOLDEN.read_text())["torch_threads"])
    yield
    torch.set_num_threads(threads)


def _current(tmp: Path) -> dict:
    return {"shipped_cascade": _digest(_shipped_case()), "tiny_cascade": _digest(_tiny_case(tmp)),
            "phantom": _digest(_phantom_case()), "phantom_v2": _digest(_phantom_case(2)),
            "phantom_v3": _digest(_phantom_case(3))}


def _check(name: str, got: dict) -> None:
    stored = json.loads(GOLDEN.read_text())
    want = stored["cases"][name]
    assert got["affine"] == want["affine"]
    exact = stored["cpu_capability"] == torch.backends.cpu.get_cpu_capability() or name.startswith("phantom")
    for array in ARRAYS:
        g, w = got[array], want[array]
        assert (g["dtype"], g["shape"]) == (w["dtype"], w["shape"]), array
        if exact:
            assert g["sha256"] == w["sha256"], f"{name}.{array} changed"
        else:
            assert g["sum"] == pytest.approx(w["sum"], rel=1e-4, abs=1e-3), array
            assert g["sq"] == pytest.approx(w["sq"], rel=1e-4, abs=1e-3), array


@pytest.mark.slow
def test_the_shipped_weights_sample_the_stored_case_bit_for_bit():
    _check("shipped_cascade", _digest(_shipped_case()))


def test_the_tiny_cascade_samples_the_stored_case_bit_for_bit(tmp_path):
    _check("tiny_cascade", _digest(_tiny_case(tmp_path)))


def test_the_phantom_draws_the_stored_case_bit_for_bit():
    _check("phantom", _digest(_phantom_case()))


def test_the_version_2_phantom_draws_the_stored_case_bit_for_bit():
    _check("phantom_v2", _digest(_phantom_case(2)))


def test_the_version_3_phantom_draws_the_stored_case_bit_for_bit():
    _check("phantom_v3", _digest(_phantom_case(3)))


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                  "torch_threads": torch.get_num_threads(), "cases": _current(Path(tmp))}
    GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
