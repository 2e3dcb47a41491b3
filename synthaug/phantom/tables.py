"""The phantom's tissue tables: CT and FDG uptake per tissue with their sources, the organ-level
ranges the phantom is tested to stay in, and the lesion model per diagnosis (``docs/phantom.md``)."""

from __future__ import annotations

#: Tissue classes of the phantom (finer than the organ map; they set CT and PET values).
TISSUES: tuple[str, ...] = (
    "air", "fat", "muscle", "soft_tissue", "bowel", "gas", "cortical_bone", "trabecular_bone",
    "yellow_marrow", "cartilage", "brain_gm", "brain_wm", "csf", "lung", "myocardium", "blood",
    "liver", "spleen", "kidney", "renal_pelvis", "bladder_urine", "gland", "spinal_cord", "lesion",
    # phantom version 2 (their values are drawn after version 1's, so version 1 stays as it was)
    "tonsil", "ureter",
)
TISSUE_IDS = {name: i for i, name in enumerate(TISSUES)}
#: The tissues of phantom version 1, whose per-case values are drawn first and in this order.
V1_TISSUES: tuple[str, ...] = TISSUES[:24]

#: CT attenuation per tissue: (mean HU, within-tissue texture sd HU, source). Age, BMI and
#: steatosis modifiers are applied per case (see ``docs/phantom.md``).
CT_HU: dict[str, tuple[float, float, str]] = {
    "air": (-1000.0, 0.0, "definition of the Hounsfield scale"),
    "fat": (-100.0, 12.0, "textbook HU tables: -120 to -80 HU (e.g. Radiopaedia 'Hounsfield unit')"),
    "muscle": (45.0, 10.0, "textbook 35-55 HU; lowered with age/BMI (myosteatosis, Goodpaster 2000)"),
    "soft_tissue": (35.0, 12.0, "generic unenhanced soft tissue 20-50 HU"),
    "bowel": (25.0, 20.0, "bowel wall and fluid content, 0-50 HU"),
    "gas": (-950.0, 25.0, "intraluminal gas, close to air"),
    "cortical_bone": (1000.0, 150.0, "cortical bone >700 HU at 3-4 mm voxels; -3 HU/yr after 40"),
    "trabecular_bone": (240.0, 40.0, "L1 trabecular 150-300 HU, falling ~2 HU/yr (Pickhardt 2013)"),
    "yellow_marrow": (-40.0, 30.0, "fatty medullary cavity of long bones, -100 to 0 HU"),
    "cartilage": (90.0, 15.0, "intervertebral disc / costal cartilage 70-110 HU"),
    "brain_gm": (40.0, 4.0, "grey matter 35-45 HU"),
    "brain_wm": (28.0, 4.0, "white matter 20-30 HU"),
    "csf": (8.0, 4.0, "CSF 0-15 HU"),
    "lung": (-850.0, 35.0, "aerated lung -900 to -700 HU"),
    "myocardium": (45.0, 8.0, "unenhanced myocardium 40-50 HU"),
    "blood": (42.0, 6.0, "unenhanced blood 35-50 HU (haematocrit dependent)"),
    "liver": (56.0, 7.0, "unenhanced liver 50-65 HU; steatosis lowers it (Kodama 2007)"),
    "spleen": (46.0, 6.0, "unenhanced spleen 40-50 HU, ~8-10 HU below liver"),
    "kidney": (32.0, 8.0, "unenhanced renal parenchyma 25-35 HU"),
    "renal_pelvis": (10.0, 5.0, "urine 0-20 HU"),
    "bladder_urine": (8.0, 5.0, "urine 0-20 HU"),
    "gland": (40.0, 10.0, "salivary glands / tonsils 30-50 HU"),
    "spinal_cord": (30.0, 6.0, "cord and CSF in the canal"),
    "lesion": (38.0, 10.0, "FDG-avid soft-tissue lesions 30-45 HU unenhanced"),
    "tonsil": (45.0, 10.0, "lymphoid tissue of Waldeyer's ring, soft tissue 35-55 HU"),
    "ureter": (10.0, 5.0, "urine 0-20 HU"),
}

