"""Core data types and I/O: cases, grids, the organ map, demographics, NIfTI cohorts, checkpoints.

Imports nothing else of synthaug; every other subpackage builds on it.
"""
