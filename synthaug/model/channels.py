"""The generator's channels: invertible intensity transforms and label channels.

A case is encoded as ``NUM_CHANNELS`` channels, all of order one:

===========  ===============================================================
channel      encoding
===========  ===============================================================
0  CT        piecewise-linear in HU: -1000..-200 HU -> -1..-0.5 (lung, air),
             -200..300 HU -> -0.5..0.5 (soft tissue: 100 HU = 0.2, so liver
             and spleen stay apart), 300..3000 HU -> 0.5..1.5 (bone); linear
             beyond both ends, so nothing is clipped and the map is invertible.
1  PET       ``2 * log1p(SUV) / log1p(30) - 1``: SUV 0 -> -1, SUV 2 -> -0.35,
             SUV 30 -> 1, SUV 100 -> 1.71: brain, bladder and lesions are not
             clipped, and the low-uptake range keeps its resolution.
2..13        one channel per organ class (synthaug organ map), +1 inside / -1 outside;
             decoded by argmax.
14           lesion mask, +1 / -1; decoded by the sign.
===========  ===============================================================

Each stage returns its label channels *hardened* (:func:`harden_labels`): +1 / -1 as
decided by argmax and sign after the stage's calibrated per-class offsets
(``StageConfig.label_bias``, :mod:`synthaug.sampling.calibration`), which is how the next stage
saw labels in training and what :func:`decode` then reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.labels import NUM_ORGAN_CLASSES

CT_CHANNEL = 0
PET_CHANNEL = 1
ORGAN_CHANNELS = slice(2, 2 + NUM_ORGAN_CLASSES)
LESION_CHANNEL = 2 + NUM_ORGAN_CLASSES
NUM_CHANNELS = LESION_CHANNEL + 1
#: Entries of a label bias: one offset per organ channel, then the lesion channel's.
LABEL_BIAS_SIZE = NUM_ORGAN_CLASSES + 1
CHANNEL_NAMES = ("ct", "pet", *(f"organ_{i}" for i in range(NUM_ORGAN_CLASSES)), "lesion")

# (HU, encoded) knots of the piecewise-linear CT map; linear extrapolation outside.
_CT_KNOTS_HU = np.array([-1000.0, -200.0, 300.0, 3000.0])
_CT_KNOTS_Y = np.array([-1.0, -0.5, 0.5, 1.5])
_PET_SCALE = float(np.log1p(30.0))

#: A description stored in checkpoints so that weights are never decoded with another map.
ENCODING = {
    "version": 1,
    "ct": {"knots_hu": _CT_KNOTS_HU.tolist(), "knots_y": _CT_KNOTS_Y.tolist()},
    "pet": {"type": "log1p", "suv_at_plus_one": 30.0},
    "organs": {"type": "one_hot_pm1", "classes": NUM_ORGAN_CLASSES},
    "lesions": {"type": "sign_pm1"},
    "channels": list(CHANNEL_NAMES),
}


def _piecewise(x, xk, yk, lib):
    """Piecewise-linear through knots (xk, yk), extended linearly beyond both ends."""
    out = lib.zeros_like(x) if lib is np else torch.zeros_like(x)
    # Segment index for every element: 0..len(xk)-2.
    idx = (x[..., None] >= (xk[1:-1] if lib is np else torch.as_tensor(xk[1:-1], dtype=x.dtype, device=x.device))).sum(-1)
    for k in range(len(xk) - 1):
        slope = (yk[k + 1] - yk[k]) / (xk[k + 1] - xk[k])
        seg = yk[k] + slope * (x - xk[k])
        out = lib.where(idx == k, seg, out)
    return out


def ct_to_channel(hu):
    """HU -> encoded CT (numpy or torch)."""
    lib = np if isinstance(hu, np.ndarray) else torch
    return _piecewise(hu, _CT_KNOTS_HU, _CT_KNOTS_Y, lib)


def channel_to_ct(y):
    """Encoded CT -> HU (inverse of :func:`ct_to_channel`)."""
    lib = np if isinstance(y, np.ndarray) else torch
    return _piecewise(y, _CT_KNOTS_Y, _CT_KNOTS_HU, lib)


def pet_to_channel(suv):
    """SUV -> encoded PET (negative SUV, from reconstruction noise, is kept invertible)."""
    if isinstance(suv, np.ndarray):
        return 2 * np.sign(suv) * np.log1p(np.abs(suv)) / _PET_SCALE - 1
    return 2 * torch.sign(suv) * torch.log1p(suv.abs()) / _PET_SCALE - 1


def channel_to_pet(y):
    """Encoded PET -> SUV (inverse of :func:`pet_to_channel`)."""
    z = (y + 1) * _PET_SCALE / 2
    if isinstance(y, np.ndarray):
        return np.sign(z) * np.expm1(np.abs(z))
    return torch.sign(z) * torch.expm1(z.abs())


def encode(ct: np.ndarray, pet: np.ndarray, organs: np.ndarray | None, lesions: np.ndarray | None) -> np.ndarray:
    """Arrays of one case (X, Y, Z) -> encoded channels (NUM_CHANNELS, X, Y, Z) float32.

    Unknown organs (``None``) encode as all organ channels 0 ("no information");
    unknown lesions likewise.
    """
    out = np.empty((NUM_CHANNELS, *ct.shape), dtype=np.float32)
    out[CT_CHANNEL] = ct_to_channel(ct.astype(np.float32))
    out[PET_CHANNEL] = pet_to_channel(pet.astype(np.float32))
    if organs is None:
        out[ORGAN_CHANNELS] = 0.0
    else:
        organs = np.asarray(organs)
        for c in range(NUM_ORGAN_CLASSES):
            out[2 + c] = np.where(organs == c, 1.0, -1.0)
    out[LESION_CHANNEL] = 0.0 if lesions is None else np.where(np.asarray(lesions) > 0, 1.0, -1.0)
    return out


def decode(x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Encoded channels (NUM_CHANNELS, X, Y, Z) -> ``{"ct", "pet", "organs", "lesions"}`` arrays."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.shape[0] != NUM_CHANNELS:
        raise ValueError(f"expected {NUM_CHANNELS} channels, got {x.shape[0]}")
    # Generated values far outside the data range (e.g. from too few sampler steps) are clipped
    # before the inverse transforms (-4200..9750 HU, SUV up to ~5400), so decoding never overflows.
    ct_y = np.clip(x[CT_CHANNEL].astype(np.float64), -3.0, 4.0)
    pet_y = np.clip(x[PET_CHANNEL].astype(np.float64), -3.0, 4.0)
    return {
        "ct": channel_to_ct(ct_y).astype(np.float32),
        "pet": channel_to_pet(pet_y).astype(np.float32),
        "organs": np.argmax(x[ORGAN_CHANNELS], axis=0).astype(np.uint8),
        "lesions": (x[LESION_CHANNEL] > 0).astype(np.uint8),
    }


def check_label_bias(bias: Sequence[float]) -> tuple[float, ...]:
    """``()`` (no offsets) or :data:`LABEL_BIAS_SIZE` finite offsets, as a tuple; else ``ValueError``."""
    try:
        values = tuple(float(b) for b in bias)
    except (TypeError, ValueError):
        raise ValueError(f"label_bias must be a list of numbers, got {bias!r}") from None
    if values and (len(values) != LABEL_BIAS_SIZE or not np.all(np.isfinite(values))):
        raise ValueError(f"label_bias needs {LABEL_BIAS_SIZE} finite offsets ({NUM_ORGAN_CLASSES} organ channels, "
                         f"then the lesion channel) or none; got {len(values)}: {list(values)[:4]}...")
    return values


def harden_labels(x: torch.Tensor, label_bias: Sequence[float] = ()) -> torch.Tensor:
    """(B, NUM_CHANNELS, ...) channels with the label channels set to exactly +1 / -1: organs by
    argmax, the lesion channel by its sign, each after adding ``label_bias`` (CT, PET unchanged)."""
    bias = check_label_bias(label_bias) or (0.0,) * LABEL_BIAS_SIZE
    b = torch.as_tensor(bias, dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.ndim - 2)))
    organs = (x[:, ORGAN_CHANNELS] + b[:, :NUM_ORGAN_CLASSES]).argmax(1, keepdim=True)
    out = x.clone()
    classes = torch.arange(NUM_ORGAN_CLASSES, device=x.device).view(1, -1, *([1] * (x.ndim - 2)))
    out[:, ORGAN_CHANNELS] = torch.where(organs == classes, 1.0, -1.0).to(x.dtype)
    out[:, LESION_CHANNEL] = torch.where(x[:, LESION_CHANNEL] + b[:, NUM_ORGAN_CLASSES] > 0, 1.0, -1.0).to(x.dtype)
    return out


#: Largest CT shift (HU) and the range of PET gains an intensity calibration may apply.
MAX_CT_SHIFT = 150.0
PET_GAIN_RANGE = (2 / 3, 3 / 2)


def check_intensity_calibration(ct_shift: Sequence[float], pet_gain: Sequence[float]) -> tuple[tuple, tuple]:
    """``ct_shift`` (HU) and ``pet_gain`` per organ class, each ``()`` (none) or
    NUM_ORGAN_CLASSES values within :data:`MAX_CT_SHIFT` / :data:`PET_GAIN_RANGE`, as tuples."""
    out = []
    for name, values, (lo, hi) in (("ct_shift", ct_shift, (-MAX_CT_SHIFT, MAX_CT_SHIFT)),
                                   ("pet_gain", pet_gain, PET_GAIN_RANGE)):
        try:
            v = tuple(float(b) for b in values)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a list of numbers, got {values!r}") from None
        if v and (len(v) != NUM_ORGAN_CLASSES or not all(lo - 1e-9 <= b <= hi + 1e-9 for b in v)):
            raise ValueError(f"{name} needs {NUM_ORGAN_CLASSES} values (one per organ class) within "
                             f"[{lo:.4g}, {hi:.4g}] or none; got {len(v)}: {list(v)[:4]}...")
        out.append(v)
    return out[0], out[1]


def calibrate_intensities(x: torch.Tensor, ct_shift: Sequence[float] = (), pet_gain: Sequence[float] = (), *,
                          inplace: bool = False) -> torch.Tensor:
    """(B, NUM_CHANNELS, ...) channels with hardened labels, with every voxel's HU shifted by
    ``ct_shift`` and its SUV multiplied by ``pet_gain`` of its organ class (identity where empty;
    ``inplace``: into ``x``, which full-resolution outputs need for memory)."""
    ct_shift, pet_gain = check_intensity_calibration(ct_shift, pet_gain)
    if not ct_shift and not pet_gain:
        return x
    organs = x[:, ORGAN_CHANNELS].argmax(1)
    out = x if inplace else x.clone()
    if ct_shift:
        shift = torch.as_tensor(ct_shift, dtype=x.dtype, device=x.device)[organs]
        out[:, CT_CHANNEL] = ct_to_channel(channel_to_ct(x[:, CT_CHANNEL]) + shift)
    if pet_gain:
        gain = torch.as_tensor(pet_gain, dtype=x.dtype, device=x.device)[organs]
        out[:, PET_CHANNEL] = pet_to_channel(channel_to_pet(x[:, PET_CHANNEL]) * gain)
    return out


#: HU a calibrated organ level (``ct_level``) may take: the calibration's median histograms' range.
CT_LEVEL_RANGE = (-1024.0, 3071.0)


def check_level_spread(ct_level: Sequence[float], ct_level_scale: Sequence[float]) -> tuple[tuple, tuple]:
    """``ct_level`` (HU, the centre each organ class's per-case median HU is pulled towards) and
    ``ct_level_scale`` (in [0, 1], what is kept of a case's deviation from it), both ``()`` or
    NUM_ORGAN_CLASSES values, as tuples."""
    out = []
    for name, values in (("ct_level", ct_level), ("ct_level_scale", ct_level_scale)):
        try:
            out.append(tuple(float(v) for v in values))
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a list of numbers, got {values!r}") from None
    level, scale = out
    if len(level) != len(scale) or len(level) not in (0, NUM_ORGAN_CLASSES):
        raise ValueError(f"ct_level and ct_level_scale need {NUM_ORGAN_CLASSES} values each (one per organ class) "
                         f"or none; got {len(level)} and {len(scale)}")
    lo, hi = CT_LEVEL_RANGE
    if not all(np.isfinite(v) and lo <= v <= hi for v in level):
        raise ValueError(f"ct_level must be finite HU within [{lo:.0f}, {hi:.0f}], got {list(level)[:4]}...")
    if not all(0 <= s <= 1 for s in scale):
        raise ValueError(f"ct_level_scale must be within [0, 1], got {list(scale)[:4]}...")
    return level, scale


def spread_organ_levels(x: torch.Tensor, ct_level: Sequence[float] = (), ct_level_scale: Sequence[float] = (), *,
                        inplace: bool = False) -> torch.Tensor:
    """(B, NUM_CHANNELS, ...) channels with hardened labels, each case's organ classes shifted
    as a whole so that their median HU ``m`` becomes ``level + scale * (m - level)``: the
    spread of an organ's HU from case to case narrowed to the training cohort's, its texture
    and borders kept (identity where empty or where the scale is 1)."""
    level, scale = check_level_spread(ct_level, ct_level_scale)
    if not level or all(s == 1 for s in scale):
        return x
    out = x if inplace else x.clone()
    organs = x[:, ORGAN_CHANNELS].argmax(1)
    for b in range(x.shape[0]):
        hu = channel_to_ct(x[b, CT_CHANNEL])
        shift = torch.zeros_like(hu)
        for c, (centre, keep) in enumerate(zip(level, scale)):
            mask = organs[b] == c
            if keep == 1 or not bool(mask.any()):
                continue
            shift[mask] = (1 - keep) * (centre - float(hu[mask].median()))
        out[b, CT_CHANNEL] = ct_to_channel(hu + shift)
    return out


@dataclass(frozen=True)
class Calibration:
    """What :mod:`synthaug.sampling.calibration` fitted for one stage, stored beside its weights.

    :meth:`apply` turns the stage's raw output into what it hands on, in this order: the labels
    decided with ``label_bias`` (:func:`harden_labels`), CT shifted and PET scaled per organ class
    (``ct_shift``, ``pet_gain``; :func:`calibrate_intensities`), then each organ's per-case HU spread
    narrowed towards ``ct_level`` (``ct_level_scale``; :func:`spread_organ_levels`). An empty table
    (``()``) leaves its step out.
    """

    label_bias: tuple[float, ...] = ()       # one per organ channel, then the lesion channel's
    ct_shift: tuple[float, ...] = ()         # HU added per organ class
    pet_gain: tuple[float, ...] = ()         # SUV factor per organ class
    ct_level: tuple[float, ...] = ()         # HU each organ's per-case median is pulled towards
    ct_level_scale: tuple[float, ...] = ()   # share of a case's deviation from ct_level that is kept

    #: The JSON keys (a stage config stores them flat, beside the architecture).
    KEYS = ("label_bias", "ct_shift", "pet_gain", "ct_level", "ct_level_scale")

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_bias", check_label_bias(self.label_bias))
        ct_shift, pet_gain = check_intensity_calibration(self.ct_shift, self.pet_gain)
        object.__setattr__(self, "ct_shift", ct_shift)
        object.__setattr__(self, "pet_gain", pet_gain)
        ct_level, ct_level_scale = check_level_spread(self.ct_level, self.ct_level_scale)
        object.__setattr__(self, "ct_level", ct_level)
        object.__setattr__(self, "ct_level_scale", ct_level_scale)

    @property
    def fitted(self) -> bool:
        """Whether anything was fitted (else :meth:`apply` only decides the labels by argmax)."""
        return any(getattr(self, k) for k in self.KEYS)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's raw output (B, C, X, Y, Z) as it hands it on (in place where it can)."""
        x = calibrate_intensities(harden_labels(x, self.label_bias), self.ct_shift, self.pet_gain, inplace=True)
        return spread_organ_levels(x, self.ct_level, self.ct_level_scale, inplace=True)

    def to_dict(self) -> dict:
        return {k: list(getattr(self, k)) for k in self.KEYS}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """From a stage config's JSON (keys absent: nothing fitted)."""
        return cls(**{k: tuple(d.get(k, ())) for k in cls.KEYS})