#: FDG uptake per tissue: (mean SUV_bw at ~60 min p.i., between-subject sd, source).
#: Brain falls with age, lean organs rise with BMI, myocardium / urine are drawn from wide
#: distributions (see ``docs/phantom.md``).
PET_SUV: dict[str, tuple[float, float, str]] = {
    "air": (0.0, 0.0, "no activity"),
    "fat": (0.35, 0.08, "subcutaneous/visceral fat SUV 0.2-0.5 (normal biodistribution studies)"),
    "muscle": (0.75, 0.15, "resting skeletal muscle SUV 0.5-1.0"),
    "soft_tissue": (1.0, 0.2, "mediastinal / neck soft tissue ~1"),
    "bowel": (1.6, 0.4, "bowel 1-3, patchy (physiological uptake)"),
    "gas": (0.0, 0.0, "no activity"),
    "cortical_bone": (0.45, 0.1, "cortical bone ~0.5"),
    "trabecular_bone": (1.7, 0.3, "red marrow (vertebrae, pelvis) 1.3-2.2"),
    "yellow_marrow": (0.55, 0.1, "fatty marrow ~0.5"),
    "cartilage": (0.6, 0.1, "discs / cartilage ~0.6"),
    "brain_gm": (9.0, 1.4, "cortical grey matter 7-11 at 40 y; -0.3 %/yr (Kuhl 1982, Petit-Taboue 1998)"),
    "brain_wm": (3.6, 0.6, "white matter 3-4.5"),
    "csf": (0.6, 0.15, "CSF ~0.5"),
    "lung": (0.5, 0.1, "lung parenchyma 0.4-0.7"),
    "myocardium": (4.0, 3.5, "highly variable 1.5-15 with fasting state (EANM guideline 2015)"),
    "blood": (1.8, 0.25, "mediastinal blood pool 1.5-2.0 (PERCIST, Wahl 2009)"),
    "liver": (2.3, 0.35, "liver 2.0-2.5, reference region (PERCIST; EANM guideline 2015)"),
    "spleen": (1.9, 0.3, "spleen ~0.8x liver, 1.5-2.3"),
    "kidney": (3.0, 0.6, "renal parenchyma 2.5-4"),
    "renal_pelvis": (8.0, 0.6, "urine in the collecting system, log-normal 3-40"),
    "bladder_urine": (15.0, 0.6, "bladder urine, log-normal 4-60"),
    "gland": (2.2, 0.5, "salivary glands / tonsils 1.5-3.5"),
    "spinal_cord": (1.4, 0.25, "spinal cord 1.2-1.8"),
    "lesion": (0.0, 0.0, "per lesion: SUVmax 3-25 (see lesion model)"),
    "tonsil": (3.4, 1.2, "palatine tonsils SUVmean 3.45 +- 1.4 (Zincirkeser et al., Mol Imaging Biol 2007)"),
    "ureter": (0.0, 0.0, "urine in the ureters: per case a fraction 0.2-1 of the renal pelvis's (peristalsis)"),
}

#: Version 2's changes to :data:`PET_SUV` (same draws, other mean / sd): the liver re-checked against
#: the literature and the real PET in ../shared/reference/real_pet (VOI SUVmean 2.05).
PET_SUV_V2_CHANGES: dict[str, tuple[float, float, str]] = {
    "liver": (2.05, 0.35, "right-lobe 3 cm VOI SUVmean 1.85-1.89 +- 0.41 in 343 normal livers (Liu et al., "
                          "Iran J Radiol 2019); 2.0-2.5 typical reference (PERCIST, Wahl 2009; EANM 2015)"),
}
PET_SUV_V2: dict[str, tuple[float, float, str]] = {**PET_SUV, **PET_SUV_V2_CHANGES}

#: Within-tissue PET heterogeneity (coefficient of variation of a smooth field).
PET_CV = {"bowel": 0.45, "myocardium": 0.15, "muscle": 0.15, "gland": 0.2, "lung": 0.15,
           "trabecular_bone": 0.12, "fat": 0.15, "soft_tissue": 0.12, "liver": 0.06, "spleen": 0.06,
          "tonsil": 0.15, "ureter": 0.3}

#: Arm segments (de Leva, J Biomech 1996: mass as % of body mass, men / women; Drillis & Contini 1966:
#: length as a fraction of height): upper arm, forearm, hand.
ARM_SEGMENTS: dict[str, dict[str, float]] = {
    "upper_arm": {"M": 2.71, "F": 2.55, "length": 0.186},
    "forearm": {"M": 1.62, "F": 1.38, "length": 0.146},
    "hand": {"M": 0.61, "F": 0.56, "length": 0.108},
}
#: Probability that a case has its arms raised above the head. A stated choice: guidelines advise arms up
#: for trunk imaging to avoid beam-hardening artefacts, arms down for head-and-neck imaging (Boellaard et
#: al., EANM guideline 2015), and most AutoPET whole-body scans are trunk-oriented oncology scans.
ARMS_UP_PROBABILITY = 0.7

#: Organ-level ranges the phantom is designed (and tested) to stay in: median HU and mean
#: SUV over each organ, eroded by one voxel. Liver HU reaches down to 5 for steatosis.
ORGAN_HU_RANGE: dict[str, tuple[float, float]] = {
    "body_fat": (-130, -60), "soft_tissue": (0, 70), "bone": (80, 1200), "brain": (20, 45),
    "lungs": (-920, -700), "heart": (30, 60), "liver": (5, 70), "spleen": (30, 60),
    "kidneys": (10, 45), "urinary_bladder": (-10, 30), "aorta": (25, 60),
}
ORGAN_SUV_RANGE: dict[str, tuple[float, float]] = {
    "body_fat": (0.1, 0.8), "soft_tissue": (0.4, 2.0), "bone": (0.5, 2.5), "brain": (3.0, 11.0),
    "lungs": (0.2, 1.0), "heart": (1.0, 16.0), "liver": (1.3, 3.8), "spleen": (1.0, 3.2),
    "kidneys": (1.5, 12.0), "urinary_bladder": (2.5, 60.0), "aorta": (0.9, 3.0),
}

#: Lesion model per diagnosis: mean count, median diameter (mm), median SUVmax.
LESION_MODEL: dict[str, dict[str, float]] = {
    "LYMPHOMA": {"mean_count": 8.0, "median_diameter_mm": 18.0, "median_suvmax": 9.0},
    "MELANOMA": {"mean_count": 5.0, "median_diameter_mm": 14.0, "median_suvmax": 7.0},
    "LUNG_CANCER": {"mean_count": 4.0, "median_diameter_mm": 16.0, "median_suvmax": 9.0},
    "NEGATIVE": {"mean_count": 0.0, "median_diameter_mm": 0.0, "median_suvmax": 0.0},
}
LESION_DIAMETER_MM = (5.0, 50.0)
LESION_SUVMAX = (3.0, 25.0)
