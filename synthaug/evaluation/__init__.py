"""Measuring cases and generators: per-case metrics, cohort evaluation and reports, previews."""
