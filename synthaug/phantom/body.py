"""Parametric, demography-driven whole-body 18F-FDG PET/CT phantom.

:func:`make_phantom` turns a person's demographics (age, sex, height, weight,
diagnosis) into a :class:`~synthaug.core.case.Case`: CT in HU, PET in SUV (body weight),
the synthaug organ map and a lesion mask, on any :class:`~synthaug.core.grid.Grid`.
It is the built-in training data of the diffusion models and the "conventional
phantom" baseline. See ``docs/phantom.md`` for the anatomy, the tissue tables and
their sources, and the limitations (no lower legs, no patient table, ...).

Conventions: arrays are (X, Y, Z), RAS+ world coordinates in mm (nibabel's
convention: +x towards the patient's **right**, +y anterior, +z towards the head).
The liver therefore lies at larger world x than the spleen. The vertex of the head
sits near the top of the field of view and the scan ends at the upper thigh.

Every random draw comes from ``np.random.default_rng(seed)`` (split into independent
streams for anatomy, tissue values, lesions, texture and noise), so the same seed and
demographics give identical arrays; the anatomy is defined in mm, independent of
the grid it is sampled on. ``version`` picks the anatomy: 1 is what the shipped demo weights were
trained on (kept bit for bit), 2 adds arms and FDG-visible structures (:mod:`.arms`,
:mod:`.structures`) and images the PET with the scanner model (:mod:`.scanner`).

The anatomy is built part by part: the grid-free body plan with its spine and diaphragm
(:mod:`.bodyplan`), the outline and body cavity (:mod:`.torso`), the organs (:mod:`.organs`), the
head (:mod:`.head`), the skeleton (:mod:`.skeleton`) and the lesions (:mod:`.lesion_plan`). Each
part paints into the volume and returns a small frozen record of the landmarks later parts need;
:func:`make_phantom` passes them on, in the order the random draws are made.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.case import Case
from ..core.demographics import DIAGNOSES, Demographics
from ..core.grid import Grid, get_preset
from ..core.seeds import check_seed
from .arms import ArmLandmarks, paint_arms
from .bodyplan import (
    SCAN_END_S,
    TRUNK_S,
    BodyPlan,
    Placement,
    SpineLandmarks,
    diaphragm_landmarks,
    place_body,
    spine_landmarks,
)
from .head import paint_head
from .lesion_plan import draw_diagnosis, lesion_plan, lesion_uptake, node_chains, place_lesions
from .organs import OrganLandmarks, paint_airways, paint_organs, psoas_radius
from .scanner import PHANTOM_V1_IMAGING, ScannerModel, apply_scanner, get_scanner, phantom_ct, phantom_v1_pet
from .shapes import Field, Vol
from .skeleton import paint_skeleton
from .structures import HeadLandmarks, UrinaryLandmarks, paint_head_structures, paint_ureters, ureter_path
from .tables import PET_SUV, PET_SUV_V2
from .tissues import tissue_values, version2_values
from .torso import TorsoLandmarks, paint_cavity, paint_torso, paint_visceral

#: Anatomy versions (``make_phantom(version=...)``) and the string their cases record: 1 is the phantom the
#: demo weights' first six phases were trained on (bit for bit), 2 adds arms, structures, the liver re-check and
#: the scanner (the demo weights' phase 7 was fine-tuned on it, its PET without the scanner), 3 sizes version 2's
#: body to the mass and air its field of view holds and ends the scan between upper and mid-thigh.
PHANTOM_VERSIONS = {1: "1.0", 2: "2.0", 3: "3.0"}
DEFAULT_PHANTOM_VERSION = 3
PHANTOM_VERSION = PHANTOM_VERSIONS[DEFAULT_PHANTOM_VERSION]

__all__ = ["ANATOMY_FOV_MM", "DEFAULT_PHANTOM_VERSION", "PHANTOM_VERSION", "PHANTOM_VERSIONS", "SCAN_END_S",
           "draw_diagnosis", "impute_demographics", "lesion_plan", "lesion_rng", "lesion_uptake", "make_phantom"]

# --- demographics ------------------------------------------------------------------------------


def _check_demographics(demographics: Demographics) -> Demographics:
    if not isinstance(demographics, Demographics):
        raise ValueError(f"demographics: expected a synthaug Demographics, got {type(demographics).__name__}")
    missing = [f for f in ("age", "sex", "height_cm", "weight_kg") if getattr(demographics, f) is None]
    if missing:
        raise ValueError(
            f"the phantom needs age, sex, height_cm and weight_kg; missing: {', '.join(missing)} "
            "(impute them first, e.g. with synthaug.phantom.body.impute_demographics)"
        )
    if demographics.age < 18:
        raise ValueError(f"age={demographics.age:g}: the phantom models adults only (age 18-120)")
    if not 120.0 <= demographics.height_cm <= 230.0:
        raise ValueError(f"height_cm={demographics.height_cm:g}: the phantom models adult heights 120-230 cm")
    bmi = demographics.bmi
    if not 12.0 <= bmi <= 70.0:
        raise ValueError(f"BMI={bmi:.1f} (weight {demographics.weight_kg:g} kg at {demographics.height_cm:g} cm) "
                         "is outside the phantom's range 12-70 kg/m^2")
    return demographics


def impute_demographics(demographics: Demographics, seed: int) -> Demographics:
    """Fill unknown age/sex/height/weight from the AutoPET-like population model.

    Known fields are kept; the diagnosis is left as it is (the phantom draws an unknown
    diagnosis from the AutoPET mix). Deterministic in ``seed``.
    """
    from ..core.demographics import HEIGHT_BY_SEX, LOG_BMI_BY_SEX, MALE_FRACTION

    rng = np.random.default_rng(seed)
    d = demographics
    sex = d.sex or ("M" if rng.random() < MALE_FRACTION else "F")
    age = d.age if d.age is not None else float(np.clip(rng.normal(60.0, 14.0), 18.0, 92.0))
    height = d.height_cm if d.height_cm is not None else float(np.clip(rng.normal(*HEIGHT_BY_SEX[sex]), 140, 205))
    if d.weight_kg is None:
        mu, sd = LOG_BMI_BY_SEX[sex]
        weight = float(np.clip(np.exp(rng.normal(mu, sd)), 15.0, 50.0)) * (height / 100.0) ** 2
    else:
        weight = d.weight_kg
    return Demographics(round(age, 1), sex, round(height, 1), round(weight, 1), d.diagnosis)


# --- the case ---------------------------------------------------------------------------------------


def _streams(seed: int, n: int = 5) -> list[np.random.Generator]:
    """Independent child streams of ``seed``: anatomy, tissue values, lesions, texture, noise (the first
    five, as in version 1) and version 2's additions (the sixth)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def lesion_rng(seed: int) -> np.random.Generator:
    """The stream :func:`make_phantom` draws a case's lesions from (after the diagnosis, when it
    draws that too): with it, :func:`synthaug.phantom.lesions.add_lesions` follows the phantom's lesion plan."""
    return _streams(seed)[2]


