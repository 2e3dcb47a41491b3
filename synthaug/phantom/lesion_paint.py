"""How one lesion is drawn and painted: its shape, its tissue and, on real scans, its appearance.

The phantom (:func:`synthaug.phantom.body.make_phantom`), the lesion prior of generated cases and
lesion insertion into real PET/CT (both :func:`synthaug.phantom.lesions.add_lesions`) draw every
lesion's shape with :func:`lesion_shape` and its tissue with :func:`lesion_tissue`; insertion and
the lesion prior take its uptake profile from :meth:`LesionAppearance.uptake_profile`, the phantom
from :func:`synthaug.phantom.body.lesion_uptake` (its own rule).

For insertion into a real scan, :class:`LesionAppearance` says how a lesion looks on the case's own
terms (docs/lesions.md, "Lesion insertion"): its uptake is set against the local background (the
median SUV of a shell 1-3 voxels around it), it is heterogeneous (a smooth random field) with an
infiltrative margin and a necrotic core in large lesions (fitted to the real sarcomas of
``shared/reference/real_pet``; the lesion prior of generated cases takes the same profile), blurred
by the scanner's PSF and given the scanner's count-dependent, correlated noise
(:mod:`synthaug.phantom.scanner`); its CT is drawn per site (soft tissue for nodes, soft-tissue lung
nodules, hypodense liver lesions, lytic or sclerotic bone) over the scan's own noise, with a
partial-volume edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .scanner import ScannerModel, correlated_noise, fwhm_to_sigma_voxels, get_scanner, noise_sd
from .shapes import Vol, ellipsoid, rotation
from .tables import CT_HU

__all__ = ["SCLEROTIC_FRACTION", "LesionAppearance", "lesion_ct", "lesion_shape", "lesion_tissue", "paint_uptake",
           "psf_reach_voxels", "shell"]

#: Share of bone lesions that are sclerotic (cortical-bone HU); the others are lytic (soft tissue).
SCLEROTIC_FRACTION = 0.3
#: Gaussian filters of the painter are cut at this many sds (the PSF's reach).
TRUNCATE = 3.0


def lesion_shape(vol: Vol, rng: np.random.Generator, centre, diameter_mm: float):
    """A lesion's shape around ``centre`` (world mm): a rotated ellipsoid whose semi-axes scatter by 12 %
    around ``diameter_mm / 2``, deformed by a smooth field. Returns ``(slices, r2)`` as
    :func:`synthaug.phantom.shapes.ellipsoid` (``r2 < 1`` inside), or ``(None, None)`` off the grid."""
    semi = diameter_mm / 2.0 * np.exp(rng.normal(0, 0.12, 3))
    rot = rotation(rng.normal(size=3), rng.normal(size=3))
    return ellipsoid(vol, rng, centre, semi, rot, deform=0.12 * float(semi.mean()), corr=float(semi.mean()) * 1.5)


def lesion_tissue(kind: str, rng: np.random.Generator) -> str:
    """The lesion's tissue (a :data:`synthaug.phantom.tables.CT_HU` key): ``"lesion"`` (soft tissue), or for
    bone lesions ``"cortical_bone"`` (sclerotic) in :data:`SCLEROTIC_FRACTION` of them (one draw, bone only)."""
    return "cortical_bone" if kind == "bone" and rng.random() < SCLEROTIC_FRACTION else "lesion"


def _pair(value, name: str, lo: float, hi: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (low, high), got {value!r}") from None
    if not (lo <= a <= b <= hi):
        raise ValueError(f"{name}: expected {lo} <= low <= high <= {hi}, got {value!r}")
    return a, b


@dataclass(frozen=True)
class LesionAppearance:
    """How inserted lesions look in a real scan (see the module docstring).

    ``necrosis`` gives the chance of a necrotic core: ``clip(necrosis_per_10mm * (diameter -
    necrosis_from_mm) / 10, 0, necrosis_max)``.

    The uptake defaults (heterogeneity, margin, necrosis) are the closest of a grid searched on the
    development half of the real tumour crops of ``shared/reference/real_pet``
    (``scripts/lesion_insertion_check.py --fit``, ``benchmarks/results/lesion_appearance_fit.json``;
    docs/lesions.md, "Against the real tumour crops").
    """

    scanner: ScannerModel | str = "default"          # PSF and noise of the scan (a preset name or a model)
    min_contrast: float = 1.5                         # peak SUV at least this x the local background
    heterogeneity_cov: float = 0.45                   # CoV of the smooth uptake field inside a lesion
    heterogeneity_fwhm_mm: float = 12.0               # its grain
    necrosis_from_mm: float = 20.0                    # lesions from this diameter may be necrotic
    necrosis_per_10mm: float = 0.5                    # chance per 10 mm above it
    necrosis_max: float = 0.95                        # at most this chance
    necrotic_radius: tuple[float, float] = (0.55, 0.85)  # core radius as a fraction of the lesion's
    necrotic_level: tuple[float, float] = (0.05, 0.3)   # core uptake as a fraction of the lesion's contrast
    margin_mm: tuple[float, float] = (8.0, 16.0)      # infiltrative margin: uptake tapers to the background over it
    margin_from_mm: float = 30.0                      # lesions from this diameter have one
    air_hu: float = -300.0                            # voxels below this HU never get a lesion (gas, air)
    lung_air_hu: float = -950.0                       # the same inside the lungs (airways)
    liver_hypodensity_hu: tuple[float, float] = (15.0, 45.0)  # a liver lesion this much below the liver
    ct_edge_fwhm_mm: float = 1.5                      # partial-volume edge of the lesion on the CT
    tries: int = 8                                    # places tried per lesion before it is left out

    def __post_init__(self) -> None:
        model = get_scanner(self.scanner)
        if model is None:
            raise ValueError("scanner: give a scanner model or preset; lesions need the scan's PSF and noise")
        object.__setattr__(self, "scanner", model)
        for name, lo, hi in (("min_contrast", 1.0, 100.0), ("heterogeneity_cov", 0.0, 2.0),
                             ("heterogeneity_fwhm_mm", 0.0, 200.0), ("necrosis_from_mm", 0.0, 1000.0),
                             ("margin_from_mm", 0.0, 1000.0),
                             ("necrosis_per_10mm", 0.0, 1.0), ("necrosis_max", 0.0, 1.0),
                             ("ct_edge_fwhm_mm", 0.0, 50.0), ("air_hu", -1100.0, 3000.0),
                             ("lung_air_hu", -1100.0, 3000.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"{name}: expected a number in [{lo}, {hi}], got {value!r}")
        object.__setattr__(self, "necrotic_radius", _pair(self.necrotic_radius, "necrotic_radius", 0.0, 1.0))
        object.__setattr__(self, "necrotic_level", _pair(self.necrotic_level, "necrotic_level", 0.0, 1.0))
        object.__setattr__(self, "margin_mm", _pair(self.margin_mm, "margin_mm", 0.0, 100.0))
        object.__setattr__(self, "liver_hypodensity_hu",
                           _pair(self.liver_hypodensity_hu, "liver_hypodensity_hu", -500.0, 500.0))
        if isinstance(self.tries, bool) or not isinstance(self.tries, int) or self.tries < 1:
            raise ValueError(f"tries: expected an integer >= 1, got {self.tries!r}")

    def necrosis_chance(self, diameter_mm: float) -> float:
        return float(np.clip(self.necrosis_per_10mm * (diameter_mm - self.necrosis_from_mm) / 10.0, 0.0,
                             self.necrosis_max))

    def uptake_profile(self, r2: np.ndarray, diameter_mm: float, spacing,
                       rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """A lesion's uptake as a fraction of its contrast at normalised radii² ``r2`` (< 1 inside), and
        whether it drew a necrotic core: ``(1 - 0.4 r²)`` (a core at :attr:`necrotic_level` in a
        necrotic lesion) x the infiltrative margin (:meth:`margin_taper`) x the heterogeneity
        ``max(1 + cov x field, 0.1)``, ``field`` a smooth unit-variance random field of
        :attr:`heterogeneity_fwhm_mm` grain. The heterogeneity is scaled to mean 1 inside the lesion: it
        moves uptake within a lesion, not the lesion's level, so a lesion smaller than the grain keeps
        its planned level (a lesion with no voxel inside, ``r2 >= 1`` everywhere, gets none)."""
        profile = 1.0 - 0.4 * np.clip(r2, 0.0, 1.0)
        necrotic = bool(rng.random() < self.necrosis_chance(diameter_mm))
        if necrotic:
            radius = rng.uniform(*self.necrotic_radius)
            profile = np.where(r2 < radius**2, rng.uniform(*self.necrotic_level), profile)
        profile = profile * self.margin_taper(r2, diameter_mm, rng)
        field = 1.0 + self.heterogeneity_cov * correlated_noise(np.shape(r2), spacing, self.heterogeneity_fwhm_mm, rng)
        field = np.maximum(field, 0.1)
        inside = r2 < 1
        field = field / float(field[inside].mean()) if inside.any() else np.ones_like(field)
        return profile * field, necrotic

    def margin_taper(self, r2: np.ndarray, diameter_mm: float, rng: np.random.Generator) -> np.ndarray | float:
        """The infiltrative margin: 1 in the lesion's body, falling smoothly (smoothstep) to 0 at its
        boundary over a width drawn from :attr:`margin_mm` (at most a quarter of the radius: with the
        default necrotic cores, at least two in three necrotic lesions keep a rim at full uptake between core and
        margin), for lesions of at least :attr:`margin_from_mm`; 1 everywhere (and no draw) for smaller
        ones or a zero margin."""
        if diameter_mm < self.margin_from_mm or self.margin_mm[1] <= 0.0:
            return 1.0
        radius = diameter_mm / 2.0
        width = min(rng.uniform(*self.margin_mm), 0.25 * radius)
        if width <= 0.0:
            return 1.0
        t = np.clip((1.0 - np.sqrt(np.clip(r2, 0.0, 1.0))) * radius / width, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)

    def not_air(self, ct: np.ndarray, in_lungs: np.ndarray) -> np.ndarray:
        """Where a lesion may grow: CT at least :attr:`lung_air_hu` in the lungs, :attr:`air_hu` elsewhere."""
        return ct >= np.where(in_lungs, self.lung_air_hu, self.air_hu)


def psf_reach_voxels(appearance: LesionAppearance, spacing) -> int:
    """How many voxels (along any axis) inserted uptake reaches beyond its lesion mask."""
    return max(int(TRUNCATE * s + 0.5) for s in fwhm_to_sigma_voxels(appearance.scanner.psf_fwhm_mm, spacing))


def shell(mask: np.ndarray) -> np.ndarray:
    """Voxels 2-3 dilations outside ``mask`` (the realism measures' surroundings: 1-3 voxels out)."""
    return ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(mask, iterations=1)


def paint_uptake(pet: np.ndarray, mask: np.ndarray, r2: np.ndarray, suvmax: float, diameter_mm: float,
                 appearance: LesionAppearance, spacing, weight_kg: float, rng: np.random.Generator) -> dict:
    """Add one lesion's uptake to ``pet`` (a box around the lesion, changed in place).

    The activity ``contrast x`` :meth:`LesionAppearance.uptake_profile` (heterogeneous, an infiltrative
    margin and a necrotic core in large lesions) goes inside ``mask``, where ``contrast = max(suvmax -
    bg, (min_contrast - 1) x bg)`` over the local background ``bg``; it is blurred by the scanner's PSF and gets the extra noise its counts
    bring (sd ``noise_sd(blurred activity)``, so the noise sd of background + lesion follows the
    scanner's sqrt law) in the scanner's texture. Voxels beyond the PSF's reach are left exactly as they were.
    """
    model = appearance.scanner
    around = shell(mask)
    bg = float(np.median(pet[around])) if around.any() else float(np.median(pet[mask]))
    bg = max(bg, 0.0)
    contrast = max(suvmax - bg, (appearance.min_contrast - 1.0) * bg)
    profile, necrotic = appearance.uptake_profile(r2, diameter_mm, spacing, rng)
    added = np.zeros(mask.shape, np.float32)
    added[mask] = contrast * profile[mask]
    sig = fwhm_to_sigma_voxels(model.psf_fwhm_mm, spacing)
    blurred = ndimage.gaussian_filter(added, sig, truncate=TRUNCATE, mode="constant")
    noise = noise_sd(blurred, model, weight_kg) * correlated_noise(mask.shape, spacing, model.noise_fwhm_mm, rng)
    reached = blurred > 0
    pet[reached] = np.maximum(pet[reached] + blurred[reached] + noise[reached], 0.0)
    return {"background_suv": round(bg, 3), "peak_suv": round(bg + contrast, 2), "necrotic": necrotic}


def lesion_ct(ct: np.ndarray, mask: np.ndarray, tissue: str, kind: str, organs_box: np.ndarray, liver_id: int,
              appearance: LesionAppearance, spacing, rng: np.random.Generator) -> float:
    """Write one lesion's CT into ``ct`` (a box, in place) and return its target HU.

    The target: soft tissue (:data:`synthaug.phantom.tables.CT_HU` ``"lesion"``) for nodes, soft-tissue
    and lung lesions and lytic bone; cortical bone for sclerotic bone; the surrounding liver's median
    HU minus ``liver_hypodensity_hu`` for liver lesions. Inside the lesion the scan's own fine noise is
    kept (the CT minus its local mean) and the lesion's texture added; a ``ct_edge_fwhm_mm`` blur of the
    mask gives the partial-volume edge.
    """
    hu, hu_sd, _ = CT_HU[tissue]
    if kind == "liver":
        around = shell(mask) & (organs_box == liver_id)
        liver = float(np.median(ct[around])) if around.any() else float(CT_HU["liver"][0])
        hu = liver - rng.uniform(*appearance.liver_hypodensity_hu)
    sig_edge = [appearance.ct_edge_fwhm_mm / 2.3548 / s for s in spacing]
    soft = ndimage.gaussian_filter(mask.astype(np.float32), sig_edge, truncate=2.0, mode="constant")
    soft[mask] = np.maximum(soft[mask], 0.75)  # every lesion voxel is mostly lesion
    local = ndimage.gaussian_filter(ct.astype(np.float32), [1.5] * 3, truncate=2.0, mode="nearest")
    texture = hu_sd * correlated_noise(mask.shape, spacing, 2.0 * max(spacing), rng)
    edge = soft > 0
    ct[edge] = np.clip(ct[edge] + soft[edge] * (hu + texture[edge] - local[edge]), -1024.0, 3071.0)
    return float(hu)
