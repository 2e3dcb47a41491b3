"""Checkpoints: a ``.safetensors`` file + a JSON config that records its sha256.

Loading checks all three (both files present, the checksum, every tensor name and
shape against the model built from the config) and fails with one clear line.
Nothing here ever unpickles.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from .io import atomic_write_bytes, atomic_write_json

FORMAT = "synthaug-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or does not match its config."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights.safetensors, config.json)`` for a path given as either file or the common stem."""
    path = Path(path)
    name = path.name
    for suffix in (".safetensors", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    stem = path.with_name(name)
    return stem.with_name(name + ".safetensors"), stem.with_name(name + ".json")


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> str:
    """Write ``<stem>.safetensors`` then ``<stem>.json`` (both atomically); return the sha256."""
    weights, cfg = checkpoint_paths(path)
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(weights, data)
    atomic_write_json(cfg, {**config, "format": FORMAT, "format_version": FORMAT_VERSION,
                            "weights_file": weights.name, "sha256": digest})
    return digest


def read_config(path: str | Path) -> dict:
    """Read and check a checkpoint's JSON config (without loading the weights)."""
    _, cfg = checkpoint_paths(path)
    if not cfg.is_file():
        raise CheckpointError(f"checkpoint config not found: {cfg}")
    try:
        config = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint config {cfg} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{cfg} is not a synthaug checkpoint config (format != {FORMAT!r})")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{cfg} was written by a newer synthaug (format version {config['format_version']})")
    return config


def load_checkpoint(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``(tensors, config)``, checking that the weights match the recorded sha256."""
    weights, cfg = checkpoint_paths(path)
    config = read_config(cfg)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights}")
    if verify:
        digest = sha256_file(weights)
        if digest != config.get("sha256"):
            raise CheckpointError(
                f"checkpoint weights {weights} are corrupt or were replaced: sha256 {digest[:12]}... "
                f"does not match {str(config.get('sha256'))[:12]}... recorded in {cfg.name}"
            )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {weights} as safetensors: {err}") from None
    return tensors, config


def load_state(module: nn.Module, tensors: dict[str, torch.Tensor], where: str, prefix: str = "") -> None:
    """Copy ``tensors`` (names under ``prefix``) into ``module``, with clear errors on any mismatch."""
    state = module.state_dict()
    given = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = [k for k in state if k not in given]
    unexpected = [k for k in given if k not in state]
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not fit the configured network "
            f"({len(missing)} missing, e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    for k, v in state.items():
        if tuple(given[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{where}: tensor {k!r} has shape {tuple(given[k].shape)}, the network expects {tuple(v.shape)}")
    module.load_state_dict(given)