def make_phantom(demographics: Demographics, *, preset: str = "demo", grid: Grid | None = None, seed: int,
                 version: int = DEFAULT_PHANTOM_VERSION, scanner: ScannerModel | str | None = "default") -> Case:
    """Synthesise one whole-body FDG PET/CT case with organ and lesion labels.

    Args:
        demographics: age, sex, height and weight must be known (else ``ValueError``;
            see :func:`impute_demographics`). An unknown diagnosis is drawn from the
            AutoPET mix (recorded in ``meta["diagnosis"]``).
        preset: grid preset used when ``grid`` is not given (``"demo"``: 128x128x256 at 4 mm).
        grid: any output grid; the body is placed in mm (vertex near the top of the FOV).
        seed: all randomness comes from ``np.random.default_rng(seed)``.
        version: the anatomy (:data:`PHANTOM_VERSIONS`): 3 (default) is version 2 sized to what a
            whole-body scan's field of view holds; 2 adds arms, FDG-visible structures and the re-checked
            tissue values; 1 is what the demo weights' first six phases were trained on, bit for bit.
        scanner: how the PET is imaged: ``"default"`` (versions 2-3: the scanner model's default preset;
            version 1: its own 6 mm PSF and noise), a preset name or :class:`~synthaug.phantom.scanner.ScannerModel`,
            or ``None`` / ``"off"`` (the activity, no blur or noise). Recorded in ``meta["scanner"]``.

    Returns:
        A :class:`Case` with float32 ``ct`` (HU) and ``pet`` (SUV_bw), uint8 ``organs``
        (synthaug organ map) and ``lesions`` (0/1), and provenance in ``meta``.
    """
    d = _check_demographics(demographics)
    seed = check_seed(seed)
    if isinstance(version, bool) or version not in PHANTOM_VERSIONS:
        raise ValueError(f"version={version!r}: choose one of {sorted(PHANTOM_VERSIONS)}")
    v1_imaging = version == 1 and isinstance(scanner, str) and scanner == "default"
    model = None if v1_imaging else get_scanner(scanner)
    out_grid = _output_grid(preset, grid)
    r_anat, r_tissue, r_lesion, r_tex, r_noise, r_v2 = _streams(seed, 6)
    diagnosis = d.diagnosis
    drawn = diagnosis is None
    if drawn:
        diagnosis = draw_diagnosis(r_lesion)
    assert diagnosis in DIAGNOSES

    # The anatomy, part by part: each paints into the volume and returns the landmarks later parts need.
    body = BodyPlan(d, r_anat, version=version)
    vol = Vol(_anatomy_grid(out_grid))
    place, spine, diaphragm = place_body(vol, body), spine_landmarks(body), diaphragm_landmarks(body)
    torso = paint_torso(vol, place, body, r_anat)
    cavity = paint_cavity(vol, place, body, torso, spine, diaphragm, r_anat)
    organs = paint_organs(vol, place, body, torso, spine, diaphragm, r_anat)
    paint_airways(vol, place, body, spine)
    head = paint_head(vol, place, body, r_anat)
    paint_skeleton(vol, place, body, torso, spine, r_anat)
    paint_visceral(vol, body, cavity)
    sat_mask, added = torso.sat_mask, {}
    if version >= 2:
        sat_mask, added = _version2_anatomy(vol, place, body, torso, spine, head, organs, r_v2)

    # Tissue values; PET activity: tissue uptake with smooth heterogeneity, then lesions; then the imaging.
    hu, hu_sd, suv, cv, tissue_summary = tissue_values(body.age, body.bmi, body.male, r_tissue,
                                                        PET_SUV if version == 1 else PET_SUV_V2)
    if version >= 2:
        tissue_summary["suv"].update(version2_values(hu, hu_sd, suv, cv, body.age, r_v2))
    het = Field(r_tex, (-300.0, -300.0, place.zw(body.s_end * body.H) - 20), (300.0, 300.0, place.z_vertex + 20),
                14.0)(vol.x, vol.y, vol.z)
    pet = suv[vol.tis] * np.maximum(1.0 + cv[vol.tis] * het, 0.1)
    chains = node_chains(place, body, torso, spine, organs.aorta)
    lesions, lesion_info = place_lesions(vol, lesion_plan(diagnosis, r_lesion), chains, sat_mask, pet, r_lesion)
    if v1_imaging:
        pet = phantom_v1_pet(pet, vol.spacing, body.W, r_noise)
    else:
        pet = apply_scanner(pet, vol.spacing, model, body.W, rng=r_noise)
    ct = phantom_ct(hu[vol.tis], hu_sd[vol.tis], vol.spacing, body.W, r_tex, r_noise)

    meta = {"source": "phantom", "seed": seed, "generator": "phantom", "phantom_version": PHANTOM_VERSIONS[version],
            "preset": preset if grid is None else None, "grid": out_grid.to_dict(), "diagnosis": diagnosis,
            "diagnosis_drawn": drawn, "body": {**_body_summary(body, place), **added}, "tissues": tissue_summary,
            "scanner": dict(PHANTOM_V1_IMAGING) if v1_imaging else (None if model is None else model.to_dict()),
            "lesions": lesion_info}
    return _stored_case(ct, pet, vol, lesions, out_grid, d, meta)


