"""generate_cache in steps: plan_generation checks every argument and names what will be written,
writing nothing; execute_generation writes exactly that."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cache import FakeGenerator

from synthaug.data.cache import (
    MANIFEST_FILE,
    GenerationPlan,
    execute_generation,
    generate_cache,
    load_manifest,
    merge_manifest,
    plan_cases,
    plan_generation,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_plan_of_a_new_cache_names_everything_and_writes_nothing(tmp_path):
    root = tmp_path / "cache"
    gen = FakeGenerator()
    plan = plan_generation(root, gen, plan_cases(3, seed=7), fmt="npy", seed=7, batch_size=2)
    assert isinstance(plan, GenerationPlan)
    assert not root.exists()  # not even the folder
    assert plan.n == 3 and plan.owned == 3 and plan.already_done == 0 and plan.fmt == "npy"
    assert plan.to_generate == ["synth_00000", "synth_00001", "synth_00002"] and plan.to_repair == []
    assert plan.paths == [root / MANIFEST_FILE] + [root / f"synth_0000{i}" for i in range(3)]
    assert plan.manifest["n"] == 3 and plan.manifest["cases"] == [] and plan.manifest["generator_sha256"] == gen.sha256
    result = execute_generation(plan, gen, progress=False)
    assert result.generated == plan.to_generate and result.owned == 3
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in plan.paths)
    # the same bytes as the one-call generate_cache
    other = tmp_path / "other"
    generate_cache(other, FakeGenerator(), plan_cases(3, seed=7), fmt="npy", seed=7, batch_size=2, progress=False)
    merge_manifest(root)
    merge_manifest(other)
    assert {k: v for k, v in _tree(root).items() if k != MANIFEST_FILE} == \
        {k: v for k, v in _tree(other).items() if k != MANIFEST_FILE}
    assert load_manifest(root)["cases"] == load_manifest(other)["cases"]


def test_plan_of_a_partial_cache_sees_done_damaged_and_missing_cases(tmp_path):
    root = tmp_path / "cache"
    generate_cache(root, FakeGenerator(), plan_cases(3, seed=0), fmt="npy", progress=False)
    (root / "synth_00001" / "ct.npy").write_bytes(b"truncated")
    before = _tree(root)
    plan = plan_generation(root, FakeGenerator(), plan_cases(4, seed=0), fmt="npy")
    assert _tree(root) == before
    assert plan.already_done == 2 and plan.to_generate == ["synth_00003"] and plan.to_repair == ["synth_00001"]
    assert plan.manifest is not None and plan.manifest["n"] == 4  # the plan grew
    assert plan.paths == [root / MANIFEST_FILE, root / "synth_00001", root / "synth_00003"]
    # a share of the work: only its own cases, and an unchanged manifest is not rewritten
    share = plan_generation(root, FakeGenerator(), plan_cases(3, seed=0), fmt="npy", rank=1, world=2)
    assert share.owned == 1 and share.to_repair == ["synth_00001"] and share.manifest is None
    assert share.paths == [root / "synth_00001"]
    result = execute_generation(plan, FakeGenerator(), progress=False)
    assert (result.generated, result.repaired, result.already_done) == (["synth_00003"], ["synth_00001"], 2)
    assert merge_manifest(root)["complete"]


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"rank": 2, "world": 2}, ValueError, "rank 2 outside 0..1"),
    ({"batch_size": 0}, ValueError, "batch_size=0"),
    ({"fmt": "tiff"}, ValueError, "format='tiff'"),
])
def test_a_bad_argument_is_refused_before_anything_is_written(tmp_path, kwargs, error, match):
    root = tmp_path / "cache"
    with pytest.raises(error, match=match):
        plan_generation(root, FakeGenerator(), plan_cases(2), **kwargs)
    with pytest.raises(error, match=match):
        generate_cache(root, FakeGenerator(), plan_cases(2), progress=False, **kwargs)
    assert not root.exists()


def test_a_root_that_is_no_cache_or_another_cache_is_refused_unchanged(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("mine")
    with pytest.raises(FileExistsError, match="`root` .* is not a folder"):
        plan_generation(not_a_folder, FakeGenerator(), plan_cases(1))
    assert not_a_folder.read_text() == "mine"
    root = tmp_path / "cache"
    generate_cache(root, FakeGenerator(), plan_cases(2, seed=0), fmt="npy", progress=False)
    before = _tree(root)
    with pytest.raises(ValueError, match="synth_00000 was generated with seed 0"):
        plan_generation(root, FakeGenerator(), plan_cases(2, seed=1), fmt="npy")
    with pytest.raises(ValueError, match="different format"):
        plan_generation(root, FakeGenerator(), plan_cases(2, seed=0), fmt="npz")
    assert _tree(root) == before
