"""The parametric phantom (body, organs, uptake, imaging) and the diagnosis-conditioned lesion model."""

from .body import impute_demographics, make_phantom

__all__ = ["impute_demographics", "make_phantom"]
