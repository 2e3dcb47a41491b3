"""The pre-generated cache: layout, manifest, resume/repair, verify, sharding, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthaug.cli import main
from synthaug.core.case import Case
from synthaug.core.demographics import Demographics
from synthaug.core.grid import Grid
from synthaug.core.io import Cohort
from synthaug.data.cache import (
    MANIFEST_FILE,
    case_id_for,
    generate_cache,
    load_manifest,
    merge_manifest,
    open_cache_as_cohort,
    parse_shard,
    plan_cases,
    read_cache_case,
    verify_cache,
)
from synthaug.data.cache_plan import plan_generation
from synthaug.sampling.generator import as_list, per_case_seeds

REPO = Path(__file__).resolve().parents[2]


class FakeGenerator:
    """A tiny CaseGenerator: seeded random arrays, body size from the height; can fail after k cases."""

    def __init__(self, shape=(8, 8, 16), spacing=(8.0, 8.0, 8.0), tag: str = "fake", fail_after: int | None = None):
        self.output_grid = Grid(tuple(shape), tuple(spacing))
        self.tag = tag
        self.fail_after = fail_after
        self.made = 0

    @property
    def settings(self) -> dict:
        return {"generator": self.tag, "preset": "demo", "grid": self.output_grid.to_dict()}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()

    def sample(self, demographics, *, seed, progress: bool = False) -> list[Case]:
        demos = as_list(demographics)
        out = []
        for d, s in zip(demos, per_case_seeds(len(demos), seed)):
            if self.fail_after is not None and self.made >= self.fail_after:
                raise RuntimeError(f"fake generator failed after {self.made} cases")
            rng = np.random.default_rng(s)
            shape = self.output_grid.shape
            z = np.arange(shape[2])[None, None, :]
            extent = int(shape[2] * min((d.height_cm or 170.0) / 200.0, 1.0))
            body = np.broadcast_to(z < extent, shape)
            ct = np.where(body, rng.normal(40, 30, shape), -1000.0).astype(np.float32)
            pet = np.where(body, rng.gamma(2.0, 0.5, shape), 0.0).astype(np.float32)
            organs = np.where(body, rng.integers(1, 12, shape), 0).astype(np.uint8)
            lesions = (body & (rng.random(shape) > 0.85)).astype(np.uint8)
            out.append(Case(ct, pet, organs, lesions, self.output_grid.affine, d,
                            {"source": "synthetic", "seed": s, "model_sha256": self.sha256}))
            self.made += 1
        return out


def _files_sha(root: Path) -> dict[str, dict]:
    return {e["case_id"]: e["files"] for e in load_manifest(root)["cases"]}


def test_plan_is_prefix_stable_and_validated(tmp_path):
    a, b = plan_cases(5, seed=3), plan_cases(8, seed=3)
    assert [p.case_id for p in a] == [case_id_for(i) for i in range(5)]
    assert [p.seed for p in a] == [3, 4, 5, 6, 7]
    assert a == b[:5]  # extending a cache keeps the existing cases
    assert plan_cases(5, seed=4)[0].demographics != a[0].demographics
    fixed = [Demographics(50, "F", 160, 60), Demographics(70, "M", 180, 90)]
    assert [p.demographics for p in plan_cases(3, demographics=fixed)] == [fixed[0], fixed[1], fixed[0]]
    with pytest.raises(ValueError, match="n"):
        plan_cases(None)
    with pytest.raises(ValueError, match="seed"):
        plan_cases(3, seed=-1)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "a/b"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_generate_writes_complete_checksummed_cache(tmp_path):
    root = tmp_path / "cache"
    gen = FakeGenerator()
    res = generate_cache(root, gen, plan_cases(3, seed=7), fmt="both", seed=7, progress=False)
    assert res.generated == ["synth_00000", "synth_00001", "synth_00002"]
    manifest = merge_manifest(root)
    assert manifest["complete"] and manifest["n"] == 3
    assert manifest["generator_sha256"] == gen.sha256 and manifest["format"] == "both"
    entry = manifest["cases"][1]
    assert entry["seed"] == 8 and set(entry["files"]) >= {"ct.npy", "lesions.npy", "CTres.nii.gz", "SEG.nii.gz"}
    for name, info in entry["files"].items():
        data = (root / "synth_00001" / name).read_bytes()
        assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"]
    # the cached arrays are the generator's
    again = FakeGenerator().sample([plan_cases(3, seed=7)[1].demographics], seed=[8])[0]
    case = read_cache_case(root, entry)
    np.testing.assert_array_equal(case.ct, again.ct)
    np.testing.assert_array_equal(case.lesions, again.lesions)
    np.testing.assert_allclose(case.affine, gen.output_grid.affine)
    # the cache is also a plain AutoPET-layout cohort, and open_cache_as_cohort reads it the fast way
    cohort = Cohort(root)
    assert cohort.case_ids == ["synth_00000", "synth_00001", "synth_00002"]
    np.testing.assert_array_equal(cohort.load("synth_00001").pet, again.pet)
    fast = open_cache_as_cohort(root)
    assert fast.has_organs and fast.demographics == cohort.demographics
    np.testing.assert_array_equal(fast.load("synth_00002").organs, cohort.load("synth_00002").organs)
    assert verify_cache(root, progress=False).ok


@pytest.mark.parametrize("fmt", ["npy", "npz", "nifti"])
def test_each_format_reads_back_the_same(tmp_path, fmt):
    root = tmp_path / fmt
    generate_cache(root, FakeGenerator(), plan_cases(1, seed=0), fmt=fmt, progress=False)
    manifest = merge_manifest(root)
    case = open_cache_as_cohort(root).load("synth_00000")
    ref = FakeGenerator().sample([manifest["cases"][0] and plan_cases(1, seed=0)[0].demographics], seed=[0])[0]
    for name in ("ct", "pet", "organs", "lesions"):
        np.testing.assert_array_equal(getattr(case, name), getattr(ref, name))


def test_interrupted_generate_resumes_without_duplicates(tmp_path):
    root = tmp_path / "cache"
    plan = plan_cases(5, seed=1)
    with pytest.raises(RuntimeError, match="failed after 2"):
        generate_cache(root, FakeGenerator(fail_after=2), plan, progress=False)
    finished = sorted(p.name for p in root.iterdir() if p.name.startswith("synth_"))
    assert finished == ["synth_00000", "synth_00001"]
    before = (root / "synth_00000" / "meta.json").read_bytes()
    # a half-written leftover of a killed process, and a case damaged afterwards
    (root / ".synth_00002.abc.tmp").mkdir()
    (root / ".synth_00002.abc.tmp" / "ct.npy").write_bytes(b"partial")
    ct = root / "synth_00001" / "ct.npy"
    ct.write_bytes(ct.read_bytes()[:100])
    res = generate_cache(root, FakeGenerator(), plan, progress=False)
    assert res.already_done == 1 and res.repaired == ["synth_00001"]
    assert res.generated == ["synth_00002", "synth_00003", "synth_00004"]
    assert (root / "synth_00000" / "meta.json").read_bytes() == before  # finished work untouched
    assert not list(root.glob(".*.tmp"))
    manifest = merge_manifest(root)
    ids = [e["case_id"] for e in manifest["cases"]]
    assert ids == [case_id_for(i) for i in range(5)] and manifest["complete"]
    assert verify_cache(root, progress=False).ok
    # a third run has nothing to do
    res = generate_cache(root, FakeGenerator(fail_after=0), plan, progress=False)
    assert res.already_done == 5 and not res.generated


def test_verify_reports_truncated_and_corrupt_files(tmp_path, capsys):
    root = tmp_path / "cache"
    generate_cache(root, FakeGenerator(), plan_cases(3, seed=0), fmt="npy", progress=False)
    merge_manifest(root)
    assert main(["cache", "verify", str(root), "--no-progress"]) == 0
    pet = root / "synth_00001" / "pet.npy"
    pet.write_bytes(pet.read_bytes()[:-10])  # truncated
    lesions = root / "synth_00002" / "lesions.npy"
    data = bytearray(lesions.read_bytes())
    data[-1] ^= 1  # same size, different content
    lesions.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["cache", "verify", str(root), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "synth_00001: pet.npy truncated" in out
    assert "synth_00002: lesions.npy is corrupt" in out
    assert "synth_00000" not in out
    # --quick checks sizes only
    report = verify_cache(root, checksums=False, progress=False)
    assert len(report.problems) == 1 and "synth_00001" in report.problems[0]


def test_verify_reports_missing_and_unmerged_cases(tmp_path):
    root = tmp_path / "cache"
    plan = plan_cases(4, seed=0)
    generate_cache(root, FakeGenerator(), plan[:2], progress=False)
    merge_manifest(root, n=4)
    generate_cache(root, FakeGenerator(), plan[:3], progress=False)  # synth_00002 written, not merged
    problems = "\n".join(verify_cache(root, progress=False).problems)
    assert "synth_00003: missing" in problems
    assert "synth_00002: on disk but not in manifest.json" in problems
    assert merge_manifest(root)["complete"] is False
    from synthaug.data.dataset import SyntheticPETCTDataset

    with pytest.warns(UserWarning, match="incomplete"):
        assert len(SyntheticPETCTDataset.from_cache(root)) == 3


def test_refuses_other_generator_format_or_seed_and_changes_nothing(tmp_path):
    root = tmp_path / "cache"
    generate_cache(root, FakeGenerator(), plan_cases(2, seed=0), fmt="npy", progress=False)
    merge_manifest(root)
    snapshot = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"different generator \(sha256\)"):
        generate_cache(root, FakeGenerator(tag="other"), plan_cases(3, seed=0), fmt="npy", progress=False)
    with pytest.raises(ValueError, match="different format"):
        generate_cache(root, FakeGenerator(), plan_cases(3, seed=0), fmt="nifti", progress=False)
    with pytest.raises(ValueError, match="synth_00000 was generated with seed 0"):
        generate_cache(root, FakeGenerator(), plan_cases(3, seed=5), fmt="npy", progress=False)
    with pytest.raises(ValueError, match="preset"):
        generate_cache(root, FakeGenerator(), plan_cases(3, seed=0), fmt="npy", preset="autopet", progress=False)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == snapshot
    # a folder that is not a cache is never written into
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a synthaug cache"):
        generate_cache(other, FakeGenerator(), plan_cases(1), progress=False)


class CleaningGenerator(FakeGenerator):
    """A FakeGenerator with the cascade's ``clean_labels`` setting; the setting leaves the generator digest
    (the networks and their calibration) as it is, as the cascade's does."""

    def __init__(self, clean_labels: bool):
        super().__init__()
        self.clean_labels = clean_labels

    @property
    def settings(self) -> dict:
        return {**super().settings, "clean_labels": self.clean_labels}

    @property
    def sha256(self) -> str:
        return "c" * 64


