"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path:
    env = os.environ.get("SYNTHAUG_REFERENCE_DIR")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "reference" / "totalseg_example"


@pytest.fixture
def reference_dir() -> Path:
    """The real CT example (read-only); tests using it skip when it is absent."""
    path = _reference_dir()
    if not (path / "example_ct.nii.gz").is_file():
        pytest.skip(f"real reference CT not available at {path}")
    return path
