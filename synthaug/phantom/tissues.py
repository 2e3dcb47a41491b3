"""Per-case tissue values of the phantom: each tissue's HU, texture, SUV and heterogeneity for one
person, drawn from the tables of :mod:`synthaug.phantom.tables` with the age, BMI and sex modifiers that
``docs/phantom.md`` lists (between-subject variation)."""

from __future__ import annotations

import math

import numpy as np

from .tables import CT_HU, PET_CV, PET_SUV, TISSUE_IDS, TISSUES, V1_TISSUES


def tissue_values(age: float, bmi: float, male: bool, rng: np.random.Generator, table: dict = PET_SUV,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Per-case (HU mean, HU texture sd, SUV mean, SUV texture cv) per version-1 tissue, SUVs from
    ``table`` (version 2: :data:`PET_SUV_V2`; the same draws), plus a summary."""
    n = len(TISSUES)
    hu = np.zeros(n, np.float32)
    hu_sd = np.zeros(n, np.float32)
    suv = np.zeros(n, np.float32)
    cv = np.full(n, 0.06, np.float32)
    for name in V1_TISSUES:
        m, sd, _ = CT_HU[name]
        i = TISSUE_IDS[name]
        hu[i] = m + (rng.normal(0, 3.0) if name not in ("air", "gas") else 0.0)
        hu_sd[i] = sd
    for name in V1_TISSUES:
        m, sd, _ = table[name]
        i = TISSUE_IDS[name]
        suv[i] = max(m + sd * rng.normal(), 0.3 * m) if m > 0 else 0.0
        cv[i] = PET_CV.get(name, 0.06)
    # CT modifiers.
    hu[TISSUE_IDS["trabecular_bone"]] = max(240.0 - 2.2 * (age - 30) - (1.0 * max(age - 50, 0) if not male else 0)
                                    + rng.normal(0, 15), 90.0)
    hu[TISSUE_IDS["cortical_bone"]] = 1000.0 - 3.0 * max(age - 40, 0) + rng.normal(0, 40)
    hu[TISSUE_IDS["muscle"]] += -0.25 * max(age - 40, 0) - 0.5 * max(bmi - 25, 0)
    steatosis = rng.random() < float(np.clip(0.1 + 0.04 * (bmi - 25), 0.05, 0.7))
    steat_drop = float(rng.uniform(10.0, 45.0)) if steatosis else 0.0
    hu[TISSUE_IDS["liver"]] -= steat_drop
    # PET modifiers.
    brain_f = float(np.clip(1 - 0.003 * (age - 40), 0.7, 1.15))
    for name in ("brain_gm", "brain_wm"):
        suv[TISSUE_IDS[name]] = table[name][0] * brain_f * math.exp(rng.normal(0, 0.12)) if name == "brain_gm" else \
            suv[TISSUE_IDS["brain_gm"]] * 0.4 * math.exp(rng.normal(0, 0.05))
    lean_f = float(np.clip((bmi / 25.0) ** 0.3, 0.8, 1.35))
    for name in ("liver", "blood", "spleen", "kidney", "trabecular_bone"):
        suv[TISSUE_IDS[name]] *= lean_f
    if rng.random() < 0.35:
        suv[TISSUE_IDS["myocardium"]] = rng.uniform(1.5, 3.0)
    else:
        suv[TISSUE_IDS["myocardium"]] = math.exp(rng.uniform(math.log(3.0), math.log(15.0)))
    suv[TISSUE_IDS["renal_pelvis"]] = float(np.clip(np.exp(rng.normal(math.log(8.0), 0.6)), 3.0, 40.0))
    suv[TISSUE_IDS["bladder_urine"]] = float(np.clip(np.exp(rng.normal(math.log(15.0), 0.6)), 4.0, 60.0))
    suv[TISSUE_IDS["trabecular_bone"]] *= float(np.clip(1 + 0.004 * (40 - age), 0.8, 1.15))
    summary = {"steatosis_hu_drop": round(steat_drop, 1),
               "suv": {k: round(float(suv[TISSUE_IDS[k]]), 3) for k in ("liver", "blood", "myocardium", "brain_gm",
                                                                  "bladder_urine", "renal_pelvis")},
               "hu": {k: round(float(hu[TISSUE_IDS[k]]), 1) for k in ("liver", "muscle", "trabecular_bone", "cortical_bone")}}
    return hu, hu_sd, suv, cv, summary


def version2_values(hu: np.ndarray, hu_sd: np.ndarray, suv: np.ndarray, cv: np.ndarray, age: float,
                    rng: np.random.Generator) -> dict:
    """Per-case values of the version-2 tissues, written into the per-tissue arrays; returns a summary.

    Tonsils: SUVmean 3.4 +- 1.2, falling with age (Zincirkeser et al., Mol Imaging Biol 2007, found both).
    Ureters: a share of the renal pelvis's urine activity.
    """
    for name in ("tonsil", "ureter"):
        i = TISSUE_IDS[name]
        hu[i] = CT_HU[name][0] + rng.normal(0, 3.0)
        hu_sd[i] = CT_HU[name][1]
        cv[i] = PET_CV[name]
    mean, sd, _ = PET_SUV["tonsil"]
    age_f = float(np.clip(1 - 0.006 * (age - 50), 0.7, 1.2))
    suv[TISSUE_IDS["tonsil"]] = float(np.clip((mean + sd * rng.normal()) * age_f, 1.5, 8.0))
    suv[TISSUE_IDS["ureter"]] = suv[TISSUE_IDS["renal_pelvis"]] * float(rng.uniform(0.2, 1.0))
    return {k: round(float(suv[TISSUE_IDS[k]]), 3) for k in ("tonsil", "ureter")}