def test_a_cache_from_before_the_label_clean_up_resumes_with_raw_labels_only(tmp_path):
    """A cache whose header does not record ``clean_labels`` was made with the labels as drawn: a run with
    raw labels resumes it, the default (cleaned) run is refused naming that one setting."""
    root = tmp_path / "cache"
    generate_cache(root, CleaningGenerator(False), plan_cases(2, seed=0), fmt="npy", progress=False)
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["settings"]["clean_labels"]  # as written before synthaug recorded the setting
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"different sampler settings: \{'clean_labels': False\} there, "
                                         r"\{'clean_labels': True\} requested"):
        generate_cache(root, CleaningGenerator(True), plan_cases(3, seed=0), fmt="npy", progress=False)
    generate_cache(root, CleaningGenerator(False), plan_cases(3, seed=0), fmt="npy", progress=False)
    assert merge_manifest(root)["complete"] is True and len(verify_cache(root, progress=False).problems) == 0


def test_manifest_not_matching_files_is_a_clear_error(tmp_path):
    from synthaug.data.dataset import SyntheticPETCTDataset

    root = tmp_path / "cache"
    generate_cache(root, FakeGenerator(), plan_cases(2, seed=0), fmt="npy", progress=False)
    merge_manifest(root)
    (root / "synth_00001" / "ct.npy").unlink()
    with pytest.raises(ValueError, match="manifest.json does not match the files: case synth_00001: ct.npy missing"):
        SyntheticPETCTDataset.from_cache(root)
    with pytest.raises(ValueError, match="synth_00001"):
        open_cache_as_cohort(root)
    (root / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="unreadable manifest"):
        load_manifest(root)


