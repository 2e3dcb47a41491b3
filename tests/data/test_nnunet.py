"""nnU-Net v2 export: layout, labels, geometry, splits, atomicity, errors, and nnU-Net's own checks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synthaug.core.case import Case
from synthaug.core.demographics import Demographics
from synthaug.core.geometry import spacing_of
from synthaug.core.grid import Grid
from synthaug.core.io import CaseError, write_case
from synthaug.data.nnunet import (
    SIDECAR_FILE,
    SPLITS_FILE,
    export_nnunet,
    make_splits,
    resample_to_spacing,
)

# Small grids with a whole-body field of view (480 x 320 x 1920 mm), so that the phantom fits.
REAL_GRID = Grid((24, 16, 48), (20.0, 20.0, 40.0))
SYNTH_GRID = Grid((16, 16, 32), (30.0, 20.0, 60.0))  # same field of view, other spacing


def _hand_made_case(demo: Demographics, grid: Grid, seed: int) -> Case:
    """A small body (sizes relative to the field of view): soft tissue, a bone rod, a liver blob, a lesion."""
    rng = np.random.default_rng(seed)
    idx = np.indices(grid.shape).reshape(3, -1)
    world = (grid.affine @ np.vstack([idx, np.ones(idx.shape[1])]))[:3].reshape(3, *grid.shape)
    x, y, z = (w / f for w, f in zip(world, grid.fov_mm))  # -0.5 .. 0.5
    body = (x / 0.35) ** 2 + (y / 0.35) ** 2 + (z / 0.45) ** 2 <= 1.0
    bone = body & (x**2 + (y + 0.12) ** 2 <= 0.08**2)
    liver = body & ((x + 0.15) ** 2 + y**2 + ((z - 0.1) / 2) ** 2 <= 0.12**2) & ~bone
    lesion = body & ((x - 0.15) ** 2 + (y - 0.05) ** 2 + ((z + 0.15) / 2) ** 2 <= 0.1**2) & ~bone & ~liver
    organs = np.zeros(grid.shape, np.uint8)
    organs[body] = 2
    organs[bone] = 3
    organs[liver] = 7
    ct = np.full(grid.shape, -1000.0, np.float32)
    ct[body] = 40.0
    ct[bone] = 700.0
    ct += rng.normal(0, 5, grid.shape).astype(np.float32)
    pet = np.zeros(grid.shape, np.float32)
    pet[body] = 1.0
    pet[liver] = 2.5
    pet[lesion] = 8.0
    return Case(ct=ct, pet=pet, organs=organs, lesions=lesion.astype(np.uint8), affine=grid.affine,
                demographics=demo, meta={"source": "phantom", "seed": seed})


def _make_case(demo: Demographics, grid: Grid, seed: int) -> Case:
    """The parametric phantom when it is available, else the hand-made body; always with a lesion."""
    try:
        from synthaug.phantom.body import make_phantom
    except ImportError:
        return _hand_made_case(demo, grid, seed)
    case = make_phantom(demo, grid=grid, seed=seed)
    if case.lesions is None or not case.lesions.any():  # the fingerprint needs foreground
        lesions = np.zeros(grid.shape, np.uint8)
        c = [s // 2 for s in grid.shape]
        lesions[c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 2, c[2] - 1:c[2] + 2] = 1
        case.lesions = lesions
    return case


class FakeGenerator:
    """A CaseGenerator on ``SYNTH_GRID`` (another spacing than the real cases)."""

    output_grid = SYNTH_GRID

    def __init__(self) -> None:
        self.calls: list[int] = []

    @property
    def sha256(self) -> str:
        return "f" * 64

    @property
    def settings(self) -> dict:
        return {"generator": "phantom", "grid": SYNTH_GRID.to_dict()}

    def sample(self, demographics, *, seed, progress=False):
        demos = [demographics] if isinstance(demographics, Demographics) else list(demographics)
        seeds = [seed + i for i in range(len(demos))] if isinstance(seed, int) else list(seed)
        self.calls += seeds
        cases = [_make_case(d, SYNTH_GRID, s) for d, s in zip(demos, seeds)]
        for c, s in zip(cases, seeds):
            c.meta.update(source="phantom", seed=s, model_sha256=self.sha256)
        return cases


REAL = {  # case_id: (patient_id, demographics)
    "p1_2019": ("P1", Demographics(61, "M", 178, 84, "LYMPHOMA")),
    "p1_2020": ("P1", Demographics(62, "M", 178, 80, "LYMPHOMA")),
    "p2_2018": ("P2", Demographics(55, "F", 164, 61, "MELANOMA")),
    "p3_2021": ("P3", Demographics(70, "F", 160, 70, "NEGATIVE")),
}


def _write_demographics(root: Path, rows: dict) -> None:
    with (root / "demographics.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "age", "sex", "height_cm", "weight_kg", "diagnosis", "patient_id"])
        for cid, (pid, d) in rows.items():
            w.writerow([cid, d.age, d.sex, d.height_cm, d.weight_kg, d.diagnosis, pid])


@pytest.fixture
def real_cohort(tmp_path) -> Path:
    root = tmp_path / "real"
    for i, (cid, (_pid, demo)) in enumerate(REAL.items()):
        write_case(root, cid, _make_case(demo, REAL_GRID, seed=100 + i))
    _write_demographics(root, REAL)
    return root


@pytest.fixture
def synth_folder(tmp_path) -> Path:
    root = tmp_path / "cache"
    gen = FakeGenerator()
    demos = [Demographics(50 + 5 * i, "MF"[i % 2], 170, 70, "MELANOMA") for i in range(4)]
    for i, case in enumerate(gen.sample(demos, seed=7)):
        write_case(root, f"gen_{i:03d}", case)
    (root / "manifest.json").write_text("{}")
    return root


def _files(folder: Path, sub: str) -> list[str]:
    return sorted(p.name for p in (folder / sub).iterdir())


def _export(tmp_path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("log", None)
    return export_nnunet(tmp_path / "raw", kw.pop("dataset_id", 42), kw.pop("name", "Mix"), **kw)


# --- the main export --------------------------------------------------------------------


def test_real_plus_generated_layout_labels_geometry_splits(tmp_path, real_cohort):
    before = {p: p.read_bytes() for p in real_cohort.rglob("*") if p.is_file()}
    gen = FakeGenerator()
    res = _export(tmp_path, real=real_cohort, generator=gen, ratio=1.5, seed=3,
                  preprocessed=tmp_path / "pre")
    ds = tmp_path / "raw" / "Dataset042_Mix"
    assert res.path == ds and res.num_real == 4 and res.num_synthetic == 6
    synth = [f"synth_{i:05d}" for i in range(1, 7)]
    cases = sorted(list(REAL) + synth)
    assert _files(ds, "imagesTr") == sorted(f"{c}_{ch:04d}.nii.gz" for c in cases for ch in (0, 1))
    assert _files(ds, "labelsTr") == [f"{c}.nii.gz" for c in cases]
    assert sorted(p.name for p in ds.iterdir()) == sorted(["dataset.json", "imagesTr", "labelsTr", SIDECAR_FILE, SPLITS_FILE])

    # real cases: symlinks in the right channel order; the real cohort is untouched
    for cid in REAL:
        ct, pet = ds / "imagesTr" / f"{cid}_0000.nii.gz", ds / "imagesTr" / f"{cid}_0001.nii.gz"
        assert ct.is_symlink() and ct.resolve() == (real_cohort / cid / "CTres.nii.gz").resolve()
        assert pet.is_symlink() and pet.resolve() == (real_cohort / cid / "SUV.nii.gz").resolve()
    assert before == {p: p.read_bytes() for p in real_cohort.rglob("*") if p.is_file()}

    # channel 0 is CT (HU, air -1000), channel 1 is SUV (>= 0); labels are {0, 1} uint8
    for c in cases:
        ct = nib.load(ds / "imagesTr" / f"{c}_0000.nii.gz")
        pet = nib.load(ds / "imagesTr" / f"{c}_0001.nii.gz")
        seg = nib.load(ds / "labelsTr" / f"{c}.nii.gz")
        assert np.asarray(ct.dataobj).min() < -900 and np.asarray(pet.dataobj).min() >= 0
        assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1}
        assert seg.get_data_dtype() == np.uint8
        # geometry: every channel and the label share shape and affine; synthetic resampled to 8 mm
        assert ct.shape == pet.shape == seg.shape == REAL_GRID.shape
        assert np.allclose(ct.affine, seg.affine) and np.allclose(pet.affine, seg.affine)
        assert np.allclose(spacing_of(ct.affine), REAL_GRID.spacing)

    dj = json.loads((ds / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "CT", "1": "CT"}
    assert dj["labels"] == {"background": 0, "lesion": 1}
    assert dj["numTraining"] == 10 and dj["file_ending"] == ".nii.gz"
    assert "citation" not in dj

    side = json.loads((ds / SIDECAR_FILE).read_text())
    by_id = {r["case_id"]: r for r in side["cases"]}
    assert sorted(by_id) == cases
    assert side["citation"] and side["num_synthetic"] == 6
    for s in synth:
        r = by_id[s]
        assert r["source"] == "synthetic" and r["generator_sha256"] == gen.sha256
        assert r["seed"] in gen.calls and r["demographics"]["sex"] in ("M", "F")
        assert r["resampled"]["from_spacing"] == list(SYNTH_GRID.spacing)
    assert len({by_id[s]["seed"] for s in synth}) == 6
    # demographics matched to the real cohort: sex/diagnosis drawn from it
    assert {by_id[s]["demographics"]["diagnosis"] for s in synth} <= {"LYMPHOMA", "MELANOMA", "NEGATIVE"}
    assert by_id["p2_2018"]["source"] == "real" and by_id["p2_2018"]["patient_id"] == "P2"

    # splits: 5 folds; validation only real, patient-level; synthetic in every training fold
    splits = json.loads((ds / SPLITS_FILE).read_text())
    assert splits == json.loads((tmp_path / "pre" / "Dataset042_Mix" / SPLITS_FILE).read_text()) == res.splits
    assert len(splits) == 5
    for fold in splits:
        assert fold["val"] and not any(c.startswith("synth_") for c in fold["val"])
        assert set(synth) <= set(fold["train"]) and not set(fold["train"]) & set(fold["val"])
        assert set(fold["train"]) | set(fold["val"]) == set(cases)
        assert ("p1_2019" in fold["val"]) == ("p1_2020" in fold["val"])
    assert set().union(*(f["val"] for f in splits)) == set(REAL)


def test_nnunet_own_tools_accept_the_dataset(tmp_path, real_cohort, synth_folder):
    """verify_dataset_integrity + fingerprint extraction, run in a subprocess with nnU-Net's env vars."""
    res = _export(tmp_path, real=real_cohort, synthetic=synth_folder, dataset_id=7, name="Check",
                  preprocessed=tmp_path / "pre")
    env = dict(os.environ, nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "results"), nnUNet_n_proc_DA="1", OMP_NUM_THREADS="1")
    script = textwrap.dedent("""
        import json, sys
        import synthaug.cli.export_nnunet, synthaug.data.nnunet
        from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints
        if __name__ == "__main__":
            extract_fingerprints([7], num_processes=1, check_dataset_integrity=True, clean=True,
                                 verbose=False, show_progress_bar=False)
            print("TORCHVISION", "torchvision" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "verify_dataset_integrity Done" in proc.stdout
    assert "Error" not in proc.stdout and "mismatch" not in proc.stdout  # no geometry warnings either
    assert "TORCHVISION False" in proc.stdout
    fp = json.loads((tmp_path / "pre" / "Dataset007_Check" / "dataset_fingerprint.json").read_text())
    assert len(fp["spacings"]) == res.num_real + res.num_synthetic == 8
    assert np.allclose(fp["spacings"], [REAL_GRID.spacing[::-1]] * 8)  # (z, y, x); synthetic resampled to real
    assert set(fp["foreground_intensity_properties_per_channel"]) == {"0", "1"}
    # the lesion SUV (8) is the foreground of channel 1
    assert fp["foreground_intensity_properties_per_channel"]["1"]["median"] > 2.0
    assert (tmp_path / "pre" / "Dataset007_Check" / SPLITS_FILE).is_file()  # nnU-Net kept our splits


def test_organ_labels_need_organs_and_are_consecutive(tmp_path, real_cohort):
    res = _export(tmp_path, real=real_cohort, labels="organs", pet_norm="zscore")
    dj = json.loads((res.path / "dataset.json").read_text())
    assert list(dj["labels"].values()) == list(range(12)) and dj["labels"]["background"] == 0
    assert dj["channel_names"] == {"0": "CT", "1": "zscore"}
    seg = np.asarray(nib.load(res.path / "labelsTr" / "p2_2018.nii.gz").dataobj)
    assert seg.max() > 1 and seg.max() <= 11

    (real_cohort / "p2_2018" / "ORGANS.nii.gz").unlink()
    with pytest.raises(CaseError, match=r"ORGANS\.nii\.gz.*p2_2018"):
        _export(tmp_path, real=real_cohort, labels="organs", dataset_id=43, name="Org")


def test_synthetic_folder_ratio_subsamples_and_keeps_provenance(tmp_path, real_cohort, synth_folder):
    res = _export(tmp_path, real=real_cohort, synthetic=synth_folder, ratio=0.5, resample="never")
    assert res.num_synthetic == 2
    side = json.loads((res.path / SIDECAR_FILE).read_text())
    synth = [r for r in side["cases"] if r["source"] == "synthetic"]
    assert [r["case_id"] for r in synth] == ["synth_00001", "synth_00002"]
    assert all(r["original_case_id"].startswith("gen_") and r["generator_sha256"] == "f" * 64 for r in synth)
    assert all(r["origin"].startswith(str(synth_folder.resolve())) and r["resampled"] is None for r in synth)
    # --resample never: synthetic images are links to the cache on their own grid
    img = res.path / "imagesTr" / "synth_00001_0000.nii.gz"
    assert img.is_symlink() and np.allclose(spacing_of(nib.load(img).affine), SYNTH_GRID.spacing)
    with pytest.raises(ValueError, match="holds only 4"):
        _export(tmp_path, real=real_cohort, synthetic=synth_folder, ratio=2.0, dataset_id=44)


def test_synthetic_only_warns_and_splits_over_synthetic(tmp_path):
    msgs = []
    res = _export(tmp_path, generator=FakeGenerator(), n_synthetic=5, log=msgs.append)
    assert res.num_real == 0 and res.num_synthetic == 5
    assert any("no honest validation" in m for m in msgs)
    assert len(res.splits) == 5 and all(len(f["val"]) == 1 for f in res.splits)
    # without --real nothing is resampled (no reference spacing)
    img = nib.load(res.path / "imagesTr" / "synth_00001_0000.nii.gz")
    assert np.allclose(spacing_of(img.affine), SYNTH_GRID.spacing)


# --- safety: overwrite, interruption, id conflicts --------------------------------------


def test_refuses_to_overwrite_unless_force(tmp_path, real_cohort):
    _export(tmp_path, real=real_cohort)
    with pytest.raises(FileExistsError, match="already exists"):
        _export(tmp_path, real=real_cohort)
    res = _export(tmp_path, real=real_cohort, generator=FakeGenerator(), n_synthetic=1, force=True)
    assert res.num_synthetic == 1 and (res.path / "labelsTr" / "synth_00001.nii.gz").is_file()


def test_interrupted_export_leaves_no_partial_dataset(tmp_path, real_cohort, monkeypatch):
    import synthaug.data.nnunet as nn

    first = _export(tmp_path, real=real_cohort)
    old_listing = _files(first.path, "labelsTr")
    real_export_label = nn._export_label
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return real_export_label(*a, **k)

    monkeypatch.setattr(nn, "_export_label", failing)
    with pytest.raises(OSError, match="simulated"):
        _export(tmp_path, real=real_cohort, generator=FakeGenerator(), n_synthetic=2, force=True)
    calls.clear()
    with pytest.raises(OSError, match="simulated"):
        _export(tmp_path, real=real_cohort, dataset_id=50, name="Fresh")
    raw = tmp_path / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset042_Mix"]  # no temporaries, no Dataset050
    assert _files(first.path, "labelsTr") == old_listing  # the earlier export is intact
    assert json.loads((first.path / "dataset.json").read_text())["numTraining"] == 4


def test_dataset_id_used_by_another_dataset(tmp_path, real_cohort):
    (tmp_path / "raw" / "Dataset042_Other").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"`dataset_id` 42 is already used by Dataset042_Other"):
        _export(tmp_path, real=real_cohort)
    (tmp_path / "pre" / "Dataset043_Else").mkdir(parents=True)
    with pytest.raises(ValueError, match="Dataset043_Else"):
        _export(tmp_path, real=real_cohort, dataset_id=43, preprocessed=tmp_path / "pre")


def test_real_folder_not_in_autopet_layout(tmp_path, real_cohort):
    (real_cohort / "p3_2021" / "SUV.nii.gz").unlink()
    with pytest.raises(CaseError, match=r"p3_2021: missing SUV\.nii\.gz"):
        _export(tmp_path, real=real_cohort)
    nested = tmp_path / "download" / "PETCT_0011"
    (nested / "03-23-2003-study").mkdir(parents=True)
    (nested / "03-23-2003-study" / "CTres.nii.gz").write_bytes(b"")
    with pytest.raises(CaseError, match="original AutoPET download"):
        _export(tmp_path, real=tmp_path / "download")
    with pytest.raises(FileNotFoundError, match="real folder not found"):
        _export(tmp_path, real=tmp_path / "nope")
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_float_labels_are_converted_and_fractional_labels_refused(tmp_path, real_cohort):
    seg_path = real_cohort / "p2_2018" / "SEG.nii.gz"
    seg = nib.load(seg_path)
    seg_data = np.asarray(seg.dataobj)  # read before the file is replaced
    assert seg_data.any()
    as_float = nib.Nifti1Image(seg_data.astype(np.float64), seg.affine, header=seg.header)
    as_float.set_data_dtype(np.float64)
    nib.save(as_float, seg_path)
    original = seg_path.read_bytes()
    res = _export(tmp_path, real=real_cohort)
    out = res.path / "labelsTr" / "p2_2018.nii.gz"
    assert not out.is_symlink() and nib.load(out).get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(nib.load(out).dataobj), seg_data)
    assert np.allclose(nib.load(out).affine, seg.affine)
    assert (res.path / "labelsTr" / "p1_2019.nii.gz").is_symlink()  # clean uint8 labels stay links
    assert seg_path.read_bytes() == original  # the real file is untouched

    frac = seg_data.astype(np.float32)
    frac[0, 0, 0] = 0.5
    nib.save(nib.Nifti1Image(frac, seg.affine), seg_path)
    with pytest.raises(CaseError, match="p2_2018: SEG.nii.gz holds non-integer label values"):
        _export(tmp_path, real=real_cohort, dataset_id=45)
    assert not (tmp_path / "raw" / "Dataset045_Mix").exists()


def test_bad_arguments_are_refused_before_work(tmp_path, real_cohort, synth_folder):
    with pytest.raises(ValueError, match="`dataset_id`"):
        _export(tmp_path, real=real_cohort, dataset_id=1000)
    with pytest.raises(ValueError, match="`name`"):
        _export(tmp_path, real=real_cohort, name="bad name")
    with pytest.raises(ValueError, match="not both"):
        _export(tmp_path, real=real_cohort, synthetic=synth_folder, generator=FakeGenerator(), n_synthetic=2)
    with pytest.raises(ValueError, match="`ratio` needs `real`"):
        _export(tmp_path, synthetic=synth_folder, ratio=1.0)
    with pytest.raises(ValueError, match="needs a generator"):
        _export(tmp_path, real=real_cohort, n_synthetic=2)
    assert not (tmp_path / "raw").exists()


# --- CLI --------------------------------------------------------------------------------


def test_cli_export_with_env_paths(tmp_path, real_cohort, synth_folder, monkeypatch, capsys):
    from synthaug.cli import main

    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    assert main(["export-nnunet", "--real", str(real_cohort), "--dataset-id", "9", "--name", "X"]) == 2
    assert "nnUNet_raw" in capsys.readouterr().err

    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    argv = ["export-nnunet", "--real", str(real_cohort), "--synthetic", str(synth_folder), "--dataset-id", "9",
            "--name", "X", "--pet-norm", "noNorm"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 real + 4 synthetic" in out and "nnUNetv2_plan_and_preprocess -d 9" in out
    assert (tmp_path / "pre" / "Dataset009_X" / SPLITS_FILE).is_file()
    assert json.loads((tmp_path / "raw" / "Dataset009_X" / "dataset.json").read_text())["channel_names"]["1"] == "noNorm"
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export-nnunet", "--synthetic", "a", "--n-synthetic", "3", "--dataset-id", "9", "--name", "X"])


# --- helpers ----------------------------------------------------------------------------


def test_resample_keeps_world_positions():
    grid = Grid((10, 12, 8), (3.0, 2.0, 5.0))
    aff = grid.affine @ np.diag([-1.0, 1.0, 1.0, 1.0])  # a flipped axis must survive too
    arr = np.zeros(grid.shape, np.float32)
    arr[6, 3, 4] = 1.0
    labels = (arr > 0).astype(np.uint8)
    out, new_aff = resample_to_spacing(arr, aff, (1.0, 1.0, 1.0), order=1)
    lab, lab_aff = resample_to_spacing(labels, aff, (1.0, 1.0, 1.0), order=0)
    assert out.shape == (30, 24, 40) and lab.shape == out.shape and np.allclose(new_aff, lab_aff)
    assert np.allclose(spacing_of(new_aff), 1.0) and np.sign(new_aff[0, 0]) == -1
    assert lab.dtype == np.uint8 and set(np.unique(lab).tolist()) == {0, 1}

    def centroid(a, affine):
        idx = np.argwhere(a > 0.5 * a.max()).mean(axis=0)
        return (affine @ np.append(idx, 1.0))[:3]

    assert np.allclose(centroid(out, new_aff), centroid(arr, aff), atol=0.5)
    assert np.allclose(centroid(lab, lab_aff), centroid(labels, aff), atol=0.5)
    # field of view: outer corners coincide
    corner_old = aff @ np.array([-0.5, -0.5, -0.5, 1.0])
    corner_new = new_aff @ np.array([-0.5, -0.5, -0.5, 1.0])
    assert np.allclose(corner_old, corner_new)


def test_make_splits_groups_and_repeats():
    groups = {f"P{i}": [f"P{i}_a", f"P{i}_b"] for i in range(7)}
    splits = make_splits(groups, ["synth_00001"], seed=1)
    assert len(splits) == 5
    vals = [c for f in splits for c in f["val"]]
    assert sorted(vals) == sorted(c for cs in groups.values() for c in cs)  # each real case validated once
    for f in splits:
        assert "synth_00001" in f["train"] and all(c.replace("_a", "_b") in f["val"] for c in f["val"] if "_a" in c)
    assert make_splits(groups, seed=1) == make_splits(groups, seed=1) != make_splits(groups, seed=2)
    few = make_splits({"A": ["A"], "B": ["B"]}, seed=0)
    assert len(few) == 5 and [f["val"] for f in few[2:4]] == [f["val"] for f in few[0:2]]
