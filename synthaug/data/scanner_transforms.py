"""MONAI transforms that re-image PET as a scanner would: resolution (PSF) and count-dependent noise
drawn per item from ranges (:mod:`synthaug.phantom.scanner`), for robustness to scanners a cohort
lacks. Intensity only: labels and CT are never touched. Re-exported by :mod:`synthaug.data.transforms`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform
from monai.utils import TransformBackends

from ..core.seeds import MAX_SEED
from ..phantom.scanner import ScannerModel, apply_scanner, get_scanner
from .dataset import demographics_from_item


@dataclass(frozen=True)
class ScannerDraw:
    """One simulated acquisition: the scanner as drawn (``None``: left as acquired) and the noise seed."""

    model: ScannerModel | None
    seed: int = 0


def _check_range(value: Sequence[float] | None, name: str, lo: float) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (low, high), got {value!r}") from None
    if not (lo <= a <= b and np.isfinite(b)):
        raise ValueError(f"{name}: expected {lo} <= low <= high, got {value!r}")
    return a, b


class RandScanner(RandomizableTransform):
    """With probability ``prob``, image a channel-first PET in SUV as a scanner would (PSF blur, then
    count-dependent correlated noise; :mod:`synthaug.phantom.scanner`): resolution and noise
    randomisation for robustness, or another scanner simulated on real cases.

    Args:
        scanner: a :class:`~synthaug.phantom.scanner.ScannerModel` or preset name (``"default"``).
        prob: probability of applying it.
        psf_fwhm_mm_range: draw an isotropic PSF FWHM (mm) uniformly from (low, high); ``None``: the scanner's.
        noise_cov_range: draw the noise CoV uniformly from (low, high); ``None``: the scanner's.
        spacing: voxel size in mm; ``None`` reads it from the ``MetaTensor``'s affine.
        weight_kg: the patient's weight for the noise level (``None``: the scanner's reference weight).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, scanner: ScannerModel | str = "default", prob: float = 1.0,
                 psf_fwhm_mm_range: Sequence[float] | None = None, noise_cov_range: Sequence[float] | None = None,
                 spacing: Sequence[float] | None = None, weight_kg: float | None = None) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob={prob} must be in [0, 1]")
        RandomizableTransform.__init__(self, prob)
        model = get_scanner(scanner)
        if model is None:
            raise ValueError("scanner: give a scanner model or preset (use prob=0 to switch it off)")
        self.scanner = model
        self.psf_fwhm_mm_range = _check_range(psf_fwhm_mm_range, "psf_fwhm_mm_range", 0.0)
        self.noise_cov_range = _check_range(noise_cov_range, "noise_cov_range", 0.0)
        self.spacing, self.weight_kg = spacing, weight_kg
        self._draw = ScannerDraw(None)

    def randomize(self, data: object = None) -> None:
        """Decide whether to apply, then draw the PSF, the noise level and the noise seed (``self.R`` only)."""
        super().randomize(None)
        if not self._do_transform:
            self._draw = ScannerDraw(None)
            return
        model = self.scanner
        if self.psf_fwhm_mm_range is not None:
            model = replace(model, psf_fwhm_mm=float(self.R.uniform(*self.psf_fwhm_mm_range)))
        if self.noise_cov_range is not None:
            model = replace(model, noise_cov=float(self.R.uniform(*self.noise_cov_range)))
        self._draw = ScannerDraw(model, int(self.R.randint(MAX_SEED)))

    @property
    def draw(self) -> ScannerDraw:
        """The last draw."""
        return self._draw

    def scan(self, img: object, draw: ScannerDraw, weight_kg: float | None = None) -> object:
        """The deterministic core: every channel of ``img`` imaged by ``draw`` (channel ``c`` with seed
        ``[draw.seed, c]``); same type and metadata as ``img``."""
        if draw.model is None:
            return img
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if arr.ndim != 4:
            raise ValueError(f"img: expected a channel-first (C, X, Y, Z) PET, got shape {arr.shape}")
        spacing = self.spacing
        if spacing is None:
            if not isinstance(img, MetaTensor):
                raise ValueError("spacing: give it, or pass a MetaTensor whose affine holds it")
            spacing = [float(s) for s in np.asarray(img.pixdim)[:3]]
        weight = self.weight_kg if weight_kg is None else weight_kg
        out = np.stack([apply_scanner(arr[c], spacing, draw.model, weight, rng=np.random.default_rng([draw.seed, c]))
                        for c in range(arr.shape[0])])
        if isinstance(img, torch.Tensor):
            t = torch.as_tensor(out, dtype=img.dtype, device=img.device)
            return MetaTensor(t, meta=dict(img.meta)) if isinstance(img, MetaTensor) else t
        return out.astype(arr.dtype, copy=False)

    def __call__(self, img: object, randomize: bool = True) -> object:
        if randomize:
            self.randomize()
        return self.scan(img, self._draw)


class RandScannerd(Randomizable, MapTransform):
    """Dictionary version of :class:`RandScanner`: one draw per dictionary, applied to every key in
    ``keys`` (PET images only: labels and CT are never passed through it). The weight comes from the
    item's demographics when ``demographics_key`` holds them.

    Args:
        keys: the PET keys.
        demographics_key: where the case's demographics are (``None``: the scanner's reference weight).
        allow_missing_keys: don't raise if a key is missing.
        scanner, prob, psf_fwhm_mm_range, noise_cov_range, spacing: as for :class:`RandScanner`.
    """

    backend = RandScanner.backend

    def __init__(self, keys: KeysCollection, scanner: ScannerModel | str = "default", prob: float = 1.0,
                 psf_fwhm_mm_range: Sequence[float] | None = None, noise_cov_range: Sequence[float] | None = None,
                 spacing: Sequence[float] | None = None, demographics_key: str | None = "demographics",
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.scanner = RandScanner(scanner, prob, psf_fwhm_mm_range, noise_cov_range, spacing)
        self.demographics_key = demographics_key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandScannerd:
        super().set_random_state(seed, state)
        self.scanner.set_random_state(seed, state)
        return self

    def randomize(self, data: object = None) -> None:
        """One draw for the whole dictionary (the inner transform's ``R``)."""
        self.scanner.randomize()

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize()
        key = self.demographics_key
        demo = demographics_from_item(d[key]) if key is not None and key in d else None
        weight = demo.weight_kg if demo is not None else None
        for key in self.key_iterator(d):
            d[key] = self.scanner.scan(d[key], self.scanner.draw, weight)
        return d


RandScannerD = RandScannerDict = RandScannerd