def test_shards_are_disjoint_and_equal_to_one_run(tmp_path):
    plan = plan_cases(5, seed=2)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    generate_cache(single, FakeGenerator(), plan, fmt="npy", progress=False)
    merge_manifest(single)
    shares = [generate_cache(sharded, FakeGenerator(), plan, fmt="npy", rank=r, world=2, progress=False).generated
              for r in (1, 0)]
    assert shares == [["synth_00001", "synth_00003"], ["synth_00000", "synth_00002", "synth_00004"]]
    assert merge_manifest(sharded)["complete"]
    assert _files_sha(sharded) == _files_sha(single)  # same ids, same bytes, however the work is split


def test_cli_generate_with_shards(tmp_path, capsys):
    root = tmp_path / "cache"
    args = ["generate", "--generator", "test_cache:FakeGenerator", "--n", "3", "--out", str(root), "--format", "npy",
            "--no-progress", "--seed", "4"]
    assert main([*args, "--shard", "0/2"]) == 0
    assert "cache merge" in capsys.readouterr().out  # not all shards done yet
    assert main([*args, "--shard", "1/2"]) == 0
    manifest = load_manifest(root)
    assert manifest["complete"] and [e["case_id"] for e in manifest["cases"]] == ["synth_00000", "synth_00001",
                                                                                    "synth_00002"]
    assert [e["seed"] for e in manifest["cases"]] == [4, 5, 6]
    assert main(["cache", "verify", str(root), "--no-progress"]) == 0
    assert main(["cache", "info", str(root)]) == 0
    # another generator or format is refused with one clear line
    capsys.readouterr()
    assert main([*args, "--format", "nifti"]) == 2  # the last --format wins
    err = capsys.readouterr().err
    assert err.startswith("synthaug: error: cache") and "different format" in err
    assert main(["generate", "--generator", "nope:Gen", "--n", "1", "--out", str(tmp_path / "x")]) == 2
    assert main(["cache", "verify", str(tmp_path / "missing")]) == 2


