"""Checkpoints: bit-exact round trips, and one clear error for every way a checkpoint can be broken."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_stage_config

import synthaug
from synthaug.core.checkpoint import CheckpointError, checkpoint_paths, load_checkpoint, save_checkpoint
from synthaug.core.grid import Grid
from synthaug.model.nets import NetConfig
from synthaug.model.stages import build_stage_model, load_stage, save_stage
from synthaug.sampling.cascade import CascadedSampler


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter random values (MONAI zero-initialises some layers)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def global_config():
    return tiny_stage_config("global")


@pytest.fixture
def saved(tmp_path, global_config):
    model = _randomised(build_stage_model(global_config), 0)
    digest = save_stage(tmp_path / "global", model, global_config, extra={"step": 7})
    return tmp_path / "global", model, digest


def test_round_trip_is_bit_exact(saved, global_config):
    path, model, digest = saved
    weights, cfg = checkpoint_paths(path)
    assert weights.name == "global.safetensors" and cfg.name == "global.json"
    assert digest == hashlib.sha256(weights.read_bytes()).hexdigest()
    loaded, config, raw = load_stage(path)
    assert config == global_config and raw["sha256"] == digest and raw["info"] == {"step": 7}
    assert not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    # The same model gives the same output (the config rebuilt the same network).
    x = torch.randn(1, global_config.net.in_channels, *global_config.global_grid.shape, generator=torch.Generator().manual_seed(1))
    cond = torch.zeros(1, global_config.net.cond_dim)
    with torch.no_grad():
        assert torch.equal(model.eval()(x, torch.tensor([0.7]), cond), loaded(x, torch.tensor([0.7]), cond))
    # Either file name or the stem works.
    assert torch.equal(load_checkpoint(weights)[0]["net.unet.conv_in.conv.weight"], a["net.unet.conv_in.conv.weight"])


def test_raw_checkpoint_round_trip(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64),
               "c": torch.ones(2, dtype=torch.bfloat16)}
    save_checkpoint(tmp_path / "x.safetensors", tensors, {"hello": [1, 2]})
    loaded, config = load_checkpoint(tmp_path / "x.json")
    assert config["hello"] == [1, 2] and config["format"] == "synthaug-checkpoint"
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)


def test_flipped_byte_is_reported_as_a_checksum_mismatch(saved):
    path, _, _ = saved
    weights = path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256") as err:
        load_stage(path)
    assert "\n" not in str(err.value) and weights.name in str(err.value)


def test_truncated_weights(saved):
    path, _, _ = saved
    weights = path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="sha256"):
        load_stage(path)
    # Without the checksum check, the safetensors reader itself refuses the file (no crash, no garbage).
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(path, verify=False)


def test_missing_weights_file(saved):
    path, _, _ = saved
    path.with_suffix(".safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights not found"):
        load_stage(path)


def test_missing_or_invalid_json(saved):
    path, _, _ = saved
    cfg = path.with_suffix(".json")
    text = cfg.read_text()
    cfg.unlink()
    with pytest.raises(CheckpointError, match="config not found"):
        load_stage(path)
    cfg.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_stage(path)
    cfg.write_text(json.dumps({"stage": "global"}))
    with pytest.raises(CheckpointError, match="not a synthaug checkpoint"):
        load_stage(path)
    broken = json.loads(text)
    del broken["net"]
    cfg.write_text(json.dumps(broken))
    with pytest.raises(CheckpointError, match="net"):
        load_stage(path)


def test_weights_of_another_architecture_name_the_tensor(tmp_path, global_config):
    """Weights of a (16, 32) network saved under the (8, 16) config: same names, other shapes."""
    other = tiny_stage_config("global", net=NetConfig.from_dict({**global_config.net.to_dict(), "channels": [16, 32]}))
    save_stage(tmp_path / "global", build_stage_model(other), global_config)
    with pytest.raises(CheckpointError, match=r"tensor '.+' has shape \(16, .*expects \(8, ") as err:
        load_stage(tmp_path / "global")
    assert "\n" not in str(err.value)
    # A network with another number of levels: missing / unexpected tensors, also one line.
    deeper = tiny_stage_config("global", net=NetConfig.from_dict({**global_config.net.to_dict(), "channels": [8, 16, 16],
                                                                   "attention_levels": [False, False, False]}))
    save_stage(tmp_path / "deeper", build_stage_model(deeper), global_config)
    with pytest.raises(CheckpointError, match="missing|unexpected"):
        load_stage(tmp_path / "deeper")


def test_cascade_rejects_stages_trained_for_different_grids(tmp_path, global_config):
    sr_config = tiny_stage_config("sr", output_grid=Grid((32, 32, 32), (16.0, 16.0, 32.0)),
                                  sample_patch_size=(16, 16, 16))
    save_stage(tmp_path / "global", build_stage_model(global_config), global_config)
    save_stage(tmp_path / "sr", build_stage_model(sr_config), sr_config)
    with pytest.raises(CheckpointError, match="output_grid"):
        CascadedSampler.from_pretrained(tmp_path)
    # Stage 1 alone is fine.
    sampler = CascadedSampler.from_pretrained(tmp_path, stages="global")
    assert sampler.output_grid == global_config.global_grid


def test_cascade_reports_missing_stage_files(tmp_path, global_config):
    with pytest.raises(FileNotFoundError, match="weights folder not found"):
        CascadedSampler.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="global"):
        CascadedSampler.from_pretrained(tmp_path)
    save_stage(tmp_path / "global", build_stage_model(global_config), global_config)
    with pytest.raises(FileNotFoundError, match="sr"):
        CascadedSampler.from_pretrained(tmp_path)


_UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _unsafe_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in _UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in _UNSAFE_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names):
            found.append("from torch import load")
        elif isinstance(node, ast.Attribute) and node.attr == "load" and isinstance(node.value, ast.Name) \
                and node.value.id == "torch":
            found.append("torch.load")
        elif isinstance(node, ast.Attribute) and node.attr in ("load_state_dict_from_url", "load_url"):
            found.append(node.attr)
        elif isinstance(node, ast.keyword) and node.arg == "allow_pickle" and not (
                isinstance(node.value, ast.Constant) and node.value.value is False):
            found.append("allow_pickle=...")
    return found


def test_nothing_in_the_package_unpickles():
    package = Path(synthaug.__file__).parent
    files = sorted(package.rglob("*.py"))
    assert len(files) > 10
    bad = {str(f.relative_to(package)): calls for f in files if (calls := _unsafe_calls(ast.parse(f.read_text())))}
    assert not bad, f"pickle-based loading in the package: {bad}"
    # The checker itself finds what it is looking for.
    assert _unsafe_calls(ast.parse("import torch\nx = torch.load('f')")) == ["torch.load"]
    assert _unsafe_calls(ast.parse("import pickle")) == ["pickle"]
    assert _unsafe_calls(ast.parse("import numpy as np\nnp.load('f', allow_pickle=True)")) == ["allow_pickle=..."]
