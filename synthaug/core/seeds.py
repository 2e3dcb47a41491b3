"""The one check every seeded entry point applies to its seed."""

from __future__ import annotations

import numpy as np


def check_seed(seed: object, name: str = "seed") -> int:
    """``seed`` as an ``int`` if it is a non-negative integer (not a bool), else ``ValueError``
    naming the parameter ``name``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {seed!r}")
    return int(seed)

#: Seeds that random transforms draw from their ``self.R`` lie in ``[0, MAX_SEED)`` (a numpy int32 bound).
MAX_SEED = 2**31 - 1