def _output_grid(preset: str, grid: Grid | None) -> Grid:
    out_grid = get_preset(preset).output_grid
    if grid is not None:
        if not isinstance(grid, Grid):
            raise ValueError(f"grid: expected a synthaug Grid, got {type(grid).__name__}")
        out_grid = grid
    return out_grid


def _body_summary(body: BodyPlan, place: Placement) -> dict:
    """The body plan's composition and placement, for ``meta["body"]``."""
    return {"bmi": round(body.bmi, 2), "body_fat_fraction": round(body.body_fat, 3),
            "sat_l": round(body.sat_l, 2), "vat_l": round(body.vat_l, 2),
            "vertex_z_mm": round(place.z_vertex, 1), "scan_end_z_mm": round(place.zw(body.s_end * body.H), 1),
            "lean_scale": round(body.k, 3), "sat_thickness_mm": round(body.t0, 1)}


def _stored_case(ct: np.ndarray, pet: np.ndarray, vol: Vol, lesions: np.ndarray, out_grid: Grid, d: Demographics,
                 meta: dict) -> Case:
    """The case on the requested grid (cropped from the centre of the anatomy's), stored like scanners
    store: whole HU for CT, 1/512 SUV steps for PET (far below the noise); this also makes the NIfTI
    files compress 2-3x better."""
    np.rint(ct, out=ct)
    pet = np.rint(pet * 512.0) / np.float32(512.0)
    crop = tuple(slice((nb - n) // 2, (nb - n) // 2 + n) for nb, n in zip(vol.shape, out_grid.shape))
    ct, pet, organs, lesions = ct[crop], pet[crop], vol.org[crop], lesions[crop]
    return Case(ct=np.ascontiguousarray(ct, dtype=np.float32), pet=np.ascontiguousarray(pet, dtype=np.float32),
                organs=np.ascontiguousarray(organs), lesions=np.ascontiguousarray(lesions), affine=out_grid.affine,
                demographics=d, meta=meta)


# --- version 2's additions -----------------------------------------------------------------------------


def _version2_anatomy(vol: Vol, place: Placement, body: BodyPlan, torso: TorsoLandmarks, spine: SpineLandmarks,
                      head: HeadLandmarks, organs: OrganLandmarks, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Version 2's additions to the painted body: arms, then the head and urinary structures; returns
    the subcutaneous fat with the arms' and their summary for ``meta["body"]``."""
    arms = paint_arms(vol, _arm_landmarks(place, body, torso), rng)
    paint_head_structures(vol, head, rng)
    shares = paint_ureters(vol, _urinary_landmarks(place, body, spine, organs), rng)
    return torso.sat_mask | arms.fat, {"arms": arms.meta, "ureter_filled_share": shares}


def _arm_landmarks(place: Placement, b: BodyPlan, torso: TorsoLandmarks) -> ArmLandmarks:
    """The body's outer half-width per depth (trunk, neck, head, thighs; right and left) and what else the arms need."""
    s = np.arange(-0.05, 0.70, 0.002)
    t = s * b.H
    al, ar, _, bp = b.trunk_lean(s)
    sl, _, sp = b.sat(s)
    trunk = (s >= TRUNK_S[0]) & (s <= min(TRUNK_S[1], b.s_end))
    neck = np.where((t >= b.t_chin - 45) & (s <= 0.175), b.neck()[0] + 0.45 * b.t0, 0.0)
    head = (b.brain_base[0] + 15) * np.sqrt(np.clip(1 - ((t - b.t_brain) / (b.brain_base[2] + 15)) ** 2, 0, 1))
    face = b.face_semi[0] * np.sqrt(np.clip(1 - ((t - b.face_c[2]) / b.face_semi[2]) ** 2, 0, 1))
    thigh = np.where((s >= 0.46) & (s <= b.s_end), torso.x_hip + 10.0 * b.k + b.thigh(s)[0] + b.sat_w["thigh"] * b.t0, 0.0)
    common = np.maximum.reduce([neck, head, face, thigh])
    half = np.stack([np.maximum(np.where(trunk, side + sl, 0.0), common) for side in (ar, al)])
    i30 = int(np.argmin(np.abs(s - 0.30)))
    return ArmLandmarks(height_mm=b.H, weight_kg=b.W, male=b.male, body_fat=b.body_fat, bone_scale=b.k_bone,
                        z_vertex=place.z_vertex, s_end=b.s_end, s=s, half_width=half, y_back=-float(bp[i30] + sp[i30]),
                        y_head=float(b.y_brain))


def _urinary_landmarks(place: Placement, body: BodyPlan, spine: SpineLandmarks, organs: OrganLandmarks) -> UrinaryLandmarks:
    """Each ureter's path: renal pelvis, the front of the psoas at L4 and at the pelvic brim, the bladder."""
    paths = []
    for kidney, sign in zip(organs.kidneys, (1.0, -1.0)):
        psoas = []
        for s_, out in ((0.40, 1.0), (0.445, 0.5)):
            rp = float(psoas_radius(body, s_))
            y = float(spine.y(s_)) + 4.0 + rp + (3.0 if out == 1.0 else 10.0)
            psoas.append(np.array([sign * (float(spine.vert_a(s_)) + out * rp + 2.0), y, place.zw(s_ * body.H)]))
        paths.append(ureter_path(kidney.pelvis, psoas, organs.bladder_centre, organs.bladder_semi, sign))
    return UrinaryLandmarks(paths=tuple(paths))


#: The smallest field of view (mm) the anatomy is built on: the whole body, head to thigh.
ANATOMY_FOV_MM = (512.0, 512.0, 1024.0)


def _anatomy_grid(grid: Grid) -> Grid:
    """``grid`` extended (same spacing, same voxel centres) to at least :data:`ANATOMY_FOV_MM`.

    The body is always built whole and the requested grid is cropped from its centre, so a
    small field of view (e.g. an abdominal CT grid) shows the mid-trunk instead of failing.
    """
    shape = []
    for n, sp, fov in zip(grid.shape, grid.spacing, ANATOMY_FOV_MM):
        if n * sp >= fov:
            shape.append(n)
            continue
        m = int(math.ceil(fov / sp))
        m += (m - n) % 2  # keep voxel centres aligned with the requested grid
        shape.append(m)
    return grid if tuple(shape) == grid.shape else Grid(tuple(shape), grid.spacing)
