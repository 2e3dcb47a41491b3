"""PET as a scanner sees it: resolution (PSF) and count-dependent, spatially correlated noise.

The networks and the phantom model the *activity* (SUV); a :class:`ScannerModel` models the
*acquisition*: the image is blurred with the reconstructed point-spread function, then noise is
added whose standard deviation follows the local activity (Poisson-like, ``sd ∝ sqrt(SUV)``), the
scan time (``sd ∝ 1/sqrt(t)``) and the patient's weight (``sd ∝ sqrt(weight)`` under the usual
weight-proportional FDG dose), and whose texture is that of reconstructed PET (white noise
filtered with a Gaussian, normalised so that the stated CoV holds voxel-wise at any spacing).

Arrays are (X, Y, Z) with Z the scanner's axial direction, as in every synthaug case; the
transaxial FWHM applies to the first two axes, the axial FWHM to the third. Spacings in mm.

Non-negativity: PET in SUV cannot be negative, so the noisy image is clipped at 0. Clipping a
Gaussian of mean ``m`` and sd ``s`` raises its mean by ``s·φ(m/s) - m·Φ(-m/s)``: under 0.5 % of
``m`` where the local CoV is at most 0.5 (SUV above about 0.2 at the default noise level), and
air stays exactly 0 (no activity, no noise). Presets and their sources: ``docs/realism.md``.

The phantom's own imaging lives here too: version 1's fixed PET imaging (white noise, then a 6 mm
PSF; kept bit for bit for the weights trained on it) and the phantom's CT (texture, a slight
partial-volume blur and quantum noise).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from scipy import ndimage

from ..core.seeds import check_seed

__all__ = [
    "DEFAULT_SCANNER",
    "SCANNER_PRESETS",
    "ScannerModel",
    "PHANTOM_V1_IMAGING",
    "apply_scanner",
    "blur",
    "ct_noise_sd",
    "correlated_noise",
    "fwhm_to_sigma_voxels",
    "get_scanner",
    "noise_sd",
    "pet_noise_factor",
    "phantom_ct",
    "phantom_v1_pet",
    "psf_sigma_voxels",
]

#: FWHM / sd of a Gaussian.
FWHM_PER_SD = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _triple(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    """``value`` as an (x, y, z) tuple of floats (a scalar means isotropic)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        out = (float(value),) * 3
    else:
        try:
            out = tuple(float(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a number or 3 numbers (x, y, z), got {value!r}") from None
        if len(out) != 3:
            raise ValueError(f"{name}: expected 3 values (x, y, z), got {len(out)}")
    if not all(math.isfinite(v) and v >= 0 for v in out):
        raise ValueError(f"{name}: values must be finite and >= 0 mm, got {out}")
    return out  # type: ignore[return-value]


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing: expected 3 voxel sizes in mm, got {spacing!r}") from None
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing: expected 3 positive voxel sizes in mm, got {spacing!r}")
    return sp  # type: ignore[return-value]


@dataclass(frozen=True)
class ScannerModel:
    """One PET scanner + protocol: resolution, noise level and noise texture.

    The noise CoV ``noise_cov`` holds in a uniform region of SUV ``reference_suv`` for a patient
    of ``reference_weight_kg`` scanned for ``reference_time_s`` per bed position; other values
    scale it as ``sqrt(reference_suv / suv) * sqrt(reference_time_s / scan_time_s_per_bed) *
    (weight / reference_weight_kg) ** weight_exponent``.
    """

    name: str = "custom"                                      # a label recorded in case metadata
    psf_fwhm_mm: tuple[float, float, float] = (8.0, 8.0, 8.0)  # reconstructed-image resolution (x, y, z)
    noise_cov: float = 0.15                                   # voxel CoV at the reference conditions
    noise_fwhm_mm: tuple[float, float, float] = (6.0, 6.0, 4.0)  # Gaussian kernel that colours the noise
    reference_suv: float = 2.0                                # uniform SUV at which noise_cov holds
    reference_time_s: float = 180.0                           # per-bed scan time at which noise_cov holds
    reference_weight_kg: float = 75.0                         # weight at which noise_cov holds
    scan_time_s_per_bed: float = 180.0                        # the simulated scan time per bed position
    weight_exponent: float = 0.5                              # sd ∝ weight**exponent (de Groot et al. 2013)
    source: str = ""                                          # where the numbers come from

    def __post_init__(self) -> None:
        object.__setattr__(self, "psf_fwhm_mm", _triple(self.psf_fwhm_mm, "psf_fwhm_mm"))
        object.__setattr__(self, "noise_fwhm_mm", _triple(self.noise_fwhm_mm, "noise_fwhm_mm"))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.source, str):
            raise ValueError(f"source: expected a string, got {self.source!r}")
        checks = {
            "noise_cov": (self.noise_cov, 0.0, 5.0, True),
            "reference_suv": (self.reference_suv, 0.0, 1000.0, False),
            "reference_time_s": (self.reference_time_s, 0.0, 86400.0, False),
            "reference_weight_kg": (self.reference_weight_kg, 0.0, 400.0, False),
            "scan_time_s_per_bed": (self.scan_time_s_per_bed, 0.0, 86400.0, False),
            "weight_exponent": (self.weight_exponent, 0.0, 3.0, True),
        }
        for name, (value, lo, hi, closed) in checks.items():
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            ok = ok and math.isfinite(float(value)) and (lo <= value if closed else lo < value) and value <= hi
            if not ok:
                bound = "[" if closed else "("
                raise ValueError(f"{name}: expected a number in {bound}{lo}, {hi}], got {value!r}")
            object.__setattr__(self, name, float(value))

    # -- derived --
    def noise_scale(self, weight_kg: float | None = None) -> float:
        """CoV at ``reference_suv`` for this scan time and ``weight_kg`` (``None``: the reference weight)."""
        w = self.reference_weight_kg if weight_kg is None else _check_weight(weight_kg)
        return (self.noise_cov * math.sqrt(self.reference_time_s / self.scan_time_s_per_bed)
                * (w / self.reference_weight_kg) ** self.weight_exponent)

    def with_scan_time(self, seconds_per_bed: float) -> ScannerModel:
        """The same scanner scanned for ``seconds_per_bed`` (noise sd ∝ 1/sqrt(time))."""
        return replace(self, scan_time_s_per_bed=seconds_per_bed)

    def with_postfilter(self, fwhm_mm: float | Sequence[float]) -> ScannerModel:
        """The same scanner with an extra Gaussian post-filter: FWHMs add in quadrature, for the PSF and
        the noise texture alike (the noise level is left as stated: give ``noise_cov`` after filtering)."""
        f = _triple(fwhm_mm, "fwhm_mm")
        return replace(self, psf_fwhm_mm=tuple(math.hypot(a, b) for a, b in zip(self.psf_fwhm_mm, f)),
                       noise_fwhm_mm=tuple(math.hypot(a, b) for a, b in zip(self.noise_fwhm_mm, f)))

    # -- JSON --
    def to_dict(self) -> dict:
        d = asdict(self)
        d["psf_fwhm_mm"] = list(self.psf_fwhm_mm)
        d["noise_fwhm_mm"] = list(self.noise_fwhm_mm)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ScannerModel:
        if not isinstance(d, dict):
            raise ValueError(f"scanner: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"scanner: unknown field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ScannerModel:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"scanner: not valid JSON: {err}") from None
        return cls.from_dict(d)

    # -- application --
    def apply(self, pet: np.ndarray, spacing: Sequence[float], weight_kg: float | None = None, *,
              rng: np.random.Generator | None = None, seed: int | None = None) -> np.ndarray:
        """``pet`` (SUV) as this scanner images it; see :func:`apply_scanner`."""
        return apply_scanner(pet, spacing, self, weight_kg, rng=rng, seed=seed)


def _check_weight(weight_kg: float) -> float:
    ok = isinstance(weight_kg, (int, float, np.integer, np.floating)) and not isinstance(weight_kg, bool)
    if not ok or not math.isfinite(float(weight_kg)) or not 2.0 <= float(weight_kg) <= 400.0:
        raise ValueError(f"weight_kg: expected a number in [2, 400] kg, got {weight_kg!r}")
    return float(weight_kg)


# --- presets -------------------------------------------------------------------------------

#: Matched to the real whole-body PET in ../shared/reference/real_pet (STS_001, GE Discovery ST);
#: the numbers and how they were measured: docs/realism.md.
DEFAULT_SCANNER = ScannerModel(
    name="discovery_st_sts001",
    psf_fwhm_mm=(8.0, 8.0, 8.0),
    noise_cov=0.15,
    noise_fwhm_mm=(6.0, 6.0, 4.0),
    source="matched to STS_001 (GE Discovery ST, TCIA Soft-tissue-Sarcoma, Vallières et al. 2015): "
           "PSF between the Discovery STE's NEMA 5.1-6.2 mm (Wilson et al., IEEE NSS 2005; the ST has "
           "coarser crystals) and the 9 mm the sharpest real tumour edges allow; noise CoV and texture "
           "from the real liver (scripts/realism_table.py)",
)

SCANNER_PRESETS: dict[str, ScannerModel] = {
    DEFAULT_SCANNER.name: DEFAULT_SCANNER,
    "biograph_mct": ScannerModel(
        name="biograph_mct",
        psf_fwhm_mm=(4.94, 4.94, 5.85),
        noise_cov=0.115,
        noise_fwhm_mm=(4.94, 4.94, 5.85),
        source="NEMA NU2 FWHM at 10 cm, radial/tangential mean and axial (Rausch et al., EJNMMI Phys 2015, "
               "as tabulated by Pan et al., JNM 2019); liver CoV 1/8.7 of a standard PMT PET/CT "
               "(Kim et al., Nucl Med Mol Imaging 2020); noise texture assumed as wide as the PSF",
    ),
    "biograph_vision": ScannerModel(
        name="biograph_vision",
        psf_fwhm_mm=(3.35, 3.35, 3.8),
        noise_cov=0.09,
        noise_fwhm_mm=(3.35, 3.35, 3.8),
        source="NEMA NU2-2018 FWHM of the Vision detectors, radial/tangential mean and axial (Prenosil et al., "
               "JNM 2022); liver CoV 1/11.1 of a digital PET/CT (Kim et al., Nucl Med Mol Imaging 2020); "
               "noise texture assumed as wide as the PSF",
    ),
    "vision_quadra": ScannerModel(
        name="vision_quadra",
        psf_fwhm_mm=(3.35, 3.35, 3.8),
        noise_cov=0.04,
        noise_fwhm_mm=(3.35, 3.35, 3.8),
        source="total-body (106 cm axial FOV) Biograph Vision Quadra: NEMA NU2-2018 FWHM (Prenosil et al., "
               "JNM 2022); noise = the digital CoV 0.09 / sqrt(5), its ~5x sensitivity over the Vision 600 "
               "(EJNMMI Phys 2022, doi:10.1186/s40658-022-00455-1); an estimate, not a patient measurement",
    ),
}


def get_scanner(name_or_model: str | ScannerModel | None) -> ScannerModel | None:
    """A preset by name, a model as is, or ``None`` for ``None`` / ``"off"`` (no scanner)."""
    if name_or_model is None or (isinstance(name_or_model, str) and name_or_model.lower() in ("off", "none")):
        return None
    if isinstance(name_or_model, ScannerModel):
        return name_or_model
    if isinstance(name_or_model, str):
        if name_or_model == "default":
            return DEFAULT_SCANNER
        if name_or_model not in SCANNER_PRESETS:
            raise ValueError(f"scanner: unknown preset {name_or_model!r}; choose one of "
                             f"{sorted(SCANNER_PRESETS)}, 'default' or 'off'")
        return SCANNER_PRESETS[name_or_model]
    raise ValueError(f"scanner: expected a preset name, a ScannerModel or None, got {type(name_or_model).__name__}")


# --- the operations --------------------------------------------------------------------------


def fwhm_to_sigma_voxels(fwhm_mm: float | Sequence[float], spacing: Sequence[float]) -> list[float]:
    """Gaussian sd in voxels of ``spacing`` (mm) for a FWHM in mm (one value or one per axis)."""
    f = _triple(fwhm_mm, "fwhm_mm")
    return [fw / FWHM_PER_SD / s for fw, s in zip(f, _check_spacing(spacing))]


def blur(pet: np.ndarray, spacing: Sequence[float], fwhm_mm: float | Sequence[float]) -> np.ndarray:
    """``pet`` convolved with a Gaussian PSF of ``fwhm_mm`` (sum preserved; edges continue the border value)."""
    arr = _check_volume(pet)
    sig = fwhm_to_sigma_voxels(fwhm_mm, spacing)
    if not any(s > 0 for s in sig):
        return arr.astype(np.float32, copy=True)
    return ndimage.gaussian_filter(arr.astype(np.float32), sig, mode="nearest", truncate=4.0)


def correlated_noise(shape: Sequence[int], spacing: Sequence[float], fwhm_mm: float | Sequence[float],
                     rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise coloured by a Gaussian kernel of ``fwhm_mm``.

    Filtered in the Fourier domain (periodic, so the field is stationary and its variance is
    exactly 1 per voxel, also for kernels narrower than a voxel); float32.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape: expected 3 positive sizes, got {shape}")
    sig = fwhm_to_sigma_voxels(fwhm_mm, spacing)
    white = rng.standard_normal(shape, dtype=np.float32)
    if not any(s > 0 for s in sig):
        return white
    spec = np.fft.rfftn(white)
    h = np.ones((), np.float64)
    for ax, (n, s) in enumerate(zip(shape, sig)):
        f = np.fft.rfftfreq(n) if ax == 2 else np.fft.fftfreq(n)
        g = np.exp(-2.0 * (math.pi * s * f) ** 2)
        h = h[..., None] * g if ax else g
    spec *= h
    field = np.fft.irfftn(spec, s=shape, axes=(0, 1, 2))
    # The variance of filtered unit white noise is the mean of |H|^2 over the full spectrum.
    power = 1.0
    for n, s in zip(shape, sig):
        g = np.exp(-2.0 * (math.pi * s * np.fft.fftfreq(n)) ** 2)
        power *= float(np.mean(g**2))
    return (field / math.sqrt(power)).astype(np.float32)


def noise_sd(activity: np.ndarray, model: ScannerModel, weight_kg: float | None = None) -> np.ndarray:
    """Noise sd per voxel for the (blurred) activity in SUV: ``scale * sqrt(reference_suv * activity)``."""
    a = np.maximum(np.asarray(activity, dtype=np.float32), 0.0)
    return (model.noise_scale(weight_kg) * math.sqrt(model.reference_suv)) * np.sqrt(a)


def apply_scanner(pet: np.ndarray, spacing: Sequence[float], model: ScannerModel | str | None = "default",
                  weight_kg: float | None = None, *, rng: np.random.Generator | None = None,
                  seed: int | None = None) -> np.ndarray:
    """``pet`` (SUV, (X, Y, Z), Z axial) as ``model`` images it: PSF blur, then correlated noise whose sd
    follows activity, scan time and weight, then clipped at 0.

    Args:
        pet: activity in SUV; not modified.
        spacing: voxel size in mm per axis.
        model: a :class:`ScannerModel`, a preset name, ``"default"``, or ``None`` / ``"off"`` (returns a copy).
        weight_kg: the patient's weight (``None``: the model's reference weight).
        rng / seed: the randomness (exactly one of them when the model adds noise); the same seed gives
            the same image.

    Returns:
        float32 array, same shape.
    """
    arr = _check_volume(pet)
    sp = _check_spacing(spacing)
    model = get_scanner(model)
    if weight_kg is not None:
        _check_weight(weight_kg)
    if model is None:
        return arr.astype(np.float32, copy=True)
    if model.noise_cov > 0:
        if (rng is None) == (seed is None):
            raise ValueError("rng/seed: give exactly one of rng (a numpy Generator) or seed (an int)")
        if seed is not None:
            rng = np.random.default_rng(check_seed(seed))
        elif not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    out = blur(arr, sp, model.psf_fwhm_mm)
    if model.noise_cov > 0:
        sd = noise_sd(out, model, weight_kg)
        out += sd * correlated_noise(out.shape, sp, model.noise_fwhm_mm, rng)
        np.maximum(out, 0.0, out=out)
    return out


def _check_volume(pet: np.ndarray) -> np.ndarray:
    arr = np.asarray(pet)
    if arr.ndim != 3:
        raise ValueError(f"pet: expected a 3D (X, Y, Z) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"pet: expected a numeric array, got dtype {arr.dtype}")
    return arr


# --- the phantom's imaging: version 1's PET, and CT ------------------------------------------

#: Phantom version 1's PET imaging as recorded in its cases' ``meta["scanner"]``.
PHANTOM_V1_IMAGING = {"name": "phantom_v1", "psf_fwhm_mm": [6.0, 6.0, 6.0],
                      "noise": "white, sd 0.15 sqrt(SUV) (weight / 75 kg)^0.5 at 4 mm voxels after the PSF, "
                               "added before the PSF"}


def psf_sigma_voxels(spacing: Sequence[float]) -> list[float]:
    """Phantom version 1's PET point-spread function (6 mm FWHM) as a Gaussian sd in voxels of ``spacing`` (mm)."""
    return [PHANTOM_V1_IMAGING["psf_fwhm_mm"][0] / 2.3548 / s for s in spacing]


def pet_noise_factor(weight_kg: float, spacing: Sequence[float]) -> float:
    """Noise sd per sqrt(SUV) that phantom version 1 adds before its PSF, so that after the PSF the noise
    has its level: Poisson-like, growing with body weight and with smaller voxels."""
    vox_ml = float(np.prod(spacing)) / 64.0  # relative to 4 mm voxels
    return 0.15 * (weight_kg / 75.0) ** 0.5 / math.sqrt(vox_ml) / _kernel_norm(psf_sigma_voxels(spacing))


def _kernel_norm(sigmas: Sequence[float]) -> float:
    """sd of unit white noise after :func:`scipy.ndimage.gaussian_filter` (truncate 3)."""
    total = 1.0
    for s in sigmas:
        if s <= 0:
            continue
        r = int(3.0 * s + 0.5)
        x = np.arange(-r, r + 1)
        k = np.exp(-0.5 * (x / s) ** 2)
        k /= k.sum()
        total *= float(np.sqrt((k**2).sum()))
    return total


def phantom_v1_pet(pet: np.ndarray, spacing: Sequence[float], weight_kg: float, rng: np.random.Generator) -> np.ndarray:
    """Phantom version 1's PET imaging: Poisson-like white noise (sd ∝ sqrt(activity), growing with
    weight), then a Gaussian PSF of 6 mm FWHM, clipped at 0."""
    sig_vox = psf_sigma_voxels(spacing)
    white = rng.standard_normal(pet.shape, dtype=np.float32)
    pet = pet + pet_noise_factor(weight_kg, spacing) * np.sqrt(pet) * white
    pet = ndimage.gaussian_filter(pet, sig_vox, truncate=3.0, mode="constant")
    np.maximum(pet, 0.0, out=pet)
    return pet


def ct_noise_sd(weight_kg: float) -> float:
    """CT quantum noise sd (HU), growing with body weight."""
    return 13.0 * (weight_kg / 75.0) ** 0.5


def phantom_ct(hu: np.ndarray, texture_sd: np.ndarray, spacing: Sequence[float], weight_kg: float,
               r_texture: np.random.Generator, r_noise: np.random.Generator) -> np.ndarray:
    """The phantom's CT from per-voxel tissue HU and texture sd: texture, a slight partial-volume blur
    (1.2 mm sd), white quantum noise of :func:`ct_noise_sd`, clipped to [-1024, 3071] HU."""
    w1 = r_texture.standard_normal(hu.shape, dtype=np.float32)
    ct = hu + texture_sd * w1
    ct = ndimage.gaussian_filter(ct, [max(1.2 / s, 0.3) for s in spacing], truncate=2.0, mode="nearest")
    ct += ct_noise_sd(weight_kg) * r_noise.standard_normal(hu.shape, dtype=np.float32)
    np.clip(ct, -1024.0, 3071.0, out=ct)
    return ct