def test_cli_generate_phantom_grid(tmp_path):
    pytest.importorskip("synthaug.phantom.body")
    root = tmp_path / "cache"
    assert main(["generate", "--phantom", "--grid", "16x16x32", "--n", "2", "--out", str(root), "--no-progress"]) == 0
    cohort = Cohort(root)  # default format keeps the AutoPET layout
    case = cohort.load("synth_00001")
    assert case.shape == (16, 16, 32) and case.spacing == pytest.approx((32.0, 32.0, 32.0))
    assert verify_cache(root, progress=False).ok


@pytest.mark.slow
def test_a_manifest_another_rank_writes_during_the_check_is_no_foreign_file(tmp_path, monkeypatch):
    """Two ranks start on an empty folder; rank 0 writes the manifest while rank 1 checks the folder (the
    race once made rank 1 refuse it as "not a synthaug cache"). The listing is taken as the manifest lands."""
    root = tmp_path / "cache"
    root.mkdir()
    header = plan_generation(tmp_path / "rank0", FakeGenerator(), plan_cases(2, seed=1), fmt="npy", seed=1).manifest
    listing = Path.iterdir

    def iterdir_as_the_other_rank_writes(self):
        if self == root and not (root / "manifest.json").exists():
            (root / "manifest.json").write_text(json.dumps(header))  # rank 0, between rank 1's two looks
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", iterdir_as_the_other_rank_writes)
    plan_generation(root, FakeGenerator(), plan_cases(2, seed=1), fmt="npy", seed=1, rank=1, world=2)
    monkeypatch.undo()
    (root / "manifest.json").unlink()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a synthaug cache"):
        plan_generation(root, FakeGenerator(), plan_cases(2, seed=1), fmt="npy", seed=1)


def test_torchrun_two_ranks_write_disjoint_complete_shares(tmp_path):
    root = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests" / "data")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "synthaug.cli", "generate", "--generator", "test_cache:FakeGenerator", "--num-cases", "5", "--seed", "1",
           "--out", str(root), "--format", "npy", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
        proc.communicate()
        pytest.fail("torchrun generate did not finish within 90 s")
    assert proc.returncode == 0, stdout + stderr
    manifest = load_manifest(root)
    assert manifest["complete"] and len(manifest["cases"]) == 5
    assert [e["case_id"] for e in manifest["cases"]] == [case_id_for(i) for i in range(5)]
    assert "shard 0/2: 3 generated" in stdout and "shard 1/2: 2 generated" in stdout
    assert verify_cache(root, progress=False).ok
    # the same cases as one process writes
    single = tmp_path / "single"
    generate_cache(single, FakeGenerator(), plan_cases(5, seed=1), fmt="npy", seed=1, progress=False)
    merge_manifest(single)
    assert _files_sha(single) == _files_sha(root)
